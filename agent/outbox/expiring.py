"""Expiring: heartbeats past their expiry are dropped and counted, by puts as well as by `take`.

Strategy: a heartbeat older than its expiry (`mqtt.heartbeat_expiry_s`) is worth nothing to the
receiver, so it is dropped instead of sent. While the link is down nothing is taken, so the puts drop
them too: before, an outage kept every heartbeat until `max_bytes` evicted them, and a 3-day outage
filled the outbox with 8,640 heartbeats of which the broker would get the last 4 (offline review M1).
- Every `EXPIRED_SCAN_S` (by the outbox's clock) the first put or take looks through every pending
  heartbeat for expired ones (reading their overflow pages: the expiry is stored after the payload).
  A put drops them in its own transaction, before its insert: the pages they free take the new
  heartbeat, so an outage writes about one heartbeat's pages per heartbeat and no extra commit.
- Rows in flight (their PUBACK is awaited) or delivered (not counted any more) are left alone.
- Dropped heartbeats are counted in the file (`EXPIRED`, across starts, like `writing.DROPPED`) and
  reported in every heartbeat as `outbox_heartbeats_expired`: a gap in the heartbeats' `time` with the
  count risen by about as many is an outage the gateway beat through, not a gateway that was off. The
  count is written with every `EXPIRED_WRITE_EVERY`-th drop and at `close`, not with each: its page
  written with each drop made an outage of small heartbeats write 12 % more than keeping them all
  (docs/durability.md, "Heartbeats in an outage"); a crash may leave it that many low.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.outbox.transactions import _Transactions

# How often a put or `take` looks through every pending heartbeat for expired ones. `take` also checks
# each heartbeat it would hand out, so an expired one is never sent.
EXPIRED_SCAN_S = 30.0
EXPIRED = "heartbeats_expired"  # outbox_meta: heartbeats dropped past their expiry, since the file was made
EXPIRED_WRITE_EVERY = 10  # the count in the file is written once this many drops wait, and at `close`


class _Expiring(_Transactions):
    """Dropping heartbeats past their expiry, and their count in the file."""

    def heartbeats_expired(self) -> int:
        """Heartbeats dropped past their expiry since the file was made (kept in it, across starts)."""
        return self._expired_total

    # -- internals (lock held, in the caller's transaction) ---------------------------------------

    def _drop_expired_if_due(self) -> None:
        """Every `EXPIRED_SCAN_S`: drop every expired heartbeat."""
        now = self._clock()
        if abs(now - self._expired_scan_at) >= EXPIRED_SCAN_S:  # a clock step too
            self._drop_expired(now)
            self._expired_scan_at = now

    def _drop_expired(self, now: float) -> None:
        rows = [  # not those in flight (their PUBACK is awaited) nor those delivered (not counted)
            (int(seq), int(size))
            for seq, item_id, size in self._db.execute(
                "SELECT seq, id, CAST(size AS INTEGER) FROM outbox WHERE kind='heartbeat' "
                "AND state='pending' AND expiry_s IS NOT NULL AND created + expiry_s <= ?",
                (now,),
            ).fetchall()
            if not self._handed_out(item_id)
        ]
        self._drop(rows)

    def _drop(self, expired: Sequence[tuple[int, int]]) -> None:
        """Delete expired heartbeats, by (seq, stored size), and count them."""
        if not expired:
            return
        self._db.executemany("DELETE FROM outbox WHERE seq=?", [(seq,) for seq, _ in expired])
        self._size -= sum(size for _, size in expired)
        self._expired += len(expired)
        self._expired_total += len(expired)
        if self._expired_total - self._expired_written >= EXPIRED_WRITE_EVERY:
            self._write_expired()

    def _write_expired(self) -> None:
        """The count in the file, in the current transaction."""
        self._db.execute(
            "INSERT OR REPLACE INTO outbox_meta VALUES (?, ?)", (EXPIRED, str(self._expired_total))
        )
        self._expired_written = self._expired_total

    def _expiry_counts(self) -> tuple[int, int, int, float]:
        """What a transaction that may drop heartbeats restores when it fails (`_restore_expiry`)."""
        return self._expired, self._expired_total, self._expired_written, self._expired_scan_at

    def _restore_expiry(self, counts: tuple[int, int, int, float]) -> None:
        self._expired, self._expired_total, self._expired_written, self._expired_scan_at = counts
