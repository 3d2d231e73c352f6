"""Save: what the heartbeat's full state save costs the event loop, in an alarm storm.

The daemon saves `pipeline.json` (every detector's per-stream state and every open alarm episode) with
each heartbeat. Its snapshot is taken on the event loop; the conversion to JSON, encoding, sealing and
fsynced write run in a thread (`agent.state_saver`). Here the bench's vitals workload with its fault
episodes runs through a `Pipeline` for `warmup_s` simulated seconds (many episodes open); then, per
run, the snapshot is taken as `_Session.state_snapshot` takes it (timed: `snapshot_ms`, all of it on
the loop) and saved with the daemon's `StateSaver.save_in_thread` while a task on the same loop wakes
every millisecond and records how late it woke (`loop_stall_ms`: the longest the save kept the loop from
running, through the GIL; `thread_ms`: how long the save took), and as long again without a save
(`idle_stall_ms`: the same ticker's longest lateness with nothing beside it, the machine's own noise).
As in the daemon (`agent.gc_pacing`), the objects of the warm-up are collected once and frozen, so the
garbage collector's passes do not walk them. A temporary folder on the same disk as the system's temp
directory; a real outbox (the notes are dropped after each save). Medians of `runs`.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from agent.config.schema import OutboxConfig
from agent.outbox import Outbox
from agent.pipeline import Pipeline
from agent.state_file import sealed_path
from agent.state_saver import StateSaver
from tools.bench.scenarios import vitals_config, workload

TICK_S = 0.001


def save_cost(streams: int, runs: int = 3, warmup_s: float = 70.0, sealed: bool = False) -> dict[str, Any]:
    load = workload("vitals", streams, warmup_s + 5.0, True)
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = Pipeline(vitals_config(Path(tmp), instant=True), lambda device: "p-" + device)
        for start in range(0, int(warmup_s), 10):
            pipeline.ingest(load.readings(start, start + 10))
        gc.collect()
        gc.freeze()
        print(f"save: {streams} streams after {warmup_s:g} s with faults", file=sys.stderr)
        key_file = Path(tmp) / "outbox.key" if sealed else None  # created on first use
        config = OutboxConfig(Path(tmp) / "outbox.sqlite", encryption_key_file=key_file)
        path = Path(tmp) / "pipeline.json"
        with Outbox(config) as outbox:
            saver = StateSaver(path, outbox)
            figures = [asyncio.run(_one_save(saver, pipeline)) for _ in range(runs)]
        size = (sealed_path(path) if sealed else path).stat().st_size
        alarm_rows = sum(len(book.get("streams", ())) for book in pipeline.alarm_state().values())
    return {
        "streams": streams,
        "sealed": sealed,
        "alarm_rows": alarm_rows,
        "file_mb": round(size / 1e6, 2),
        **{name: round(statistics.median(f[name] for f in figures), 1) for name in figures[0]},
    }


async def _one_save(saver: StateSaver, pipeline: Pipeline) -> dict[str, float]:
    t = time.perf_counter()
    snapshot = saver.snapshot(pipeline.detector_state(), pipeline.alarm_snapshot())
    snapshot_ms = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    loop_stall_ms = await _longest_stall(saver.save_in_thread(snapshot))
    thread_ms = (time.perf_counter() - t) * 1e3
    idle_stall_ms = await _longest_stall(asyncio.sleep(thread_ms / 1e3))
    return {
        "snapshot_ms": snapshot_ms,
        "thread_ms": thread_ms,
        "loop_stall_ms": loop_stall_ms,
        "idle_stall_ms": idle_stall_ms,
    }


async def _longest_stall(work: Coroutine[Any, Any, None]) -> float:
    """Await `work` while a task on the same loop sleeps `TICK_S` at a time: its longest lateness, ms."""
    done = asyncio.Event()
    stalls: list[float] = []

    async def ticker() -> None:
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(TICK_S)
            stalls.append(time.perf_counter() - before - TICK_S)

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # the ticker is running before the work starts
    await work
    done.set()
    await ticking
    return max(stalls) * 1e3
