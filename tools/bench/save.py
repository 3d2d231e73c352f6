"""Save: what the heartbeat's full state save costs on the event loop, in an alarm storm.

The daemon saves `pipeline.json` (every detector's per-stream state and every open alarm episode) with
each heartbeat, on the event loop, so a slow save stalls the pipeline and sets the latency's tail in a
storm (docs/benchmarks.md, "Latency"). Here the bench's vitals workload with its fault episodes runs
through a `Pipeline` for `warmup_s` simulated seconds (many episodes open), then the state is built as
`_Session.save_state` builds it and written with the daemon's own `write_state` (plain or sealed), in a
temporary folder on the same disk as the system's temp directory. Figures are medians of `runs`.
"""

from __future__ import annotations

import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.pipeline import Pipeline
from agent.sealing import Sealer
from agent.state_file import sealed_path, write_state
from tools.bench.scenarios import vitals_config, workload


def save_cost(streams: int, runs: int = 3, warmup_s: float = 70.0, sealed: bool = False) -> dict[str, Any]:
    load = workload("vitals", streams, warmup_s + 5.0, True)
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = Pipeline(vitals_config(Path(tmp), instant=True), lambda device: "p-" + device)
        for start in range(0, int(warmup_s), 10):
            pipeline.ingest(load.readings(start, start + 10))
        print(f"save: {streams} streams after {warmup_s:g} s with faults", file=sys.stderr)
        sealer = Sealer(secrets.token_bytes(32)) if sealed else None
        path = Path(tmp) / "pipeline.json"
        build_ms, write_ms = [], []
        for _ in range(runs):
            t = time.perf_counter()
            alarms = pipeline.alarm_state()
            state = {"detectors": pipeline.detector_state(), "alarms": alarms, "journal": "x"}
            build_ms.append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            write_state(path, state, sealer)
            write_ms.append((time.perf_counter() - t) * 1e3)
        size = (sealed_path(path) if sealed else path).stat().st_size
        alarm_rows = sum(len(book.get("streams", ())) for book in alarms.values())
    return {
        "streams": streams,
        "sealed": sealed,
        "alarm_rows": alarm_rows,
        "file_mb": round(size / 1e6, 2),
        "build_ms": round(statistics.median(build_ms), 1),
        "write_state_ms": round(statistics.median(write_ms), 1),
        "on_the_loop_ms": round(statistics.median(b + w for b, w in zip(build_ms, write_ms, strict=True)), 1),
    }
