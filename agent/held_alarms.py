"""Alarm events the outbox cannot take right now (a full disk, an I/O error), held in memory.

A full SD card used to end the agent: the outbox's commit raised, the pipeline's task ended, the
events of that turn were gone, and the process exited. Now a failed commit keeps the events, in
order, and the next commit (every pipeline turn, and the gateway's check every second) carries them
with the new ones, episode note included, so the outbox sees the same sequence as if nothing had
failed. The agent goes on detecting meanwhile. What is held lives only in memory: a crash or a stop
while the disk is full loses it, which is why the gateway raises `outbox_unwritable` and the log
says how many wait. Beyond `MAX_HELD` the oldest are dropped and counted.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from agent.events import AlarmEvent
from agent.link_trouble import LinkTrouble, Tell
from agent.read_only import remedy

MAX_HELD = 10_000  # events; a few MB. Past this the oldest are dropped (counted, logged)
log = logging.getLogger(__name__)

# What a failed write raises: SQLite's "database or disk is full", "disk I/O error", a read-only or
# locked file. A damaged file (plain DatabaseError) is not held over: a restart sets it aside.
WRITE_ERRORS = (sqlite3.OperationalError, OSError)


class HeldAlarms:
    """Commits alarm events through `put` (the outbox's `put_alarms` with its note), holding them
    while it fails."""

    def __init__(self, put: Callable[[Sequence[AlarmEvent]], object], where: str) -> None:
        self._put = put
        self._where = where  # the outbox file, for the log line
        self._held: list[AlarmEvent] = []
        self._trouble = LinkTrouble()
        self.dropped = 0  # held events dropped past MAX_HELD, since start

    @property
    def count(self) -> int:
        return len(self._held)

    def events(self) -> list[AlarmEvent]:
        """The held events, oldest first."""
        return list(self._held)

    def commit(self, events: Sequence[AlarmEvent]) -> list[AlarmEvent]:
        """Commit the held events, then `events`, in one transaction. Returns what was committed now
        ([] when the write failed and everything is held)."""
        batch = [*self._held, *events]
        if not batch:
            return []
        try:
            self._put(batch)
        except WRITE_ERRORS as exc:
            self._hold(batch, exc)
            return []
        if self._held:
            log.warning(
                "the outbox %s takes writes again%s: %d held alarm event(s) committed",
                self._where,
                self._trouble.recovered(),
                len(self._held),
            )
        self._held = []
        return batch

    def _hold(self, batch: list[AlarmEvent], exc: Exception) -> None:
        over = len(batch) - MAX_HELD
        if over > 0:
            self.dropped += over
            batch = batch[over:]
            log.error("%d held alarm event(s) dropped, the oldest: more than %d wait", over, MAX_HELD)
        self._held = batch
        tell = self._trouble.failed(str(exc))
        if tell is not Tell.QUIET:
            log.error(
                "cannot write the outbox %s (%s): %d alarm event(s) held in memory and retried every "
                "second; %s. Detection goes on; a stop now loses what is held",
                self._where,
                exc,
                len(batch),
                remedy(Path(self._where).parent),
            )
