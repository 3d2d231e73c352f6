"""The state an outbox keeps, and its write transactions: what is durable when.

Strategy:
- Every event is committed before it is published and deleted only after the broker acknowledges
  it with an MQTT v5 PUBACK success code. Alarms are committed with ``synchronous=FULL`` (fsync on
  commit: an acknowledged `put_alarm` survives a power cut); heartbeats with ``synchronous=NORMAL``
  (WAL: survives a process crash, may be lost on a power cut, which costs nothing because a newer
  heartbeat follows). The pragma is switched per transaction; a FULL commit fsyncs the whole WAL,
  so a cheaper earlier commit never weakens a later alarm. Deletions use NORMAL: losing one on a
  power cut means a duplicate delivery, which receivers drop by id.
- A write transaction carries what waits in memory for a commit: the deletions of acknowledged rows
  and, with puts and `close`, the marks of rows still in flight (`_write_back`), so they cost no
  commit of their own.
- Threading: one thread (the asyncio loop) is meant to use an Outbox; paho's callbacks are bridged to
  that thread by the uplink. A lock still guards the connection so misuse cannot corrupt it. Calls
  block for one SQLite commit (an fsync for alarms), acceptable at alarm rates.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.config.schema import OutboxConfig
from agent.sealing import Sealer

log = logging.getLogger("agent.outbox")

# After a failed write of deletions (a full disk) the next try waits this long (by the outbox's clock).
WRITE_RETRY_S = 1.0


@dataclass(slots=True)
class _Taken:
    """A row handed out by `take` and not yet delivered, refused or requeued (kept in memory only)."""

    seq: int
    size: int
    attempts: int
    alarm: bool = False  # an alarm row, not a heartbeat: counted in `_alarm_size`
    marked: bool = False  # the file says "inflight" (a later commit carried the mark)


class _Transactions:
    """What an `Outbox` keeps (set by `Outbox.__init__`) and the write transactions its parts share.
    The methods are internals, called with the lock held."""

    config: OutboxConfig
    path: Path
    _clock: Callable[[], float]
    _lock: threading.Lock
    _db: sqlite3.Connection
    _sync: str  # the synchronous pragma in force
    _sealer: Sealer | None
    _key_to_save: bytes | None  # the outbox key in `_sealer`, not yet on disk (a full disk): see `encryption`
    _save_first: Callable[[], bool]  # writes the pseudonym key if a full disk refused it (`_save_keys`)
    _size: int  # bytes counted against `max_bytes`
    _alarm_size: int  # of them, the bytes of alarm rows (not heartbeats): `alarm_fill_fraction`
    _evicted: int
    _dropped: int  # heartbeats evicted or refused for room since the file was made (`writing.DROPPED`)
    _dropping_since: float | None  # `_dropped` when the told streak of drops began; None: not dropping
    _dropping_told: float  # time.monotonic() of the last "drops heartbeats" line
    _expired: int  # heartbeats dropped past their expiry since open (`OutboxStats.expired`)
    _expired_total: int  # ... since the file was made (`expiring.EXPIRED`)
    _expired_written: int  # `_expired_total` as last written to the file
    _rejected: int
    _undecryptable: int
    _next_note: dict[str, int]
    _inflight: dict[str, _Taken]
    _delivered: dict[str, int]
    _delivered_since: float
    _write_failed_at: float | None  # the clock at the last failed write of deletions or marks
    _requeue_later: dict[int, int]  # seq -> attempts: rows back to pending whose mark is not yet written
    _open_writes_pending: bool  # the open's writes failed (a full disk): the next transaction carries them
    _stand_in_tried_at: float | None  # not None while an empty stand-in in memory serves (`store`)
    _stand_in_reason: str  # why the file could not be set up
    _expired_scan_at: float
    _alarms_created: float
    _warned: bool

    def _handed_out(self, item_id: object) -> bool:
        """The row is in flight, or acknowledged and waiting for its batched delete: not to be taken,
        evicted or expired."""
        return item_id in self._inflight or item_id in self._delivered

    def _write_back(self, *, mark: bool) -> Callable[[], None]:
        """In the current transaction: delete the delivered rows, and with `mark` (puts, close) mark
        the rows still in flight as such in the file. The marks are for whoever looks at the file
        (a test, an operator): nothing reads them back, and every row is pending again at the next
        open. On a working link the PUBACK comes before the next put, so rows are rarely marked.
        Returns what to call once the transaction is committed."""
        delivered = list(self._delivered.values())
        unmarked = [t for t in self._inflight.values() if not t.marked] if mark else []
        later = list(self._requeue_later.items())
        opened = self._open_writes_pending
        if opened:  # what the open could not write; nothing of this run is in flight or aside in the file
            self._db.execute("UPDATE outbox SET state='pending' WHERE state IN ('inflight', 'undecryptable')")
            if self._sealer is None:  # (plaintext to seal waits for the next open: it rewrites the file)
                self._db.execute("INSERT OR REPLACE INTO outbox_meta VALUES ('cleartext', '1')")
        self._db.executemany("DELETE FROM outbox WHERE seq=?", [(q,) for q in delivered])
        self._db.executemany(
            "UPDATE outbox SET state='pending', attempts=? WHERE seq=? AND state='inflight'",
            [(attempts, seq) for seq, attempts in later],
        )
        self._db.executemany(
            "UPDATE outbox SET state='inflight', attempts=? WHERE seq=? AND state='pending'",
            [(t.attempts, t.seq) for t in unmarked],
        )

        def committed() -> None:  # the lock is held from here to the commit: nothing was added
            self._delivered.clear()
            self._requeue_later.clear()
            if opened:
                self._open_writes_pending = False
            for taken in unmarked:
                taken.marked = True
            if self._write_failed_at is not None and (
                delivered or later or opened
            ):  # what had failed is written
                self._write_failed_at = None
                log.warning("the outbox %s takes writes again: acknowledged rows are deleted", self.path)

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

    def _set_up_again(self) -> None:
        """While a stand-in serves, try to set the file up (`Outbox._set_up_again`)."""

    def _write_back_due(self) -> bool:
        """Whether waiting deletions may be tried now: not within `WRITE_RETRY_S` of a failed try (a
        full disk is not hammered with a failing commit per PUBACK)."""
        failed = self._write_failed_at
        return failed is None or abs(self._clock() - failed) >= WRITE_RETRY_S  # a clock step too

    def _write_failed(self, exc: sqlite3.OperationalError) -> None:
        """A write of deletions or marks failed (a full disk): they wait in memory; told once."""
        if self._write_failed_at is None:
            log.error(
                "cannot write the outbox %s (%s): %d acknowledged row(s) stay in the file for now and are "
                "deleted once it takes writes again (after a restart before that they are sent again: "
                "duplicates, dropped by id); sending goes on",
                self.path,
                exc,
                len(self._delivered),
            )
        self._write_failed_at = self._clock()

    def _rollback(self) -> None:
        """Undo the open transaction, if any is still open: SQLite rolls back by itself on some
        errors ("database or disk is full"), and a ROLLBACK then would raise over the real error."""
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def _begin(self, sync: str) -> None:
        self._set_sync(sync)  # outside the transaction: SQLite ignores it inside one
        self._db.execute("BEGIN IMMEDIATE")

    def _set_sync(self, mode: str) -> None:
        if mode != self._sync:
            self._db.execute(f"PRAGMA synchronous={mode}")
            self._sync = mode


def _nothing() -> None:
    pass
