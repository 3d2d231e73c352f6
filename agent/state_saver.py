"""The full save of `pipeline.json`, off the event loop, without losing a journal note.

At tens of thousands of streams in an alarm storm the saved state is megabytes; built, encoded and
written on the event loop with each heartbeat it held the pipeline for ~200 ms (75,000 streams), longer
than any other step, and set the latency's tail. So a save is split in two:

- on the event loop, a `StateSnapshot`: the detectors' state, copies of the alarm books' rows
  (`AlarmBook.snapshot`: a few array copies) and the number of the last journal note committed so far,
  which the copied state includes (notes and books only change on the loop);
- in a thread, the rest: the books' rows as JSON, the encoding (in pieces of ~0.5 ms, with a pause
  after each so the loop gets the GIL whenever it wants it: `_give_way`), sealing, the fsynced write
  and then dropping the notes up to that number (`agent.state_journal`), in batches. Notes committed
  meanwhile are numbered above it and stay; a write that fails drops nothing.

Saves are written one at a time and in the order their snapshots were taken: a snapshot older than one
already written is skipped, so a shutdown's last save is never overwritten by a heartbeat's slower one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import state_journal
from agent.alarms import BookSnapshot, merged_state
from agent.ecg import kept_shapes
from agent.held_alarms import WRITE_ERRORS
from agent.outbox import Outbox
from agent.pipeline import bad_share
from agent.state_file import write_state

GIVE_WAY_S = 0.0005


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class StateSnapshot:
    """What one save writes, independent of the live pipeline."""

    detectors: dict[str, Any]
    alarms: dict[str, list[BookSnapshot]]
    notes_included: int  # the number of the last journal note this state includes
    taken: int  # the order in which snapshots were taken
    taken_at: float  # wall time of the snapshot: a restart counts its open episodes' unjudged time from it
    beat_shapes: dict[str, Any]  # the ECG devices' beat-shape templates (agent.ecg.kept_shapes)
    # the signal-quality alarms' intermittent-rule trackers (agent.pipeline.bad_share), copied at `taken_at`
    bad_shares: list[tuple[str, str, str, bad_share.Copy]] = field(default_factory=list)

    def state(self, between: Callable[[], None] = _nothing) -> dict[str, Any]:
        """The JSON-able content of `pipeline.json`."""
        return {
            "detectors": self.detectors,
            "alarms": merged_state(self.alarms, between),
            state_journal.JOURNAL: self.notes_included,
            state_journal.SAVED_AT: self.taken_at,
            kept_shapes.SAVED_KEY: self.beat_shapes,
            bad_share.SAVED_KEY: {"taken_at": self.taken_at, "rows": bad_share.saved_rows(self.bad_shares)},
        }


class StateSaver:
    """Writes `StateSnapshot`s to `path` and drops the journal notes each one includes."""

    def __init__(self, path: Path, outbox: Outbox) -> None:
        self.path = path
        self.outbox = outbox
        self._count = itertools.count()
        self._lock = threading.Lock()  # one write at a time: they share the temporary file
        self._written = -1  # `taken` of the last snapshot written

    def snapshot(
        self,
        detectors: dict[str, Any],
        alarms: dict[str, list[BookSnapshot]],
        beat_shapes: dict[str, Any] | None = None,
        bad_shares: list[tuple[str, str, str, bad_share.Copy]] | None = None,
    ) -> StateSnapshot:
        """Call on the event loop, where notes are committed: the state and the note number agree."""
        included = self.outbox.last_note(state_journal.NOTE)
        return StateSnapshot(
            detectors, alarms, included, next(self._count), time.time(), beat_shapes or {}, bad_shares or []
        )

    def save(self, snapshot: StateSnapshot, between: Callable[[], None] = _nothing) -> None:
        """Write `snapshot` (on the calling thread) unless a later one was written already, calling
        `between()` between pieces of the work. A full disk loses this save, not the agent: the notes
        stay until a later save succeeds (held_alarms). The keys a full disk refused are written first
        (`Outbox.sealer_to_write`): no save before the outbox's is on disk."""
        with self._lock:
            if snapshot.taken < self._written:
                return
            with contextlib.suppress(*WRITE_ERRORS):  # OSError too while a full disk refused the keys
                sealer = self.outbox.sealer_to_write()
                write_state(self.path, snapshot.state(between), sealer, between)
                self._written = snapshot.taken
                self.outbox.drop_notes(state_journal.NOTE, through=snapshot.notes_included)

    async def save_in_thread(self, snapshot: StateSnapshot) -> None:
        await asyncio.to_thread(self.save, snapshot, _give_way)


def _give_way() -> None:
    """Sleep a moment between pieces of work (~0.5 ms each), so that the event loop, if it waits for the
    GIL, takes it and keeps it until it is idle or CPython's switch interval (5 ms) makes it hand the GIL
    back: under load the save gets about a tenth of the CPU, not half (without it, the thread's turns of
    5 ms in every 10 slowed a loop that was already at 80 % of a core enough to fill its queue)."""
    time.sleep(GIVE_WAY_S)
