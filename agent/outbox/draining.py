"""Draining: `take` in drain order, rows in flight, acknowledgements, refusals, expired heartbeats.

Strategy:
- `take()` drains alarms first (HIGH, MEDIUM, LOW, then oldest first) and heartbeats last. The rows
  it hands out are in flight in memory only, never taken twice, never evicted or expired: writing the
  state cost a commit per row and nothing needs it, since every row is pending again when the file is
  opened (after a crash). The next put marks the rows still in flight in the file, for whoever looks
  at it; on a working link the PUBACK comes first, so that is rare.
  Heartbeats past their expiry are dropped instead of sent (`expiring`, which the puts share).
- A broker refusal (reason code >= 0x80) sets the row aside as "refused": kept, counted, never
  retried automatically (`retry_refused` is the operator's action) and never deleted, so a
  misconfigured ACL cannot silently eat alarms (a refused heartbeat can still be evicted for room).
- Writes to the disk (an SD card wears out): the commits per event are the put and the delete (see
  `DELETE_AT` for deleting in batches, riding on the next put). docs/durability.md ("Writes to the
  disk") has the figures of `python -m tools.bench disk`.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from agent.outbox.encryption import _Encryption
from agent.outbox.expiring import _Expiring
from agent.outbox.items import Kind, OutboxItem, State
from agent.outbox.rows import _DamagedRowError
from agent.outbox.schema import _SELECT, RETRY_REFUSED
from agent.outbox.transactions import _Taken
from agent.sealing import SealError

log = logging.getLogger("agent.outbox")

# Acknowledged rows are deleted once DELETE_AT of them wait, else with the next put, or by `take` once
# the oldest has waited DELETE_AFTER_S (by the outbox's clock). 1: each PUBACK is its own commit, so a
# crash never re-sends a row whose `delivered` returned. Batches (e.g. 256) save that commit per event
# (docs/durability.md, "Writes to the disk"), at the price of re-sending, after a crash, what was
# acknowledged in the last DELETE_AFTER_S: duplicates, which receivers drop by id.
DELETE_AT = 256
DELETE_AFTER_S = 1.0


@dataclass(slots=True)
class _Scan:
    """What `take` met in drain order: rows to hand out (item, seq, stored size), the seqs of rows that
    do not open and of damaged ones, and expired heartbeats (seq, stored size)."""

    found: list[tuple[OutboxItem, int, int]] = field(default_factory=list)
    unopened: list[int] = field(default_factory=list)
    damaged: list[int] = field(default_factory=list)
    expired: list[tuple[int, int]] = field(default_factory=list)


class _Draining(_Expiring, _Encryption):
    """Handing rows out to the uplink and settling them: delivered, refused or back to pending."""

    def take(self, limit: int) -> list[OutboxItem]:
        """Up to `limit` pending items in drain order, now in flight (in memory; attempts counted).

        Payloads are returned decrypted; a row whose payload does not decrypt, or whose cells are damaged,
        is set aside instead (state "undecryptable", never sent, never deleted) and an error naming the
        file is logged.
        """
        if limit <= 0 or self._stand_in_tried_at is not None:  # a stand-in holds nothing (`store`)
            return []
        with self._lock:
            due = (
                bool(self._delivered)
                and self._write_back_due()
                and (
                    len(self._delivered) >= DELETE_AT
                    or abs(self._clock() - self._delivered_since) >= DELETE_AFTER_S  # a clock step too
                )
            )
            before, expiry_before = self._size, self._expiry_counts()
            try:
                # Writes only to delete rows (delivered or expired) or to set rows aside.
                with self._transaction("NORMAL", delete=due):
                    scan = self._scan_and_drop(limit)
            except sqlite3.OperationalError as exc:  # a full disk: hand rows out all the same
                self._size = before
                self._restore_expiry(expiry_before)
                self._write_failed(exc)
                scan = self._scan_pending(limit, self._clock())  # reading only: nothing dropped or set aside
            found, unopened, damaged = scan.found, scan.unopened, scan.damaged
            items = []
            for item, seq, size in found:
                # In memory only: every row is pending again when the file is next opened, and on a
                # working link the PUBACK comes before anything else is written (see `_write_back`).
                self._inflight[item.id] = _Taken(
                    seq, size, item.attempts + 1, alarm=item.kind is not Kind.HEARTBEAT
                )
                items.append(replace(item, state=State.INFLIGHT, attempts=item.attempts + 1))
            if unopened:
                self._undecryptable += len(unopened)
                log.error("%s", self._undecryptable_error(len(unopened)))
            if damaged:
                log.error("%s", self._damaged_error(damaged))
            return items

    def _scan_and_drop(self, limit: int) -> _Scan:
        """`_scan_pending`, dropping the expired heartbeats met (and all of them when due: `expiring`)
        and setting aside the rows that do not open; in the caller's transaction."""
        self._drop_expired_if_due()
        now = self._clock()
        scan = self._scan_pending(limit, now)
        self._drop(scan.expired)
        aside = scan.unopened + scan.damaged  # by seq: a damaged id may not even be text
        self._db.executemany("UPDATE outbox SET state='undecryptable' WHERE seq=?", [(q,) for q in aside])
        return scan

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
                try:
                    row = self._db.execute(
                        "DELETE FROM outbox WHERE id=? RETURNING CAST(size AS INTEGER), kind", (item_id,)
                    ).fetchone()
                except sqlite3.OperationalError as exc:  # a full disk: a duplicate after a restart
                    self._rollback()
                    self._write_failed(exc)
                    return
                if row is not None:
                    self._size -= int(row[0])
                    if row[1] != Kind.HEARTBEAT.value:
                        self._alarm_size -= int(row[0])
                return
            if not self._delivered:
                self._delivered_since = self._clock()
            self._delivered[item_id] = taken.seq
            self._size -= taken.size
            if taken.alarm:
                self._alarm_size -= taken.size
            if len(self._delivered) >= DELETE_AT and self._write_back_due():
                try:
                    with self._transaction("NORMAL"):  # a lost deletion means a duplicate, dropped by id
                        pass
                except sqlite3.OperationalError as exc:  # a full disk: they wait (see `transactions`)
                    self._write_failed(exc)

    def refused(self, item_id: str, reason_code: int) -> None:
        """The broker refused the item (PUBACK reason >= 0x80): keep it aside, never delete it."""
        with self._lock:
            self._set_sync("FULL")
            try:
                self._db.execute(
                    "UPDATE outbox SET state='refused', reason_code=? WHERE id=?", (reason_code, item_id)
                )
            except sqlite3.OperationalError as exc:
                # A full disk: the row stays in flight in memory (not sent again) until the next
                # connection requeues it, to be refused again and set aside then.
                self._rollback()
                self._write_failed(exc)
                return
            self._inflight.pop(item_id, None)

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

    # -- internals (lock held) --------------------------------------------------------------------

    def _requeue(self, taken: Sequence[_Taken]) -> None:
        """Rows no longer in flight: the file says pending again, with the attempts made."""
        if not taken:
            return
        try:
            with self._transaction("NORMAL"):
                self._db.executemany(
                    "UPDATE outbox SET state='pending', attempts=? WHERE seq=? "
                    "AND state IN ('pending', 'inflight')",
                    [(t.attempts, t.seq) for t in taken],
                )
        except sqlite3.OperationalError as exc:
            # A full disk: a row the file calls in flight would not be taken again; its mark is
            # undone with the next write that works. The others are pending in the file already.
            self._write_failed(exc)
            self._requeue_later.update((t.seq, t.attempts) for t in taken if t.marked)
