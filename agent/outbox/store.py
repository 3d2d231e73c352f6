"""The `Outbox`: opening its file, replacing a damaged one, counts and stats, closing.

Strategy: `Outbox.__init__` sets the file up in one pass (WAL, ``secure_delete``, the sync pragma), refuses
a damaged file naming it (``integrity_check``), migrates or refuses an old or newer schema
(`agent.outbox.schema`), puts every row in flight or set aside back to pending (a crash leaves rows in
flight with nobody waiting for their PUBACK), and seals or flags plaintext (`agent.outbox.encryption`).
A WAL whose end the disk lost or damaged (committed transactions SQLite will drop) is told first
(`agent.outbox.wal_tail`). `open_or_replace` moves a damaged file aside and starts an empty one, so a bad
sector costs what was waiting in it, not the gateway. New files use `PAGE_SIZE` pages, since every WAL frame
is a whole page (docs/durability.md, "Writes to the disk"). Writing and draining are the mixins
`agent.outbox.writing` and `agent.outbox.draining`. A file that cannot be set up at the start (a full disk, or
an outbox key it refused: `agent.outbox.encryption`) is an empty stand-in in memory until the disk takes
writes.

A file on a read-only file system (a failing SD card: `agent.read_only`) is read and sent as on a full
disk, its writes held in memory. SQLite cannot open a WAL file read-write there once it was closed
cleanly (its WAL index, `-shm`, was removed and cannot be made), so such a file, having no WAL to
read, is opened ``immutable``: read as it is, written never by that connection. A file with a WAL
left by a power cut opens as usual (SQLite reads it, read-only).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from agent.config.schema import OutboxConfig
from agent.outbox.draining import _Draining
from agent.outbox.expiring import EXPIRED
from agent.outbox.items import OutboxDamagedError, OutboxError, OutboxItem, OutboxStats, State
from agent.outbox.restamping import _Restamping
from agent.outbox.room import free_bytes, sizing_warning
from agent.outbox.rows import _lenient_text
from agent.outbox.schema import (
    _INDEXES,
    _LIVE,
    _META,
    _MIGRATE_V1,
    _SELECT,
    _TABLE,
    SCHEMA_VERSION,
    STORED_AND_ALARM_BYTES,
)
from agent.outbox.transactions import WRITE_RETRY_S, _Taken
from agent.outbox.wal_tail import WalTail, read_wal_tail
from agent.outbox.writing import DROPPED, _Writing
from agent.read_only import is_read_only_error, on_read_only_fs, remedy

log = logging.getLogger("agent.outbox")

# The page size of a new file (an existing file keeps its own). Each WAL frame is a whole page, and a
# commit writes one per page it touches; 1024 writes about a third of the bytes of SQLite's default
# 4096 per alarm (docs/durability.md, "Writes to the disk").
PAGE_SIZE = 1024


# Below this many free bytes, SQLite's "disk I/O error" is taken for a full disk: making the WAL index
# (`-shm`, 32 KiB) of a file closed cleanly fails so, without a word of space.
FULL_BELOW = 64 * 1024


def _disk_refuses(exc: BaseException | None, folder: Path) -> bool:
    """A disk that takes no writes now: SQLite's "database or disk is full", the OS's ENOSPC, SQLite's
    "disk I/O error" on a file system with (almost) no room left in `folder`; or a read-only file
    system (EROFS, or SQLite's "readonly database" or "unable to open" there)."""
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOSPC or is_read_only_error(exc)
    if not isinstance(exc, sqlite3.Error):
        return False
    code = exc.sqlite_errorcode & 0xFF
    if code == sqlite3.SQLITE_FULL:
        return True
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN):
        return on_read_only_fs(folder)
    if code != sqlite3.SQLITE_IOERR:
        return False
    free = free_bytes(folder)
    return free is not None and free < FULL_BELOW


def _open(path: Path) -> sqlite3.Connection:
    """A connection to the file at `path`; ``immutable`` on a read-only file system when it has no WAL
    (see the module's docstring)."""
    wal = path.with_name(path.name + "-wal")
    if on_read_only_fs(path) and path.exists() and not wal.exists():
        uri = f"{path.resolve().as_uri()}?immutable=1"
        return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


