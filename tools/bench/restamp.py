"""Restamp: what a step of the gateway clock costs when alarms wait in the outbox.

A gateway without a real-time clock queues alarms in the clock it booted with until NTP steps it; the
outbox then moves the times of every alarm this run queued (`agent/outbox/restamping.py`), in one FULL
transaction on the event loop. Each run fills a fresh outbox (in the system's temp directory) with
`alarms` tachycardia events (the disk bench's episodes of start, update and end), times the per-second
call without a step (200 calls, median), then one step of +3 days. Plain and sealed (outbox encryption
at rest). Medians of `runs`.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from agent.config.schema import OutboxConfig
from agent.events import AlarmEvent
from agent.ids import uuid7
from agent.outbox import Outbox
from tools.bench.disk import alarm_event

BOOT = 1_700_000_000.0  # the clock the gateway booted with
STEP_S = 3 * 86_400.0  # NTP's first sync, three days later
TICKS = 200


def restamp_cost(alarms: int, runs: int = 5) -> dict[str, Any]:
    result: dict[str, Any] = {"alarms": alarms, "runs": runs}
    for sealed in (False, True):
        figures = [_one_run(alarms, sealed) for _ in range(runs)]
        kind = "sealed" if sealed else "plain"
        result[f"{kind}_call_without_step_us"] = round(statistics.median(f[0] for f in figures) * 1e6, 1)
        result[f"{kind}_step_ms"] = round(statistics.median(f[1] for f in figures) * 1e3, 1)
        print(f"restamp: {kind} done", file=sys.stderr)
    return result


def _in_episode(n: int, t0: float, episodes: dict[int, str]) -> AlarmEvent:
    """The disk bench's n-th event, its episode's id and onset shared by its three events (one clock
    per episode: `agent/outbox/episode_clock.py`); `episodes`: ids by the number of the first event."""
    first = n - n % 3
    return replace(alarm_event(n, t0 + n), id=episodes[first], onset_time=t0 + first - 12.0)


def _one_run(alarms: int, sealed: bool) -> tuple[float, float]:
    """(median seconds of a call without a step, seconds of the step)."""
    with tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp) / "outbox.key" if sealed else None  # created on first use
        now = [BOOT]
        config = OutboxConfig(Path(tmp) / "outbox.sqlite", 1 << 30, 0.8, encryption_key_file=key_file)
        with Outbox(config, clock=lambda: now[0]) as outbox:
            outbox.follow_clock(0.0, now[0])
            episodes = {first: str(uuid7()) for first in range(0, alarms, 3)}
            for start in range(0, alarms, 500):
                batch = [_in_episode(i, now[0], episodes) for i in range(start, min(alarms, start + 500))]
                outbox.put_alarms(batch, "edge/s/gw/alarm")
            ticks = []
            for _ in range(TICKS):
                t = time.perf_counter()
                outbox.follow_clock(0.0, now[0])
                ticks.append(time.perf_counter() - t)
            now[0] += STEP_S
            t = time.perf_counter()
            moved = outbox.follow_clock(STEP_S, now[0])
            step_s = time.perf_counter() - t
        if moved != alarms:
            raise RuntimeError(f"the step moved {moved} of {alarms} queued alarms")
        return statistics.median(ticks), step_s
