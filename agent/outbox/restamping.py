"""Restamping: alarm events queued before a step of the gateway's wall clock are moved by the step.

Strategy: a gateway without a real-time clock boots in the wrong time and NTP steps it at its first
sync, which in an offline clinic may come days later, when the link is back (docs/robustness.md, "The
gateway clock jumps"). The session notices a step (`agent.clock.ClockSteps`) and calls `follow_clock`
once a second, with the step (0.0 most of the time). On a step, every alarm row this outbox committed
before it that is still pending gets its payload's wall times (`_TIMES`) and its `created` moved by the
step, re-sealed when the outbox is encrypted, all in one FULL transaction: the drain order and the
heartbeat's `oldest_undelivered_age_s` follow, and a restart keeps the correction. Two steps add up.
The `created` of every other row this run put before the step (heartbeats, alarms whose times are kept)
moves too: it is a time of this run's clock, and ages and heartbeat expiry must count real seconds.

Which rows: those with a `seq` above the highest at open (this outbox's: the clock of an earlier
process's rows cannot be known), up to the highest seen at the previous `follow_clock` (certainly before
the step). A row put since then (the second in which the step happened) is judged by its `created`:
before the step if it is nearer the clock before it (`now - step`) than the clock now (after a step back,
one put in that second took the `created` of the alarm before it, and is moved with it). Rows in flight or
acknowledged keep their bytes (a re-send must be byte-identical for the receiver's dedup by id); rows
refused or set aside, heartbeats (only their `created` moves) and rows that do not open keep their bytes.
More than `MOVE_AT_MOST` rows due: none is moved, and an error says so.

Whole episodes only (`episode_clock`): the rows of an episode whose START has left the outbox, or of which
an event is in flight, refused or set aside, keep their times (the back end has, or may have, the episode
in the old clock). An episode that is moved takes its events queued by an earlier run along (the same
onset was carried into this run's events); other rows of an earlier run keep theirs.

Order: an alarm's `created` is never earlier than that of one put before it (`agent.outbox.writing`).
Going through this outbox's alarm rows in `seq` order, each `created` is kept at or above the one before
it and above every alarm of the file at open; the clamp of later puts (`_alarms_created`) follows.
"""

from __future__ import annotations

import logging

from agent.outbox.episode_clock import _EpisodeClock, onset_of, restamped
from agent.outbox.rows import _is_text

__all__ = ["MOVE_AT_MOST", "restamped"]

log = logging.getLogger("agent.outbox")

# One step moves at most this many queued alarms, all in one transaction (each payload rewritten) on the
# event loop. On the development machine: 0.9 s (1.2 s sealed) and 21 MB of WAL for 20,000; 4.7 s (5.0 s)
# for 90,000, about the 64 MiB default bound, which a Raspberry Pi may stretch towards the 30 s watchdog.
# Past it, none are moved (a partial correction would mix two clocks within episodes), and an error says so.
MOVE_AT_MOST = 20_000