class Outbox(_Writing, _Draining, _Restamping):
    """A bounded, durable, prioritised queue of messages for the broker."""

    def __init__(
        self,
        config: OutboxConfig,
        *,
        clock: Callable[[], float] = time.time,
        save_first: Callable[[], bool] = lambda: True,
    ) -> None:
        """`save_first`: writes the pseudonym key if a full disk refused it; called with the outbox's
        own (`_save_keys`), whenever the outbox could write."""
        self.config = config
        self.path = config.path
        self._clock = clock
        self._lock = threading.Lock()
        self._sync = ""
        self._evicted = self._expired = self._rejected = self._undecryptable = 0
        self._dropped = self._expired_total = self._expired_written = self._size = self._alarm_size = 0
        self._dropping_since: float | None = None
        self._dropping_told = -math.inf
        self._next_note: dict[str, int] = {}
        self._inflight: dict[str, _Taken] = {}  # by id: handed out by `take`, awaiting the broker
        self._delivered: dict[str, int] = {}  # id -> seq: acknowledged, deleted with the next batch
        self._delivered_since = 0.0  # the clock when the oldest of `_delivered` was acknowledged
        self._expired_scan_at = -math.inf  # the clock at the last full look for expired heartbeats
        self._write_failed_at: float | None = None  # see `transactions`: deletions wait on a full disk
        self._requeue_later: dict[int, int] = {}
        self._open_writes_pending = False  # the open's own writes wait for a disk that takes them
        self._stand_in_tried_at: float | None = None  # not None: the file could not even be set up
        self._stand_in_reason = ""
        self.torn_wal: WalTail | None = None  # committed transactions the WAL lost, found at the open
        self._save_first = save_first
        unsaved = self._load_sealer(config.encryption_key_file)
        try:
            if unsaved is not None:  # nothing is sealed with a key the next start would not have
                raise OutboxError(self.path, unsaved) from OSError(errno.ENOSPC, unsaved)
            self._db = self._connect(self.path)
        except OutboxError as exc:
            if not _disk_refuses(exc.__cause__, self.path.parent):
                raise
            # A full disk at a start: monitor all the same. Alarm events are held in memory and sent
            # directly (agent.held_alarms), and the file is set up once the disk takes writes.
            log.error(
                "cannot set up the outbox %s (%s): alarm events are held in memory and sent directly while "
                "the broker is connected, and it is set up once its disk takes writes again; %s",
                self.path,
                exc.reason,
                remedy(self.path.parent),
            )
            self._db = self._stand_in()
            self._stand_in_tried_at, self._stand_in_reason = self._clock(), exc.reason
        self._warned = self.fill_fraction() >= config.warn_fraction
        if (sizing := sizing_warning(config, self._size)) is not None:
            log.warning("%s", sizing)

    def _connect(self, path: Path) -> sqlite3.Connection:
        """Open (or create) the file at `path` and set it up (see the module's docstring), and the
        counts kept in memory. A damaged file raises `OutboxDamagedError`; a file that cannot be opened,
        read or set up `OutboxError`, with the SQLite or OS error as its cause. The open's own writes
        that can wait (rows back to pending, the plaintext flag) wait for a full disk, told once."""
        db: sqlite3.Connection | None = None
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):  # alarms are patient data: the agent's user only
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            self._tell_torn_wal(path)  # before SQLite replays the WAL and drops what it cannot
            db = self._db = _open(path)
            self._sync = ""
            db.text_factory = _lenient_text
            db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # no effect on an existing file
            db.execute("PRAGMA journal_mode=WAL")
            # Deleted rows are overwritten with zeros, not just freed: a delivered payload does not
            # linger in free pages (the default of some SQLite builds only; made explicit here).
            db.execute("PRAGMA secure_delete=ON")
            self._set_sync("FULL")
            # A damaged file (bad flash sectors, a torn write) is refused here, naming the file, rather
            # than surfacing later as a raw SQLite error from a put or take that stops the agent mid-run.
            verdict = str(db.execute("PRAGMA integrity_check(1)").fetchone()[0])
            if verdict != "ok":
                db.close()
                raise OutboxDamagedError(path, f"the file is damaged ({verdict[:200]})")
            self._create_schema(db)
            try:
                self._open_writes()
            except sqlite3.OperationalError as exc:
                if not _disk_refuses(exc, path.parent):
                    raise
                self._rollback()
                self._open_writes_pending = True
                log.error(
                    "cannot write the outbox %s (%s): it is read and sent, new alarm events are held in "
                    "memory and sent directly until its disk takes writes again; %s",
                    path,
                    exc,
                    remedy(path.parent),
                )
            self._count_at_open()
        except (sqlite3.Error, UnicodeDecodeError, OSError) as exc:  # a damaged schema may not be UTF-8
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    db.close()
            # Plain DatabaseError is what SQLite says of damaged bytes ("file is not a database",
            # "malformed"); its subclasses (unable to open, read-only, locked, disk full) are not damage.
            damaged = isinstance(exc, UnicodeDecodeError) or type(exc) is sqlite3.DatabaseError
            reason = exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
            raise (OutboxDamagedError if damaged else OutboxError)(path, reason) from exc
        return db

    def _tell_torn_wal(self, path: Path) -> None:
        """One WARNING when the WAL left by the last process ends in committed transactions SQLite will
        discard (`agent.outbox.wal_tail`: data lost or damaged after it was written)."""
        if self.torn_wal is not None:
            return  # told once (a full disk at the start retries the open every second)
        tail = read_wal_tail(path)
        if tail is None or not tail.lost:
            return
        self.torn_wal = tail
        log.warning(
            "the outbox %s: the end of its WAL (%s-wal) was lost or damaged after it was written (a "
            "power cut before it reached the disk, or a disk that loses data it confirmed): at least %d "
            "committed transaction(s) (%d page(s)) are discarded. Alarm events queued in the last "
            "moments before the stop may be lost, and acknowledged ones sent again; an episode whose "
            "start was delivered may never get its end: the back end reconciles it from the heartbeat's "
            "active_alarms (docs/payloads.md). If it comes without a power cut, check the card",
            path,
            path,
            tail.lost_transactions,
            tail.lost_frames,
        )

    def _create_schema(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 1:
            db.executescript(_MIGRATE_V1)
        elif version not in (0, SCHEMA_VERSION):
            raise OutboxError(self.path, f"schema version {version}, this agent knows {SCHEMA_VERSION}")
        db.executescript(_TABLE.format(name="outbox") + _INDEXES + _META)
        if version != SCHEMA_VERSION:  # no write when it is set: a read-only file opens too
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _open_writes(self) -> None:
        """What the open writes: a crash leaves rows in flight with nobody waiting for their PUBACK (sent
        again); rows set aside as undecryptable get another chance (the key may have been put right);
        plaintext is sealed or flagged (`encryption`). Also carried by the first write transaction
        that works after a full disk refused them at the open (`_write_back`)."""
        self._db.execute("UPDATE outbox SET state='pending' WHERE state IN ('inflight', 'undecryptable')")
        if self._sealer is not None:
            self._scrub_cleartext(self._sealer)
        else:
            self._db.execute("INSERT OR REPLACE INTO outbox_meta VALUES ('cleartext', '1')")
            self._report_sealed_without_key()

    def _count_at_open(self) -> None:
        stored, alarms = self._db.execute(STORED_AND_ALARM_BYTES).fetchone()
        self._size, self._alarm_size = int(stored), int(alarms)
        self._dropped = self._meta_count(DROPPED)
        self._expired_total = self._expired_written = self._meta_count(EXPIRED)
        newest = self._db.execute(
            "SELECT MAX(created) FROM outbox WHERE kind != 'heartbeat' "
            "AND typeof(created) IN ('real', 'integer')"
        ).fetchone()[0]
        self._alarms_created = -math.inf if newest is None else float(newest)  # see `put_many`
        # Rows above this seq are this outbox's: a step of the clock moves them (`restamping`).
        self._seq_at_open = self._steady_seq = self._highest_seq()
        self._created_at_open = self._alarms_created

    def _meta_count(self, name: str) -> int:
        """A count kept in ``outbox_meta`` (0 when absent or damaged)."""
        row = self._db.execute("SELECT value FROM outbox_meta WHERE name=?", (name,)).fetchone()
        return int(row[0]) if row is not None and str(row[0]).isdigit() else 0

    def _stand_in(self) -> sqlite3.Connection:
        """An empty outbox in memory that refuses every write (``query_only``): puts fail as on a full
        disk, so alarm events are held and sent directly (agent.held_alarms), until `_set_up_again`."""
        db = self._db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self._sync = ""
        db.text_factory = _lenient_text
        self._create_schema(db)
        self._count_at_open()
        db.execute("PRAGMA query_only=ON")
        return db

    def _set_up_again(self) -> None:
        """While a stand-in serves (the file could not be set up at the start), try the file once a
        second (by the outbox's clock), from the puts, its key first; the stand-in holds nothing to
        carry over."""
        tried = self._stand_in_tried_at
        if tried is None or abs(self._clock() - tried) < WRITE_RETRY_S:  # a clock step too
            return
        self._stand_in_tried_at = self._clock()
        unsaved = self._save_keys()
        if unsaved is not None:
            self._stand_in_reason = unsaved
            return
        stand_in = self._db
        try:
            self._connect(self.path)
        except OutboxError as exc:
            self._stand_in_reason = exc.reason
            self._db, self._sync, self._open_writes_pending = stand_in, "", False
            self._count_at_open()
            return
        stand_in.close()
        self._stand_in_tried_at = None
        self._warned = self._fill() >= self.config.warn_fraction
        log.warning("the outbox %s is set up: its disk takes writes again", self.path)

    @classmethod
    def open_or_replace(
        cls, config: OutboxConfig, *, save_first: Callable[[], bool] = lambda: True
    ) -> tuple[Outbox, Path | None]:
        """Open the outbox; a damaged file is moved aside (with its WAL) and a fresh one opened, so a bad
        sector costs what was waiting in it, not the gateway. Returns the outbox and where the damaged
        file went (None when it was sound); its rows may be recoverable with `sqlite3 <file> .recover`."""
        try:
            return cls(config, save_first=save_first), None
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
            return cls(config, save_first=save_first), aside

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
                unwritten = self._expired_total != self._expired_written and self._stand_in_tried_at is None
                if unwritten or self._delivered or not all(t.marked for t in self._inflight.values()):
                    with self._transaction("NORMAL", mark=True):
                        if unwritten:
                            self._write_expired()
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
