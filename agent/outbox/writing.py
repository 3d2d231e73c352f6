"""Writing: puts, batched puts, and the bound in bytes with the eviction of heartbeats.

Strategy:
- The outbox is bounded in payload bytes (`max_bytes`, counting topic + payload + a fixed row
  overhead). When a put would pass the bound, the oldest heartbeats are evicted first. Alarms are
  never evicted: if only alarms remain, a new heartbeat is refused and a new alarm is still stored
  past the bound. Each put returns a `PutResult` saying when the fill level crosses `warn_fraction`.
  The technical alarm "outbox_filling" watches `alarm_fill_fraction`, the alarm rows' share of the
  bound: heartbeats make room for alarms by themselves, so a fill of heartbeats alone threatens no
  alarm (offline review M1: an outage of heartbeats raised it at HIGH).
- Before storing, a put drops expired heartbeats when a look is due (`expiring`), in its transaction.
- `put_many` commits a batch (one turn's alarms) in one transaction: one fsync for the lot, and a
  crash leaves all of them or none. `put` is `put_many` of one.
- An alarm's `created` is never earlier than that of an alarm put before it, so a step back of the
  wall clock cannot send an episode's END before its START.
- An UPDATE or END is put in the clock its episode is told with (`agent.outbox.episode_clock`).
- The disk itself bounds the outbox too (`agent.outbox.room`): while it is down to its reserve for
  alarms, a heartbeat only replaces older ones and each alarm takes old heartbeats' room first.
- Heartbeats evicted or refused for room are counted in the file (`DROPPED`, across starts; reported
  in every heartbeat) and told in the log, once when dropping starts and once when it stops.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import replace

from agent.events import AlarmEvent, AlarmKind, Heartbeat
from agent.ids import uuid7
from agent.outbox.episode_clock import _EpisodeClock
from agent.outbox.expiring import _Expiring
from agent.outbox.items import HEARTBEAT_RANK, Kind, OutboxItem, PutResult
from agent.outbox.notes import _Notes
from agent.outbox.room import RESERVE_BYTES, disk_low
from agent.outbox.schema import _COLUMNS

log = logging.getLogger("agent.outbox")

DROPPED = "heartbeats_dropped"  # outbox_meta: heartbeats evicted or refused for room, since the file was made
TELL_DROPPING_S = 600.0  # at most one "drops heartbeats" line this often


class _Writing(_Notes, _Expiring, _EpisodeClock):
    """Putting items (and notes) in the file within its bound."""

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
            self._set_up_again()
            if self._stand_in_tried_at is not None:  # as a full disk fails a put (agent.held_alarms)
                raise sqlite3.OperationalError(f"it could not be set up: {self._stand_in_reason}")
            before = (self._size, self._evicted, self._rejected, self._alarm_size)
            expiry_before = self._expiry_counts()
            dropped_before = self._dropped
            outcomes: list[tuple[bool, int, float]] = []
            heartbeats_only = all(i.kind is Kind.HEARTBEAT for i in items)
            low = disk_low(self.path.parent)  # the disk is down to its reserve for alarms (`room`)
            try:
                with self._transaction("NORMAL" if heartbeats_only else "FULL", mark=True):
                    self._drop_expired_if_due()  # first: the pages they free take the new items
                    for item in items:
                        if item.kind is not Kind.HEARTBEAT:
                            item = self._after_earlier_alarms(self._in_its_episodes_clock(item))
                        need = self._stored_size(item)
                        over = self._size + need - self.config.max_bytes
                        if low:  # take the room of old heartbeats, not the disk's
                            over = max(over, need)
                        size_before = self._size
                        evicted = self._evict_heartbeats(over) if over > 0 else 0
                        freed = size_before - self._size
                        stored = item.kind is not Kind.HEARTBEAT or (
                            self._size + need <= self.config.max_bytes and (not low or freed >= need)
                        )  # else only alarms are left to evict, or the disk has no room for it: alarms win
                        if stored:
                            self._insert(item)
                        else:
                            self._rejected += 1
                        outcomes.append((stored, evicted, self._fill()))
                    if note is not None:
                        self._db.execute("INSERT INTO outbox_meta VALUES (?, ?)", self._note_row(*note))
                    self._count_dropped(self._evicted - before[1] + self._rejected - before[2])
            except BaseException:
                self._size, self._evicted, self._rejected, self._alarm_size = before
                self._restore_expiry(expiry_before)
                self._dropped = dropped_before
                raise
            self._tell_dropping(self._dropped - dropped_before, items, outcomes, low)
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

    def heartbeats_dropped(self) -> int:
        """Heartbeats evicted or refused for room since the file was made (kept in it, across starts)."""
        return self._dropped

    # -- internals (lock held) --------------------------------------------------------------------

    def _count_dropped(self, count: int) -> None:
        """Add `count` to the file's count of heartbeats dropped for room, in the current transaction."""
        if count:
            self._dropped += count
            self._db.execute(
                "INSERT OR REPLACE INTO outbox_meta VALUES (?, ?)", (DROPPED, str(self._dropped))
            )

    def _tell_dropping(
        self, dropped: int, items: Sequence[OutboxItem], outcomes: list[tuple[bool, int, float]], low: bool
    ) -> None:
        """One line when heartbeats start being dropped for room (at most every `TELL_DROPPING_S`), one
        when a heartbeat is stored again without dropping any: nothing else tells an outage's lost
        heartbeats from a gateway that was off."""
        if dropped:
            now = time.monotonic()
            if self._dropping_since is None and now - self._dropping_told >= TELL_DROPPING_S:
                self._dropping_since, self._dropping_told = self._dropped - dropped, now
                why = (
                    f"its disk is down to the {RESERVE_BYTES // (1 << 20)} MiB kept for alarm events"
                    if low
                    else f"it is at outbox.max_bytes ({self.config.max_bytes} bytes)"
                )
                log.warning(
                    "the outbox %s drops heartbeats, the oldest first, for room: %s. Alarm events are kept; "
                    "heartbeats report the count as outbox_heartbeats_dropped",
                    self.path,
                    why,
                )
        elif self._dropping_since is not None and any(  # a heartbeat, not an alarm, tells it stopped
            stored and i.kind is Kind.HEARTBEAT for i, (stored, _, _) in zip(items, outcomes, strict=True)
        ):
            log.info(
                "the outbox %s stores heartbeats again without dropping any: %d dropped meanwhile",
                self.path,
                self._dropped - self._dropping_since,
            )
            self._dropping_since = None

    def alarm_fill_fraction(self) -> float:
        """The bytes of alarm rows (physiological and technical, waiting or refused) over `max_bytes`:
        what "outbox_filling" watches. Past 1 alarms are kept beyond the bound, growing the file."""
        return self._alarm_size / self.config.max_bytes if self.config.max_bytes > 0 else 1.0

    def _fill(self) -> float:
        return self._size / self.config.max_bytes if self.config.max_bytes > 0 else 1.0

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
            if item.kind is not Kind.HEARTBEAT:
                self._alarm_size += size
                self._drain_episode_in_order(item)
                self._after_put(item)

    def _drain_episode_in_order(self, item: OutboxItem) -> None:
        """An episode's events leave in seq order: its waiting events are raised to the newest one's
        priority (which only rises), so after an outage an escalation's HIGH update does not overtake
        its MEDIUM start; within a priority they go oldest first. Ids are ``{episode id}:{seq}``."""
        episode = item.id.rpartition(":")[0]
        self._db.execute(
            "UPDATE outbox SET rank=? WHERE id >= ? AND id < ? AND rank > ? AND state='pending'",
            (item.rank, f"{episode}:", f"{episode};", item.rank),  # ';' follows ':' in ASCII
        )

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