class _Restamping(_EpisodeClock):
    """Moving the times of this outbox's queued alarms by a step of the wall clock."""

    _seq_at_open: int  # the highest seq in the file when it was opened: rows above are this outbox's
    _steady_seq: int  # the highest seq at the previous `follow_clock`: rows up to it predate a step now
    _created_at_open: float  # the latest `created` of an alarm in the file when it was opened

    def follow_clock(self, step: float, now: float) -> int:
        """Called once a second with the step of the wall clock noticed since the previous call (0.0:
        none) and the wall clock now. On a step, this outbox's pending alarm rows put before it are moved
        by it, durably (see the module's docstring). Returns how many were moved."""
        with self._lock:
            if step:
                with self._transaction("FULL"):  # alarms: the correction survives a power cut
                    moved, grown, latest = self._restamp(step, now)
                self._size += grown
                self._alarm_size += grown  # every restamped row is an alarm
                self._alarms_created = latest
            else:
                moved = 0
            self._steady_seq = self._highest_seq()
            return moved

    # -- internals (lock held) --------------------------------------------------------------------

    def _highest_seq(self) -> int:
        return int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()[0])

    def _restamp(self, step: float, now: float) -> tuple[int, int, float]:
        """In the open transaction: move the rows due. Returns how many were moved, the bytes they grew
        by and the latest `created` of an alarm left in the file."""
        rows = self._db.execute(
            "SELECT seq, id, created, state FROM outbox WHERE seq > ? AND kind != 'heartbeat' "
            "AND typeof(created) IN ('real', 'integer') ORDER BY seq",
            (self._seq_at_open,),
        ).fetchall()
        put_before = {  # put by this run before the step: `created` moves with it (ages, expiry)
            seq
            for seq, _, created, _ in rows
            if seq <= self._steady_seq or abs(created - (now - step)) < abs(created - now)
        }
        before_step = {
            seq: str(item_id).rpartition(":")[0]
            for seq, item_id, _, state in rows
            if seq in put_before
            and state == "pending"
            and _is_text(item_id)
            and not self._handed_out(item_id)
        }
        # An episode with an event put since the step was brought into one clock by that put
        # (`episode_clock`: the stream's book had already moved its onset, up to a second before this
        # call): moved again here, it would be off by the step twice.
        put_since = {
            str(item_id).rpartition(":")[0]
            for seq, item_id, _, _ in rows
            if seq not in put_before and _is_text(item_id)
        }
        # Whole episodes only: one whose START has left (or an event is in flight, refused, set
        # aside) keeps the clock the back end has it in (`episode_clock`).
        whole = {
            episode
            for episode in set(before_step.values())
            if episode not in put_since and self._queued_whole(episode)
        }
        due = {seq for seq, episode in before_step.items() if episode in whole}
        if len(due) > MOVE_AT_MOST:
            log.error(
                "outbox %s: %d queued alarm events predate the clock's step of %+.0f s, more than the %d "
                "moved at once (one transaction rewrites them all): they keep their times",
                self.path,
                len(due),
                step,
                MOVE_AT_MOST,
            )
            due.clear()
        floor = self._created_at_open
        moved = grown = 0
        for seq, _, created, _ in rows:
            restamped_row = self._restamped_row(seq, step) if seq in due else None
            new_created = max(floor, created + step if seq in put_before else created)
            floor = new_created
            if restamped_row is not None:
                payload, growth = restamped_row
                self._db.execute(
                    "UPDATE outbox SET payload=?, created=?, size=size+? WHERE seq=?",
                    (payload, new_created, growth, seq),
                )
                moved += 1
                grown += growth
            elif new_created != created:  # its times kept (in flight, ...): its age and drain order move
                self._db.execute("UPDATE outbox SET created=? WHERE seq=?", (new_created, seq))
        self._db.execute(  # this run's heartbeats too: their age and expiry count real seconds
            "UPDATE outbox SET created=created+? WHERE kind='heartbeat' AND seq > ? AND typeof(created) "
            "IN ('real', 'integer') AND (seq <= ? OR abs(created - ?) < abs(created - ?))",
            (step, self._seq_at_open, self._steady_seq, now - step, now),
        )
        for episode in {before_step[seq] for seq in due}:  # its START and events of an earlier run too
            moved += self._to_its_moved_onset(episode, due)
        return moved, grown, floor

    def _to_its_moved_onset(self, episode: str, due: set[int]) -> int:
        """After a step moved `due` rows of `episode`: its other queued events (put by an earlier run,
        which carried the same onset into this one) join their onset, and so does the onset kept for it
        (`episode_clock`). Returns how many more were moved."""
        rows = self._episode_rows(episode)
        others = any(seq not in due for seq, _, _ in rows)
        if not others and not self._kept_onset(episode):
            return 0  # the common case: nothing else to open
        payload = self._payload_of(next(seq for seq, _, _ in rows if seq in due))
        onset = None if payload is None else onset_of(payload)
        if onset is None:
            return 0
        if others:
            return self._one_onset(episode, onset)
        self._move_kept_onset(episode, onset)
        return 0
