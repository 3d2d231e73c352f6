"""tools/bench drives the real pipeline: tiny runs count what they fed and find what they injected.

No timing is asserted (speed claims live in docs/benchmarks.md); these check that the benchmark measures
the work it says it measures.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from agent.localbroker import LocalBroker
from tools.bench.__main__ import main as bench_main
from tools.bench.latency import timed_run
from tools.bench.scenarios import DISTINCT_SEEDS, ECG_HOP, workload
from tools.bench.throughput import flat_out, runtime_ratio


def test_workload_is_time_ordered_and_tiles_every_stream() -> None:
    load = workload("vitals", 20, 12.0)
    readings = load.readings(0, load.steps)
    times = np.array([r.wall_time for r in readings])
    assert np.all(np.diff(times) >= 0)
    assert {r.stream for r in readings} == {f"dev{s:05d}/vitals" for s in range(20)}
    assert len(readings) == 20 * load.steps
    # copies of one seed play from different points: not all the same value at the same step
    first_step = [r.values[0, 0] for r in load.readings(5, 6)[: 2 * DISTINCT_SEEDS]]
    assert len(set(first_step)) > DISTINCT_SEEDS // 2


@pytest.mark.parametrize(
    ("kind", "frame", "seconds"), [("vitals", 1, 45.0), ("ecg", ECG_HOP, 8.0), ("ecg", 73, 8.0)]
)
def test_input_simulated_apart_is_the_same_readings(kind: str, frame: int, seconds: float) -> None:
    """The memory bench simulates in a forked child and keeps packed arrays: every reading must come
    back equal, field by field and bit by bit, to the one simulated in this process."""
    here = workload(kind, 11, seconds, frame=frame)
    apart = workload(kind, 11, seconds, frame=frame, apart=True)
    assert here.steps == apart.steps > 0
    for a, b in zip(here.readings(0, here.steps), apart.readings(0, apart.steps), strict=True):
        assert (a.stream, a.channels, a.wall_time, a.monotonic, a.period_s) == (
            b.stream,
            b.channels,
            b.wall_time,
            b.monotonic,
            b.period_s,
        )
        assert type(a.quality) is type(b.quality) and a.quality == b.quality
        assert a.values.dtype == b.values.dtype and a.values.tobytes() == b.values.tobytes()
    assert any(r.quality for r in here.readings(0, here.steps))  # the faults are in what was compared


def test_flat_out_counts_the_timed_samples_only() -> None:
    load = workload("vitals", 10, 70.0)
    result = flat_out(load, 60.0)
    assert result.samples == 10 * (load.steps - load.step_of(60.0))
    assert result.readings == result.samples  # vitals: one sample per reading
    assert result.cpu_s > 0


def test_throughput_of_vitals_alone(capsys: pytest.CaptureFixture[str]) -> None:
    """`--ecg-streams 0` skips the ECG runs (the storm comparisons of docs/benchmarks.md time vitals only)."""
    argv = ["throughput", "--runs", "1", "--vitals-streams", "30", "--vitals-seconds", "3"]
    assert bench_main([*argv, "--ecg-streams", "0", "--real-seconds", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"vitals"}
    assert out["vitals"]["timed_samples"] == 30 * 3
    assert out["vitals"]["us_per_sample"] > 0


def test_ecg_runs_the_model_once_per_frame_and_the_ratio_compares_the_same_batches() -> None:
    load = workload("ecg", 4, 3.0)
    assert all(r.n_samples == ECG_HOP and r.channels == ("MLII",) for r in load.readings(0, 5))
    ratio = runtime_ratio(load, 1.0)
    timed_frames = 4 * (load.steps - load.step_of(1.0))
    # a window per frame, except frames of a stream whose window has gaps or no contact (no verdict)
    assert 0.5 * timed_frames <= ratio.windows <= timed_frames
    assert 0 < ratio.bare_cpu_s < ratio.agent_cpu_s


def test_latency_run_times_every_probe_from_arrival_to_puback(mosquitto: LocalBroker, tmp_path: Path) -> None:
    result = asyncio.run(
        timed_run(tmp_path, mosquitto.port, streams=200, seconds=3.0, probes_per_s=4, faults=False)
    )
    assert result["probes"] >= 8
    assert result["probes_acked"] == result["probes"]  # each probe's alarm committed and acknowledged
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]


def test_rss_child_counts_the_gateway_not_the_benchs_simulated_input() -> None:
    """The peak is reset after the input is made, so the simulator's transient peak is not counted,
    and the input's resident share is reported beside it."""
    from tools.bench.memory import _reset_peak_rss, _status, rss_per_backend

    ballast = np.ones(40 * 2**20 // 8)  # 40 MB touched, then freed: raises VmHWM
    del ballast
    assert _status()["VmHWM"] - _status()["VmRSS"] > 30 * 1024
    _reset_peak_rss()
    assert _status()["VmHWM"] - _status()["VmRSS"] < 5 * 1024
    figures = rss_per_backend(5, 5.0, ["onnx"])["onnx"]  # a fresh child, as the bench runs it
    assert figures["input_mb"] >= 0
    assert abs(figures["peak_rss_mb"] - figures["input_mb"] - figures["peak_without_input_mb"]) <= 0.15


def test_save_snapshots_and_writes_the_state_the_daemon_saves(capsys: pytest.CaptureFixture[str]) -> None:
    from tools.bench.save import save_cost

    plain = save_cost(300, runs=1, warmup_s=40.0)
    sealed = save_cost(300, runs=1, warmup_s=40.0, sealed=True)
    for out in (plain, sealed):
        assert out["alarm_rows"] > 0  # the fault episodes left episodes open to save
        assert out["file_mb"] > 0 and out["snapshot_ms"] > 0 and out["thread_ms"] > 0
        assert out["loop_stall_ms"] >= 0 and out["idle_stall_ms"] >= 0
    assert sealed["sealed"] and not plain["sealed"]
    assert "300 streams" in capsys.readouterr().err
