"""The durable outbox: the only road from the agent to the uplink (SQLite, WAL, one file).

Strategy:
- Every event is committed before it is published and deleted only after the broker acknowledges
  it with an MQTT v5 PUBACK success code. Alarms are committed with ``synchronous=FULL`` (fsync on
  commit: an acknowledged `put_alarm` survives a power cut); heartbeats with ``synchronous=NORMAL``
  (WAL: survives a process crash, may be lost on a power cut, which costs nothing because a newer
  heartbeat follows). The pragma is switched per transaction; a FULL commit fsyncs the whole WAL,
  so a cheaper earlier commit never weakens a later alarm. Deletions use NORMAL: losing one on a
  power cut means a duplicate delivery, which receivers drop by id.
- `take()` drains alarms first (HIGH, MEDIUM, LOW, then oldest first) and heartbeats last. The rows
  it hands out are in flight in memory only, never taken twice, never evicted or expired: writing the
  state cost a commit per row and nothing needs it, since every row is pending again when the file is
  opened (after a crash). The next put marks the rows still in flight in the file, for whoever looks
  at it; on a working link the PUBACK comes first, so that is rare.
  An alarm's `created` is never earlier than that of an alarm put before it, so a step back of the
  wall clock cannot send an episode's END before its START.
  Heartbeats past their expiry are dropped instead of sent.
- A broker refusal (reason code >= 0x80) sets the row aside as "refused": kept, counted, never
  retried automatically (`retry_refused` is the operator's action) and never deleted, so a
  misconfigured ACL cannot silently eat alarms (a refused heartbeat can still be evicted for room).
- The outbox is bounded in payload bytes (`max_bytes`, counting topic + payload + a fixed row
  overhead). When a put would pass the bound, the oldest heartbeats are evicted first. Alarms are
  never evicted: if only alarms remain, a new heartbeat is refused and a new alarm is still stored
  past the bound. Each put returns a `PutResult` saying when the fill level crosses `warn_fraction`,
  so the caller raises the technical alarm "outbox_filling" once per crossing.
- `put_many` commits a batch (one turn's alarms) in one transaction: one fsync for the lot, and a
  crash leaves all of them or none. `put` is `put_many` of one.
- Encryption at rest (optional, `encryption_key_file`): payloads are sealed with AES-256-GCM
  (`agent.sealing`), bound to their row's id and topic. `take()` opens them; a row that fails to open
  (wrong key, tampered, sealed but no key configured) is never sent and never deleted: it is set aside
  as "undecryptable", counted, and an error naming the outbox file is logged. Reopening the outbox
  puts such rows back to pending, so a restart with the right key delivers them. Plaintext rows found
  when the outbox is opened with a key (written before encryption was switched on) are sealed in
  place, with ``secure_delete`` on and the WAL truncated, so no plaintext copy stays in the files.
- Damaged rows: SQLite does not check cell contents, so a bad sector can leave a row whose text is not
  UTF-8 (or a cell of the wrong type) in a file that passes ``integrity_check``. Text is read leniently
  (bad bytes kept as lone surrogates) and `take()` sets such a row aside exactly like an undecryptable
  one (same state, same count, same alarm), naming it by its ``seq``; every other row is still sent in
  order. A note that is not UTF-8 is left out, like one that does not open.
- Writes to the disk (an SD card wears out): the commits per event are the put and the delete (see
  `DELETE_AT` for deleting in batches, riding on the next put); new files use `PAGE_SIZE` pages,
  since every WAL frame is a whole page. docs/durability.md ("Writes to the disk") has the figures
  of `python -m tools.bench disk`.
- Threading: one thread (the asyncio loop) is meant to use an Outbox; paho's callbacks are bridged to
  that thread by the uplink. A lock still guards the connection so misuse cannot corrupt it. Calls
  block for one SQLite commit (an fsync for alarms), acceptable at alarm rates.
"""

from __future__ import annotations

import base64
import contextlib
import enum
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeGuard

from agent.config.schema import OutboxConfig
from agent.errors import AgentError
from agent.events import AlarmEvent, AlarmKind, Heartbeat
from agent.ids import uuid7
from agent.sealing import KEY_SETTING, SEAL_OVERHEAD, Sealer, SealError, load_or_create_key

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: the "sealed" column and the "undecryptable" state
ROW_OVERHEAD = 64  # bytes counted per row on top of topic + payload: ids, ranks, times
HEARTBEAT_RANK = 3  # after every alarm priority (0 HIGH .. 2 LOW)
# Acknowledged rows are deleted once DELETE_AT of them wait, else with the next put, or by `take` once
# the oldest has waited DELETE_AFTER_S (by the outbox's clock). 1: each PUBACK is its own commit, so a
# crash never re-sends a row whose `delivered` returned. Batches (e.g. 256) save that commit per event
# (docs/durability.md, "Writes to the disk"), at the price of re-sending, after a crash, what was
# acknowledged in the last DELETE_AFTER_S: duplicates, which receivers drop by id.
DELETE_AT = 256
DELETE_AFTER_S = 1.0
# The page size of a new file (an existing file keeps its own). Each WAL frame is a whole page, and a
# commit writes one per page it touches; 1024 writes about a third of the bytes of SQLite's default
# 4096 per alarm (docs/durability.md, "Writes to the disk").
PAGE_SIZE = 1024
# How often `take` looks through every pending heartbeat for expired ones (by the outbox's clock). The
# heartbeats it hands out are checked one by one, so an expired one is never sent; the full look costs
# reading each heartbeat's overflow pages (its expiry is stored after the payload).
EXPIRED_SCAN_S = 30.0
# The operator's action after fixing the broker side (`Outbox.retry_refused`, `edge-agent retry-refused`).
RETRY_REFUSED = "UPDATE outbox SET state='pending', reason_code=NULL WHERE state='refused'"


class Kind(enum.StrEnum):
    ALARM = "alarm"  # physiological alarm events
    TECHNICAL = "technical"  # technical alarm events (about the monitoring itself)
    HEARTBEAT = "heartbeat"


class State(enum.StrEnum):
    PENDING = "pending"
    INFLIGHT = "inflight"
    REFUSED = "refused"
    # Set aside, never sent: a sealed payload that does not open with the configured key, or a row whose
    # cells are damaged (not UTF-8, wrong type). One state for both: a new one needs a table rebuild
    # (SQLite cannot alter a CHECK) for a label; the log tells the two apart.
    UNDECRYPTABLE = "undecryptable"


class OutboxError(AgentError):
    """The outbox file cannot be opened or used; `path` names it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"outbox {path}: {reason}")
        self.path = path
        self.reason = reason


class OutboxDamagedError(OutboxError):
    """The file's bytes are damaged (failed integrity check, not a database, unreadable schema), as
    opposed to a file the agent may not open or a disk that is full."""


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
        # At most `expiry_s`: after the wall clock stepped back, `created` is in the future.
        return max(1, min(self.expiry_s, int(self.created + self.expiry_s - now)))


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
    undecryptable: int = 0  # rows set aside because they do not decrypt or are damaged (in the file now)


@dataclass(slots=True)
class _Taken:
    """A row handed out by `take` and not yet delivered, refused or requeued (kept in memory only)."""

    seq: int
    size: int
    attempts: int
    marked: bool = False  # the file says "inflight" (a later commit carried the mark)


@dataclass(slots=True)
class _Scan:
    """What `take` met in drain order: rows to hand out (item, seq, stored size), the seqs of rows that
    do not open and of damaged ones, and expired heartbeats (seq, stored size)."""

    found: list[tuple[OutboxItem, int, int]] = field(default_factory=list)
    unopened: list[int] = field(default_factory=list)
    damaged: list[int] = field(default_factory=list)
    expired: list[tuple[int, int]] = field(default_factory=list)


_COLUMNS = "id, topic, payload, kind, rank, created, expiry_s, attempts, state, reason_code"
_SELECT = f"seq, {_COLUMNS}, sealed"
_V1_COLUMNS = f"seq, {_COLUMNS}, size"
_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('alarm', 'technical', 'heartbeat')),
    rank INTEGER NOT NULL,
    created REAL NOT NULL,
    expiry_s INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'inflight', 'refused', 'undecryptable')),
    reason_code INTEGER,
    size INTEGER NOT NULL,
    sealed INTEGER NOT NULL DEFAULT 0 CHECK (sealed IN (0, 1))
);
"""
_INDEXES = """
CREATE INDEX IF NOT EXISTS outbox_drain ON outbox (state, rank, created, seq);
CREATE INDEX IF NOT EXISTS outbox_evict ON outbox (kind, seq);
"""
# name 'cleartext': the file was written without a key since it was last scrubbed, so free pages
# may still hold plaintext payloads of delivered rows.
_SEALED_NOTE = "sealed:"  # prefix of a note stored sealed (base64 of the AES-GCM box)
_NOTE_DIGITS = 12  # a note's name: note:<name>:<12-digit number>
_META = "CREATE TABLE IF NOT EXISTS outbox_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
# Version 1 had no "sealed" column and a CHECK without 'undecryptable': SQLite cannot alter a CHECK,
# so the table is rebuilt (rows, seq order and sizes kept) in one transaction.
_MIGRATE_V1 = f"""
BEGIN IMMEDIATE;
DROP INDEX IF EXISTS outbox_drain;
DROP INDEX IF EXISTS outbox_evict;
{_TABLE.format(name="outbox_v2")};
INSERT INTO outbox_v2 ({_V1_COLUMNS}) SELECT {_V1_COLUMNS} FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_v2 RENAME TO outbox;
{_INDEXES}
{_META}
INSERT OR REPLACE INTO outbox_meta VALUES ('cleartext', '1');
PRAGMA user_version={SCHEMA_VERSION};
COMMIT;
"""
_LIVE = "state IN ('pending', 'inflight')"  # rows still on their way to the broker


