"""The durable outbox: the only road from the agent to the uplink (SQLite, WAL, one file).

Strategy:
- Every event is committed before it is published and deleted only after the broker acknowledges
  it with an MQTT v5 PUBACK success code. Alarms are committed with ``synchronous=FULL`` (fsync on
  commit: an acknowledged `put_alarm` survives a power cut); heartbeats with ``synchronous=NORMAL``
  (WAL: survives a process crash, may be lost on a power cut, which costs nothing because a newer
  heartbeat follows). The pragma is switched per transaction; a FULL commit fsyncs the whole WAL,
  so a cheaper earlier commit never weakens a later alarm. Deletions use NORMAL: losing one on a
  power cut means a duplicate delivery, which receivers drop by id.
- `take()` drains alarms first (HIGH, MEDIUM, LOW, then oldest first) and heartbeats last, and marks
  the rows in flight; rows found in flight when the file is opened (a crash) go back to pending.
  Heartbeats past their expiry are dropped instead of sent.
- A broker refusal (reason code >= 0x80) sets the row aside as "refused": kept, counted, never
  retried automatically (`retry_refused` is the operator's action) and never deleted, so a
  misconfigured ACL cannot silently eat alarms (a refused heartbeat can still be evicted for room).
- The outbox is bounded in payload bytes (`max_bytes`, counting topic + payload + a fixed row
  overhead). When a put would pass the bound, the oldest heartbeats are evicted first. Alarms are
  never evicted: if only alarms remain, a new heartbeat is refused and a new alarm is still stored
  past the bound. Each put returns a `PutResult` saying when the fill level crosses `warn_fraction`,
  so the caller raises the technical alarm "outbox_filling" once per crossing.
- Threading: one thread (the asyncio loop) is meant to use an Outbox; paho's callbacks are bridged to
  that thread by the uplink. A lock still guards the connection so misuse cannot corrupt it. Calls
  block for one SQLite commit (an fsync for alarms), acceptable at alarm rates.
"""

from __future__ import annotations

import enum
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from agent.config.schema import OutboxConfig
from agent.errors import AgentError
from agent.events import AlarmEvent, AlarmKind, Heartbeat
from agent.ids import uuid7

SCHEMA_VERSION = 1
ROW_OVERHEAD = 64  # bytes counted per row on top of topic + payload: ids, ranks, times
HEARTBEAT_RANK = 3  # after every alarm priority (0 HIGH .. 2 LOW)


class Kind(enum.StrEnum):
    ALARM = "alarm"  # physiological alarm events
    TECHNICAL = "technical"  # technical alarm events (about the monitoring itself)
    HEARTBEAT = "heartbeat"


class State(enum.StrEnum):
    PENDING = "pending"
    INFLIGHT = "inflight"
    REFUSED = "refused"


class OutboxError(AgentError):
    """The outbox file cannot be opened or used; `path` names it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"outbox {path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One message waiting for (or refused by) the broker. `id` survives restarts and replays."""

    id: str
    topic: str
    payload: bytes
    kind: Kind
    rank: int  # drain order: 0..2 alarm priorities, 3 heartbeats
    created: float  # Unix seconds of the put
    expiry_s: int | None = None  # MQTT MessageExpiryInterval from `created`; None = never expires
    attempts: int = 0
    state: State = State.PENDING
    reason_code: int | None = None  # the refusing PUBACK reason code

    @property
    def size(self) -> int:
        return len(self.topic.encode()) + len(self.payload) + ROW_OVERHEAD

    def remaining_expiry(self, now: float) -> int | None:
        """Whole seconds left before the message is worthless (>= 1 while alive), None if it never expires."""
        if self.expiry_s is None:
            return None
        return max(1, int(self.created + self.expiry_s - now))


@dataclass(frozen=True, slots=True)
class PutResult:
    stored: bool  # False only for a heartbeat refused because alarms fill the outbox
    evicted: int  # heartbeats evicted to make room
    fill: float  # fill fraction after the put (may exceed 1.0: alarms are kept past the bound)
    warn: bool  # fill >= warn_fraction now
    crossed_warn: bool  # this put moved the fill from below to at/above warn_fraction


@dataclass(frozen=True, slots=True)
class OutboxStats:
    depth: int  # pending + in flight
    refused: int
    size_bytes: int
    evicted: int  # heartbeats evicted since open
    expired: int  # heartbeats dropped past their expiry since open
    rejected: int  # heartbeats not stored because only alarms filled the outbox, since open


_COLUMNS = "id, topic, payload, kind, rank, created, expiry_s, attempts, state, reason_code"
_DDL = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('alarm', 'technical', 'heartbeat')),
    rank INTEGER NOT NULL,
    created REAL NOT NULL,
    expiry_s INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'inflight', 'refused')),
    reason_code INTEGER,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_drain ON outbox (state, rank, created, seq);
CREATE INDEX IF NOT EXISTS outbox_evict ON outbox (kind, seq);
"""


class Outbox:
    """A bounded, durable, prioritised queue of messages for the broker."""

    def __init__(self, config: OutboxConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.path = config.path
        self._clock = clock
        self._lock = threading.Lock()
        self._sync = ""
        self._evicted = self._expired = self._rejected = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._set_sync("FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise OutboxError(self.path, f"schema version {version}, this agent knows {SCHEMA_VERSION}")
            self._db.executescript(_DDL)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            # A crash leaves rows in flight with nobody waiting for their PUBACK: send them again.
            self._db.execute("UPDATE outbox SET state='pending' WHERE state='inflight'")
            self._size = int(self._db.execute("SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()[0])
        except sqlite3.Error as exc:
            raise OutboxError(self.path, str(exc)) from exc
        self._warned = self.fill_fraction() >= config.warn_fraction

    # -- writing ----------------------------------------------------------------------------------

    def put(self, item: OutboxItem) -> PutResult:
        """Commit `item` durably (idempotent by id), making room by evicting old heartbeats."""
        with self._lock:
            evicted = 0
            stored = True
            size_before = self._size
            self._begin("NORMAL" if item.kind is Kind.HEARTBEAT else "FULL")
            try:
                if self._size + item.size > self.config.max_bytes:
                    evicted = self._evict_heartbeats(self._size + item.size - self.config.max_bytes)
                if item.kind is Kind.HEARTBEAT and self._size + item.size > self.config.max_bytes:
                    stored = False  # only alarms left: they win
                    self._rejected += 1
                if stored:
                    self._insert(item)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._size = size_before
                raise
            fill = self._fill()
            warn = fill >= self.config.warn_fraction
            crossed = warn and not self._warned
            self._warned = warn
            return PutResult(stored, evicted, fill, warn, crossed)

    def put_alarm(self, event: AlarmEvent, topic: str) -> PutResult:
        """Queue one alarm event; its outbox id is ``{episode id}:{seq}``, unique per transition."""
        kind = Kind.TECHNICAL if event.kind is AlarmKind.TECHNICAL else Kind.ALARM
        item = OutboxItem(
            f"{event.id}:{event.seq}", topic, event.to_json(), kind, event.priority.rank, self._clock()
        )
        return self.put(item)

    def put_heartbeat(self, hb: Heartbeat, topic: str, expiry_s: int) -> PutResult:
        item = OutboxItem(
            str(uuid7()), topic, hb.to_json(), Kind.HEARTBEAT, HEARTBEAT_RANK, self._clock(), expiry_s
        )
        return self.put(item)

    def take(self, limit: int) -> list[OutboxItem]:
        """Up to `limit` pending items in drain order, now marked in flight (attempts counted)."""
        if limit <= 0:
            return []
        with self._lock:
            self._drop_expired()
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE state='pending' ORDER BY rank, created, seq LIMIT ?",
                (limit,),
            ).fetchall()
            if not rows:
                return []
            items = [_item(r) for r in rows]
            self._begin("NORMAL")  # a lost state change only means one more attempt
            self._db.executemany(
                "UPDATE outbox SET state='inflight', attempts=attempts+1 WHERE id=?", [(i.id,) for i in items]
            )
            self._db.execute("COMMIT")
            return [replace(i, state=State.INFLIGHT, attempts=i.attempts + 1) for i in items]

    def delivered(self, item_id: str) -> None:
        """The broker acknowledged the item with a success code: forget it."""
        with self._lock:
            self._set_sync("NORMAL")
            row = self._db.execute("DELETE FROM outbox WHERE id=? RETURNING size", (item_id,)).fetchone()
            if row is not None:
                self._size -= int(row[0])

    def refused(self, item_id: str, reason_code: int) -> None:
        """The broker refused the item (PUBACK reason >= 0x80): keep it aside, never delete it."""
        with self._lock:
            self._set_sync("FULL")
            self._db.execute(
                "UPDATE outbox SET state='refused', reason_code=? WHERE id=?", (reason_code, item_id)
            )

    def requeue(self, item_id: str) -> None:
        """Put an in-flight item back to pending (its publish could not be handed to the client)."""
        with self._lock:
            self._db.execute("UPDATE outbox SET state='pending' WHERE id=? AND state='inflight'", (item_id,))

    def requeue_inflight(self) -> int:
        """Every in-flight item back to pending, for a new MQTT client that holds none of them."""
        with self._lock:
            return self._db.execute("UPDATE outbox SET state='pending' WHERE state='inflight'").rowcount

    def retry_refused(self) -> int:
        """Operator action after fixing the broker side: refused items go back to pending."""
        with self._lock:
            return self._db.execute(
                "UPDATE outbox SET state='pending', reason_code=NULL WHERE state='refused'"
            ).rowcount

    # -- reading ----------------------------------------------------------------------------------

    def get(self, item_id: str) -> OutboxItem | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM outbox WHERE id=?", (item_id,)).fetchone()
        return None if row is None else _item(row)

    def refused_items(self) -> list[OutboxItem]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE state='refused' ORDER BY seq"
            ).fetchall()
        return [_item(r) for r in rows]

    def depth(self) -> int:
        """Items not yet delivered (pending or in flight); refused items are counted apart."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox WHERE state!='refused'").fetchone()[0])

    def refused_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox WHERE state='refused'").fetchone()[0])

    def oldest_age(self, now: float | None = None) -> float | None:
        """Age in seconds of the oldest undelivered (not refused) item, None when there is none."""
        with self._lock:
            oldest = self._db.execute("SELECT MIN(created) FROM outbox WHERE state!='refused'").fetchone()[0]
        if oldest is None:
            return None
        return max(0.0, (self._clock() if now is None else now) - float(oldest))

    def size_bytes(self) -> int:
        """Bytes counted against `max_bytes` (topic + payload + row overhead), refused rows included."""
        return self._size

    def fill_fraction(self) -> float:
        return self._fill()

    def stats(self) -> OutboxStats:
        return OutboxStats(
            self.depth(), self.refused_count(), self._size, self._evicted, self._expired, self._rejected
        )

    def integrity_check(self) -> str:
        """SQLite's verdict on the file: "ok" when sound."""
        with self._lock:
            return "; ".join(str(r[0]) for r in self._db.execute("PRAGMA integrity_check").fetchall())

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals (lock held) --------------------------------------------------------------------

    def _fill(self) -> float:
        return self._size / self.config.max_bytes if self.config.max_bytes > 0 else 1.0

    def _insert(self, item: OutboxItem) -> None:
        cur = self._db.execute(
            f"INSERT OR IGNORE INTO outbox ({_COLUMNS}, size) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                item.id,
                item.topic,
                item.payload,
                item.kind.value,
                item.rank,
                item.created,
                item.expiry_s,
                item.attempts,
                item.state.value,
                item.reason_code,
                item.size,
            ),
        )
        if cur.rowcount:
            self._size += item.size

    def _begin(self, sync: str) -> None:
        self._set_sync(sync)  # outside the transaction: SQLite ignores it inside one
        self._db.execute("BEGIN IMMEDIATE")

    def _set_sync(self, mode: str) -> None:
        if mode != self._sync:
            self._db.execute(f"PRAGMA synchronous={mode}")
            self._sync = mode

    def _evict_heartbeats(self, need: int) -> int:
        """Delete the oldest not-in-flight heartbeats until `need` bytes are freed (or none are left)."""
        freed = count = 0
        rows = self._db.execute(
            "SELECT id, size FROM outbox WHERE kind='heartbeat' AND state!='inflight' ORDER BY seq"
        )
        victims: list[str] = []
        for item_id, size in rows:
            if freed >= need:
                break
            victims.append(item_id)
            freed += int(size)
            count += 1
        self._db.executemany("DELETE FROM outbox WHERE id=?", [(v,) for v in victims])
        self._size -= freed
        self._evicted += count
        return count

    def _drop_expired(self) -> None:
        self._set_sync("NORMAL")
        rows = self._db.execute(
            "DELETE FROM outbox WHERE kind='heartbeat' AND state='pending' AND expiry_s IS NOT NULL "
            "AND created + expiry_s <= ? RETURNING size",
            (self._clock(),),
        ).fetchall()
        self._size -= sum(int(r[0]) for r in rows)
        self._expired += len(rows)


def _item(row: tuple[object, ...]) -> OutboxItem:
    item_id, topic, payload, kind, rank, created, expiry_s, attempts, state, reason_code = row
    return OutboxItem(
        id=str(item_id),
        topic=str(topic),
        payload=bytes(payload),  # type: ignore[call-overload]
        kind=Kind(str(kind)),
        rank=int(rank),  # type: ignore[call-overload]
        created=float(created),  # type: ignore[arg-type]
        expiry_s=None if expiry_s is None else int(expiry_s),  # type: ignore[call-overload]
        attempts=int(attempts),  # type: ignore[call-overload]
        state=State(str(state)),
        reason_code=None if reason_code is None else int(reason_code),  # type: ignore[call-overload]
    )