class Outbox:
    """A bounded, durable, prioritised queue of messages for the broker."""

    def __init__(self, config: OutboxConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.path = config.path
        self._clock = clock
        self._lock = threading.Lock()
        self._sync = ""
        self._evicted = self._expired = self._rejected = self._undecryptable = 0
        self._next_note: dict[str, int] = {}
        self._inflight: dict[str, _Taken] = {}  # by id: handed out by `take`, awaiting the broker
        self._delivered: dict[str, int] = {}  # id -> seq: acknowledged, deleted with the next batch
        self._delivered_since = 0.0  # the clock when the oldest of `_delivered` was acknowledged
        self._expired_scan_at = -math.inf  # the clock at the last full look for expired heartbeats
        key_file = config.encryption_key_file
        self._sealer = None if key_file is None else Sealer(load_or_create_key(key_file))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.text_factory = _lenient_text
            self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # no effect on an existing file
            self._db.execute("PRAGMA journal_mode=WAL")
            # Deleted rows are overwritten with zeros, not just freed: a delivered payload does not
            # linger in free pages (the default of some SQLite builds only; made explicit here).
            self._db.execute("PRAGMA secure_delete=ON")
            self._set_sync("FULL")
            # A damaged file (bad flash sectors, a torn write) is refused here, naming the file, rather
            # than surfacing later as a raw SQLite error from a put or take that stops the agent mid-run.
            verdict = str(self._db.execute("PRAGMA integrity_check(1)").fetchone()[0])
            if verdict != "ok":
                self._db.close()
                raise OutboxDamagedError(self.path, f"the file is damaged ({verdict[:200]})")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == 1:
                self._db.executescript(_MIGRATE_V1)
            elif version not in (0, SCHEMA_VERSION):
                raise OutboxError(self.path, f"schema version {version}, this agent knows {SCHEMA_VERSION}")
            self._db.executescript(_TABLE.format(name="outbox") + _INDEXES + _META)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            # A crash leaves rows in flight with nobody waiting for their PUBACK: send them again.
            # Rows set aside as undecryptable get another chance: the key may have been put right.
            self._db.execute("UPDATE outbox SET state='pending' WHERE state IN ('inflight', 'undecryptable')")
            if self._sealer is not None:
                self._scrub_cleartext(self._sealer)
            else:
                self._db.execute("INSERT OR REPLACE INTO outbox_meta VALUES ('cleartext', '1')")
                self._report_sealed_without_key()
            self._size = int(self._db.execute("SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()[0])
            newest = self._db.execute(
                "SELECT MAX(created) FROM outbox WHERE kind != 'heartbeat' "
                "AND typeof(created) IN ('real', 'integer')"
            ).fetchone()[0]
            self._alarms_created = -math.inf if newest is None else float(newest)  # see `put_many`
        except (sqlite3.Error, UnicodeDecodeError) as exc:  # a damaged schema may not even be UTF-8
            with contextlib.suppress(AttributeError, sqlite3.Error):
                self._db.close()
            # Plain DatabaseError is what SQLite says of damaged bytes ("file is not a database",
            # "malformed"); its subclasses (unable to open, read-only, locked, disk full) are not damage.
            damaged = isinstance(exc, UnicodeDecodeError) or type(exc) is sqlite3.DatabaseError
            raise (OutboxDamagedError if damaged else OutboxError)(self.path, str(exc)) from exc
        self._warned = self.fill_fraction() >= config.warn_fraction

    @classmethod
    def open_or_replace(cls, config: OutboxConfig) -> tuple[Outbox, Path | None]:
        """Open the outbox; a damaged file is moved aside (with its WAL) and a fresh one opened, so a bad
        sector costs what was waiting in it, not the gateway. Returns the outbox and where the damaged
        file went (None when it was sound); its rows may be recoverable with `sqlite3 <file> .recover`."""
        try:
            return cls(config), None
        except OutboxDamagedError as exc:
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            aside = config.path.with_name(f"{config.path.name}.damaged-{stamp}")
            for suffix in ("", "-wal", "-shm"):
                part = config.path.with_name(config.path.name + suffix)
                if part.exists():
                    part.replace(aside.with_name(aside.name + suffix))
            log.error(
                "outbox %s is damaged (%s): moved to %s, starting an empty one",
                config.path,
                exc.reason,
                aside,
            )
            return cls(config), aside

    @property
    def sealer(self) -> Sealer | None:
        """The outbox's key when payloads are sealed at rest (an `encryption_key_file` is configured),
        also used for the gateway's other files holding patient values (`agent.state_file`)."""
        return self._sealer

    # -- writing ----------------------------------------------------------------------------------

    def put(self, item: OutboxItem) -> PutResult:
        """Commit `item` durably (idempotent by id), making room by evicting old heartbeats."""
        return self.put_many([item])[0]

    def put_many(
        self, items: Sequence[OutboxItem], *, note: tuple[str, str] | None = None
    ) -> list[PutResult]:
        """Commit `items` in one transaction: all of them or none, one fsync if any is an alarm.

        Idempotent by id like `put` (an id already stored, or repeated in `items`, is stored once);
        one `PutResult` per item, in order, each seeing the items before it. `note` (name, text) is
        appended in the same transaction (see `notes`): the caller's record of what these items imply.
        """
        if not items:
            return []
        with self._lock:
            before = (self._size, self._evicted, self._rejected)
            outcomes: list[tuple[bool, int, float]] = []
            heartbeats_only = all(i.kind is Kind.HEARTBEAT for i in items)
            try:
                with self._transaction("NORMAL" if heartbeats_only else "FULL", mark=True):
                    for item in items:
                        if item.kind is not Kind.HEARTBEAT:
                            item = self._after_earlier_alarms(item)
                        need = self._stored_size(item)
                        evicted = 0
                        stored = True
                        if self._size + need > self.config.max_bytes:
                            evicted = self._evict_heartbeats(self._size + need - self.config.max_bytes)
                        if item.kind is Kind.HEARTBEAT and self._size + need > self.config.max_bytes:
                            stored = False  # only alarms left: they win
                            self._rejected += 1
                        if stored:
                            self._insert(item)
                        outcomes.append((stored, evicted, self._fill()))
                    if note is not None:
                        self._db.execute("INSERT INTO outbox_meta VALUES (?, ?)", self._note_row(*note))
            except BaseException:
                self._size, self._evicted, self._rejected = before
                raise
            results = []
            for stored, evicted, fill in outcomes:
                warn = fill >= self.config.warn_fraction
                results.append(PutResult(stored, evicted, fill, warn, warn and not self._warned))
                self._warned = warn
            return results

    def _after_earlier_alarms(self, item: OutboxItem) -> OutboxItem:
        """`item` with `created` no earlier than any alarm's put before it: alarms drain oldest first,
        and after the wall clock stepped back (NTP, an admin) a later one would otherwise go first."""
        if item.created < self._alarms_created:
            item = replace(item, created=self._alarms_created)
        self._alarms_created = item.created
        return item

    def put_alarm(self, event: AlarmEvent, topic: str) -> PutResult:
        """Queue one alarm event; its outbox id is ``{episode id}:{seq}``, unique per transition."""
        return self.put(self._alarm_item(event, topic))

    def put_alarms(
        self, events: Sequence[AlarmEvent], topic: str, *, note: tuple[str, str] | None = None
    ) -> list[PutResult]:
        """Queue alarm events (one pipeline turn's) in one transaction, like `put_many`."""
        return self.put_many([self._alarm_item(e, topic) for e in events], note=note)

    def notes(self, name: str) -> list[str]:
        """The texts stored under `name` with `put_many(..., note=...)` since `drop_notes`, oldest
        first; a sealed one that does not open with this outbox's key, or a damaged one, is left out."""
        prefix = f"note:{name}:"
        with self._lock:
            rows = self._db.execute(
                "SELECT name, value FROM outbox_meta WHERE substr(name, 1, ?) = ? ORDER BY name",
                (len(prefix), prefix),
            ).fetchall()
        texts = []
        for key, value in rows:
            if not _is_text(value):
                log.error("%s", OutboxError(self.path, f"note {key!r} is damaged (not UTF-8): left out"))
            elif not str(value).startswith(_SEALED_NOTE):
                texts.append(str(value))
            elif self._sealer is not None:
                with contextlib.suppress(SealError, ValueError):
                    sealed = base64.b64decode(str(value)[len(_SEALED_NOTE) :])
                    texts.append(self._sealer.open(sealed, str(key), "").decode())
        return texts

    def _note_row(self, name: str, text: str) -> tuple[str, str]:
        """Notes are appended (each turn writes only its own), sealed like the payloads when the
        outbox is encrypted at rest."""
        prefix = f"note:{name}:"
        if name not in self._next_note:  # numbered on from what a previous process left
            last = self._db.execute(  # well-formed names only: a damaged one cannot be numbered on from
                "SELECT MAX(name) FROM outbox_meta WHERE substr(name, 1, ?) = ? AND length(name) = ? "
                "AND substr(name, ?) NOT GLOB '*[^0-9]*'",
                (len(prefix), prefix, len(prefix) + _NOTE_DIGITS, len(prefix) + 1),
            ).fetchone()[0]
            self._next_note[name] = 0 if last is None else int(str(last)[len(prefix) :]) + 1
        key = f"{prefix}{self._next_note[name]:0{_NOTE_DIGITS}d}"
        self._next_note[name] += 1  # a rolled-back number is skipped: order is all that matters
        if self._sealer is None:
            return key, text
        return key, _SEALED_NOTE + base64.b64encode(self._sealer.seal(text.encode(), key, "")).decode()

    def drop_notes(self, name: str) -> None:
        prefix = f"note:{name}:"
        with self._lock, self._transaction("NORMAL"):
            self._db.execute("DELETE FROM outbox_meta WHERE substr(name, 1, ?) = ?", (len(prefix), prefix))

    def _alarm_item(self, event: AlarmEvent, topic: str) -> OutboxItem:
        kind = Kind.TECHNICAL if event.kind is AlarmKind.TECHNICAL else Kind.ALARM
        return OutboxItem(
            f"{event.id}:{event.seq}", topic, event.to_json(), kind, event.priority.rank, self._clock()
        )

    def put_heartbeat(self, hb: Heartbeat, topic: str, expiry_s: int) -> PutResult:
        item = OutboxItem(
            str(uuid7()), topic, hb.to_json(), Kind.HEARTBEAT, HEARTBEAT_RANK, self._clock(), expiry_s
        )
        return self.put(item)

    def take(self, limit: int) -> list[OutboxItem]:
        """Up to `limit` pending items in drain order, now in flight (in memory; attempts counted).

        Payloads are returned decrypted; a row whose payload does not decrypt, or whose cells are damaged,
        is set aside instead (state "undecryptable", never sent, never deleted) and an error naming the
        file is logged.
        """
        if limit <= 0:
            return []
        with self._lock:
            due = bool(self._delivered) and (
                len(self._delivered) >= DELETE_AT
                or abs(self._clock() - self._delivered_since) >= DELETE_AFTER_S  # a clock step too
            )
            # Writes only to delete rows (delivered or expired) or to set rows aside.
            with self._transaction("NORMAL", delete=due):
                now = self._clock()
                if abs(now - self._expired_scan_at) >= EXPIRED_SCAN_S:  # a clock step too
                    self._drop_expired()
                    self._expired_scan_at = now
                scan = self._scan_pending(limit, now)
                found, unopened, damaged = scan.found, scan.unopened, scan.damaged
                self._drop(scan.expired)
                self._db.executemany(  # by seq: a damaged id may not even be text
                    "UPDATE outbox SET state='undecryptable' WHERE seq=?", [(q,) for q in unopened + damaged]
                )
            items = []
            for item, seq, size in found:
                # In memory only: every row is pending again when the file is next opened, and on a
                # working link the PUBACK comes before anything else is written (see `_write_back`).
                self._inflight[item.id] = _Taken(seq, size, item.attempts + 1)
                items.append(replace(item, state=State.INFLIGHT, attempts=item.attempts + 1))
            if unopened:
                self._undecryptable += len(unopened)
                log.error("%s", self._undecryptable_error(len(unopened)))
            if damaged:
                log.error("%s", self._damaged_error(damaged))
            return items

    def _scan_pending(self, limit: int, now: float) -> _Scan:
        """Up to `limit` pending rows in drain order, skipping those in flight and those delivered but
        not yet deleted, and what was met on the way (see `_Scan`)."""
        scan = _Scan()
        rows = self._db.execute(
            f"SELECT {_SELECT}, CAST(size AS INTEGER) FROM outbox WHERE state='pending' "
            "ORDER BY rank, created, seq"
        )
        try:
            for row in rows:
                if self._handed_out(row[1]):
                    continue
                seq, size = int(row[0]), int(row[-1])
                try:
                    item = self._open(row[:-1])
                except SealError:
                    scan.unopened.append(seq)
                    continue
                except _DamagedRowError:
                    scan.damaged.append(seq)
                    continue
                if (
                    item.kind is Kind.HEARTBEAT
                    and item.expiry_s is not None
                    and item.created + item.expiry_s <= now
                ):
                    scan.expired.append((seq, size))
                    continue
                scan.found.append((item, seq, size))
                if len(scan.found) >= limit:
                    break
        finally:
            rows.close()
        return scan

    def delivered(self, item_id: str) -> None:
        """The broker acknowledged the item with a success code: forget it.

        A row taken by this outbox is forgotten at once (never taken again, not counted, `get` is None)
        and deleted once `DELETE_AT` acknowledgements wait (1: now), else with the next put, by `take`
        after `DELETE_AFTER_S`, or at `close`. A crash before that sends it again at the next start (a
        duplicate, which receivers drop by id).
        """
        with self._lock:
            if item_id in self._delivered:
                return  # a second acknowledgement of the same row
            taken = self._inflight.pop(item_id, None)
            if taken is None:  # not handed out by this outbox: delete it now
                self._set_sync("NORMAL")
                row = self._db.execute(
                    "DELETE FROM outbox WHERE id=? RETURNING CAST(size AS INTEGER)", (item_id,)
                ).fetchone()
                if row is not None:
                    self._size -= int(row[0])
                return
            if not self._delivered:
                self._delivered_since = self._clock()
            self._delivered[item_id] = taken.seq
            self._size -= taken.size
            if len(self._delivered) >= DELETE_AT:
                with self._transaction("NORMAL"):  # a lost deletion means a duplicate, dropped by id
                    pass

    def refused(self, item_id: str, reason_code: int) -> None:
        """The broker refused the item (PUBACK reason >= 0x80): keep it aside, never delete it."""
        with self._lock:
            self._inflight.pop(item_id, None)
            self._set_sync("FULL")
            self._db.execute(
                "UPDATE outbox SET state='refused', reason_code=? WHERE id=?", (reason_code, item_id)
            )

    def requeue(self, item_id: str) -> None:
        """Put an in-flight item back to pending (its publish could not be handed to the client)."""
        with self._lock:
            taken = self._inflight.pop(item_id, None)
            if taken is not None:
                self._requeue([taken])

    def requeue_inflight(self) -> int:
        """Every in-flight item back to pending, for a new MQTT client that holds none of them."""
        with self._lock:
            taken = list(self._inflight.values())
            self._inflight.clear()
            self._requeue(taken)
            return len(taken)

    def retry_refused(self) -> int:
        """Operator action after fixing the broker side: refused items go back to pending."""
        with self._lock:
            return self._db.execute(RETRY_REFUSED).rowcount

    # -- reading ----------------------------------------------------------------------------------

    def get(self, item_id: str) -> OutboxItem | None:
        """The item with its payload decrypted; `OutboxError` if it does not decrypt."""
        with self._lock:
            if item_id in self._delivered:
                return None
            row = self._db.execute(f"SELECT {_SELECT} FROM outbox WHERE id=?", (item_id,)).fetchone()
        if row is None:
            return None
        item = self._open_or_raise(row)
        taken = self._inflight.get(item.id)
        return item if taken is None else replace(item, state=State.INFLIGHT, attempts=taken.attempts)

    def refused_items(self) -> list[OutboxItem]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_SELECT} FROM outbox WHERE state='refused' ORDER BY seq"
            ).fetchall()
        return [self._open_or_raise(r) for r in rows]

    def depth(self) -> int:
        """Items not yet delivered (pending or in flight); refused and undecryptable rows are apart."""
        with self._lock:  # delivered rows wait in the file for their batched delete: not counted
            count = int(self._db.execute(f"SELECT COUNT(*) FROM outbox WHERE {_LIVE}").fetchone()[0])
            return count - len(self._delivered)

    def undecryptable_count(self) -> int:
        """Rows set aside because their payload does not decrypt with the configured key (or none), or
        because their cells are damaged."""
        with self._lock:
            return self._count_undecryptable()

    def refused_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox WHERE state='refused'").fetchone()[0])

    def oldest_age(self, now: float | None = None) -> float | None:
        """Age in seconds of the oldest undelivered (not refused) item, None when there is none."""
        with self._lock:
            live = f"{_LIVE} AND typeof(created) IN ('real', 'integer')"  # a damaged time is not a time
            if not self._delivered:
                oldest = self._db.execute(f"SELECT MIN(created) FROM outbox WHERE {live}").fetchone()[0]
            else:  # a delivered row waiting for its batched delete is not undelivered
                rows = self._db.execute(f"SELECT seq, created FROM outbox WHERE {live} ORDER BY created")
                try:
                    delivered = set(self._delivered.values())
                    oldest = next((created for seq, created in rows if seq not in delivered), None)
                finally:
                    rows.close()
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
            self.depth(),
            self.refused_count(),
            self._size,
            self._evicted,
            self._expired,
            self._rejected,
            self.undecryptable_count(),
        )

    def integrity_check(self) -> str:
        """SQLite's verdict on the file: "ok" when sound."""
        with self._lock:
            return "; ".join(str(r[0]) for r in self._db.execute("PRAGMA integrity_check").fetchall())

    def close(self) -> None:
        """Close the file, deleting the delivered rows and marking those still in flight first."""
        with self._lock:
            with contextlib.suppress(sqlite3.Error):  # a full or failing disk: they are sent again
                if self._delivered or not all(t.marked for t in self._inflight.values()):
                    with self._transaction("NORMAL", mark=True):
                        pass
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals (lock held) --------------------------------------------------------------------

    def _fill(self) -> float:
        return self._size / self.config.max_bytes if self.config.max_bytes > 0 else 1.0

    def _stored_size(self, item: OutboxItem) -> int:
        return item.size + (SEAL_OVERHEAD if self._sealer is not None else 0)

    def _insert(self, item: OutboxItem) -> None:
        sealer = self._sealer
        payload = item.payload if sealer is None else sealer.seal(item.payload, item.id, item.topic)
        size = self._stored_size(item)
        cur = self._db.execute(
            f"INSERT OR IGNORE INTO outbox ({_COLUMNS}, size, sealed) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                item.id,
                item.topic,
                payload,
                item.kind.value,
                item.rank,
                item.created,
                item.expiry_s,
                item.attempts,
                item.state.value,
                item.reason_code,
                size,
                int(sealer is not None),
            ),
        )
        if cur.rowcount:
            self._size += size

    def _open(self, row: tuple[object, ...]) -> OutboxItem:
        """The row (`_SELECT`) as an item with its payload in clear; `SealError` when it cannot be opened,
        `_DamagedRowError` when its cells are damaged."""
        item = _item(row[1:-1])
        if not row[-1]:
            return item  # written in clear (no key configured then)
        if self._sealer is None:
            raise SealError("sealed, but no key is configured")
        return replace(item, payload=self._sealer.open(item.payload, item.id, item.topic))

    def _open_or_raise(self, row: tuple[object, ...]) -> OutboxItem:
        try:
            return self._open(row)
        except SealError:
            raise self._undecryptable_error(1) from None
        except _DamagedRowError:
            raise self._damaged_error([int(row[0])]) from None  # type: ignore[call-overload]

    def _damaged_error(self, seqs: Sequence[int]) -> OutboxError:
        shown = ", ".join(str(s) for s in seqs[:10]) + (", ..." if len(seqs) > 10 else "")
        return OutboxError(
            self.path,
            f"{len(seqs)} row(s) are damaged (text that is not UTF-8 or a value of the wrong type; seq "
            f"{shown}): set aside, not sent, not deleted ({self._count_undecryptable()} row(s) set aside "
            "in the file in all; retried at the next start)",
        )

    def _undecryptable_error(self, count: int) -> OutboxError:
        why = (
            f"the key in {KEY_SETTING} does not open them (another key, or the rows were altered)"
            if self._sealer is not None
            else f"they are encrypted but no {KEY_SETTING} is configured"
        )
        return OutboxError(
            self.path,
            f"{count} row(s) cannot be decrypted: {why}; set aside, not sent, not deleted "
            f"({self._count_undecryptable()} in the file; retried at the next start)",
        )

    def _count_undecryptable(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox WHERE state='undecryptable'").fetchone()[0])

    def _scrub_cleartext(self, sealer: Sealer) -> None:
        """Seal rows written in clear before a key was configured, then rewrite the file (VACUUM) and
        empty the WAL, so no plaintext payload stays in free pages or old frames."""
        rows = [  # a damaged row is left as it is: take() sets it aside
            (item_id, topic, payload)
            for item_id, topic, payload in self._db.execute(
                "SELECT id, topic, payload FROM outbox WHERE sealed=0"
            )
            if _is_text(item_id) and _is_text(topic) and isinstance(payload, bytes)
        ]
        flagged = self._db.execute("SELECT 1 FROM outbox_meta WHERE name='cleartext'").fetchone()
        if not rows and not flagged:
            return
        self._begin("FULL")
        try:
            for item_id, topic, payload in rows:
                self._db.execute(
                    "UPDATE outbox SET payload=?, sealed=1, size=size+? WHERE id=?",
                    (sealer.seal(bytes(payload), str(item_id), str(topic)), SEAL_OVERHEAD, item_id),
                )
            self._db.execute("DELETE FROM outbox_meta WHERE name='cleartext'")
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self._db.execute("VACUUM")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        log.info("outbox %s: sealed %d row(s) written before encryption was configured", self.path, len(rows))

    def _report_sealed_without_key(self) -> None:
        sealed = int(self._db.execute("SELECT COUNT(*) FROM outbox WHERE sealed=1").fetchone()[0])
        if sealed:
            log.error(
                "%s",
                OutboxError(
                    self.path,
                    f"{sealed} row(s) are encrypted but no {KEY_SETTING} is configured: "
                    "they will be set aside, not sent",
                ),
            )

    def _write_back(self, *, mark: bool) -> Callable[[], None]:
        """In the current transaction: delete the delivered rows, and with `mark` (puts, close) mark
        the rows still in flight as such in the file. The marks are for whoever looks at the file
        (a test, an operator): nothing reads them back, and every row is pending again at the next
        open. On a working link the PUBACK comes before the next put, so rows are rarely marked.
        Returns what to call once the transaction is committed."""
        delivered = list(self._delivered.values())
        unmarked = [t for t in self._inflight.values() if not t.marked] if mark else []
        self._db.executemany("DELETE FROM outbox WHERE seq=?", [(q,) for q in delivered])
        self._db.executemany(
            "UPDATE outbox SET state='inflight', attempts=? WHERE seq=? AND state='pending'",
            [(t.attempts, t.seq) for t in unmarked],
        )

        def committed() -> None:  # the lock is held from here to the commit: nothing was added
            self._delivered.clear()
            for taken in unmarked:
                taken.marked = True

        return committed

    @contextlib.contextmanager
    def _transaction(self, sync: str, *, delete: bool = True, mark: bool = False) -> Iterator[None]:
        """One write transaction, carrying the pending deletions (unless `delete` is False) and the
        in-flight marks (with `mark`; see `_write_back`): they cost no commit of their own."""
        self._begin(sync)
        try:
            written_back = self._write_back(mark=mark) if delete else _nothing
            yield
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        written_back()

    def _rollback(self) -> None:
        """Undo the open transaction, if any is still open: SQLite rolls back by itself on some
        errors ("database or disk is full"), and a ROLLBACK then would raise over the real error."""
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def _requeue(self, taken: Sequence[_Taken]) -> None:
        """Rows no longer in flight: the file says pending again, with the attempts made."""
        if taken:
            with self._transaction("NORMAL"):
                self._db.executemany(
                    "UPDATE outbox SET state='pending', attempts=? WHERE seq=? "
                    "AND state IN ('pending', 'inflight')",
                    [(t.attempts, t.seq) for t in taken],
                )

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
        rows = self._db.execute(  # by seq, not id: a damaged id may not even be text
            "SELECT seq, id, CAST(size AS INTEGER) FROM outbox WHERE kind='heartbeat' AND state!='inflight' "
            "ORDER BY seq"
        )
        victims: list[int] = []
        for seq, item_id, size in rows:
            if freed >= need:
                break
            if self._handed_out(item_id):
                continue  # on its way, or already acknowledged and no longer counted
            victims.append(int(seq))
            freed += int(size)
            count += 1
        self._db.executemany("DELETE FROM outbox WHERE seq=?", [(v,) for v in victims])
        self._size -= freed
        self._evicted += count
        return count

    def _handed_out(self, item_id: object) -> bool:
        """The row is in flight, or acknowledged and waiting for its batched delete: not to be taken,
        evicted or expired."""
        return item_id in self._inflight or item_id in self._delivered

    def _drop(self, expired: Sequence[tuple[int, int]]) -> None:
        """Delete expired heartbeats, by (seq, stored size)."""
        self._db.executemany("DELETE FROM outbox WHERE seq=?", [(seq,) for seq, _ in expired])
        self._size -= sum(size for _, size in expired)
        self._expired += len(expired)

    def _drop_expired(self) -> None:
        rows = [  # not those in flight (their PUBACK is awaited) nor those delivered (not counted)
            (seq, size)
            for seq, item_id, size in self._db.execute(
                "SELECT seq, id, CAST(size AS INTEGER) FROM outbox WHERE kind='heartbeat' "
                "AND state='pending' AND expiry_s IS NOT NULL AND created + expiry_s <= ?",
                (self._clock(),),
            ).fetchall()
            if not self._handed_out(item_id)
        ]
        self._drop([(int(seq), int(size)) for seq, size in rows])


def _nothing() -> None:
    pass


class _DamagedRowError(Exception):
    """A row's cells are not what this module writes: bytes damaged on disk."""


def _lenient_text(raw: bytes) -> str:
    """Text cells as read from the file. SQLite does not check that they are UTF-8, and the default
    decoding raises on the whole query, so one damaged row would stop every read that meets it; its
    bad bytes are kept as lone surrogates instead, which `_is_text` refuses."""
    return raw.decode("utf-8", "surrogateescape")


def _is_text(value: object) -> TypeGuard[str]:
    """A text cell that was valid UTF-8 on disk (see `_lenient_text`)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _item(row: tuple[object, ...]) -> OutboxItem:
    """The row's cells as an item; `_DamagedRowError` when a cell is not what `_insert` writes."""
    item_id, topic, payload, kind, rank, created, expiry_s, attempts, state, reason_code = row
    if not (_is_text(item_id) and _is_text(topic) and isinstance(payload, bytes)):
        raise _DamagedRowError
    try:  # a kind or state out of its enum, a number that is text: damage too
        return OutboxItem(
            id=item_id,
            topic=topic,
            payload=payload,
            kind=Kind(str(kind)),
            rank=int(rank),  # type: ignore[call-overload]
            created=float(created),  # type: ignore[arg-type]
            expiry_s=None if expiry_s is None else int(expiry_s),  # type: ignore[call-overload]
            attempts=int(attempts),  # type: ignore[call-overload]
            state=State(str(state)),
            reason_code=None if reason_code is None else int(reason_code),  # type: ignore[call-overload]
        )
    except (ValueError, TypeError) as exc:
        raise _DamagedRowError from exc
