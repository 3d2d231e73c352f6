"""tools.bench.capacity: the search finds the largest sustained stream count; a real trial judges by lag.

The search is checked against fake trials with a known capacity (fast, exact); the real trial and the
command lines run a few hundred streams for a few seconds. No timing is asserted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.localbroker import LocalBroker
from tools.bench.__main__ import main as bench_main
from tools.bench.capacity import GRAIN, Trial, judge, next_streams, search, trial_run


def fake(capacity: int, share_per_stream: float = 1e-5) -> tuple[Callable[[int], Trial], list[int]]:
    """A daemon that sustains up to `capacity` streams; its CPU share grows linearly with streams."""
    tried: list[int] = []

    def trial(n: int) -> Trial:
        tried.append(n)
        ok = n <= capacity
        return Trial(n, ok, 0.1 if ok else 5.0, 0.05, 0.02, min(1.0, n * share_per_stream), 10, 1, 0.0, 35.0)

    return trial, tried


@pytest.mark.parametrize("capacity", [4_321, 61_700, 98_000])
@pytest.mark.parametrize("start_share", [0.15, 0.6, 1.0, 1.5])
def test_search_brackets_the_capacity_within_the_tolerance(capacity: int, start_share: float) -> None:
    trial, tried = fake(capacity)
    found = search(trial, round(start_share * capacity), tolerance=0.05, max_trials=12, log=lambda _: None)
    assert found.streams <= capacity  # never reports a count the daemon did not sustain
    assert found.failed_at is not None and found.failed_at > capacity
    assert found.failed_at - found.streams <= max(GRAIN, 0.05 * found.streams)
    assert capacity - found.streams <= 0.05 * capacity + GRAIN
    assert len(tried) == len(found.trials) <= 12
    assert len(set(tried)) == len(tried)  # no count tried twice


def test_search_climbs_by_the_cpu_share_not_blindly() -> None:
    """A first trial at 30 % of a core points the next one near the one-core point (×2 at most)."""
    trial, tried = fake(95_000, share_per_stream=1 / 100_000)
    search(trial, 30_000, max_trials=3, log=lambda _: None)
    assert tried[:2] == [30_000, 60_000]  # 30,000 / 0.3 = 100,000, clamped to ×2
    passed = Trial(50_000, True, 0.1, 0.05, 0.02, 0.8, 10, 1, 0.0, 35.0)
    assert next_streams(passed, None) == 62_500  # 50,000 / 0.8
    busy = Trial(50_000, True, 0.1, 0.05, 0.02, 1.0, 10, 1, 0.0, 35.0)
    assert next_streams(busy, None) == 62_500  # at least +25 %
    failed = Trial(50_000, False, 3.0, 2.0, 2.0, 1.0, 10_000, 1, 0.0, 35.0)
    assert next_streams(None, failed) == 35_000
    assert next_streams(passed, dataclasses.replace(failed, streams=60_000)) == 55_000
    with pytest.raises(ValueError):
        next_streams(None, None)


def test_search_reports_a_lower_bound_or_nothing_when_unbracketed() -> None:
    never_fails, _ = fake(10**9)
    found = search(never_fails, 1_000, max_trials=3, log=lambda _: None)
    assert found.failed_at is None and found.streams == max(t.streams for t in found.trials)
    always_fails, tried = fake(0)
    found = search(always_fails, 1_000, max_trials=5, log=lambda _: None)
    assert found.streams == 0 and found.failed_at == 300
    assert tried == [1_000, 700, 500, 400, 300]  # down by ×0.7 on the grain


def test_search_logs_every_trial() -> None:
    lines: list[str] = []
    trial, tried = fake(5_000)
    search(trial, 4_000, max_trials=4, log=lines.append)
    assert len(lines) == len(tried) == 4
    assert "4000 streams sustained" in lines[0] and "NOT sustained" in lines[1]


def steady(seconds: float = 35.0, lag: float = 0.02, per_s: int = 50) -> list[tuple[float, float]]:
    return [(i / per_s, lag) for i in range(int(seconds * per_s))]


def test_judge_passes_a_steady_lag_and_a_stall_that_drains() -> None:
    assert judge(steady(), 35.0, 0, 1.0).sustained
    # the heartbeat's stall at 29 s: 0.6 s of backlog, drained by 33 s
    stall = [(t, lag + max(0.0, 0.6 - 0.15 * (t - 29.0)) if t >= 29.0 else lag) for t, lag in steady()]
    verdict = judge(stall, 35.0, 0, 1.0)
    assert verdict.sustained and verdict.worst == pytest.approx(0.62) and verdict.growth < 0.01


def test_judge_fails_a_creeping_backlog_a_stall_and_a_backlog_left() -> None:
    creeping = [(t, lag + 0.02 * t) for t, lag in steady()]  # 2 % overload: 0.7 s after 35 s
    verdict = judge(creeping, 35.0, 0, 1.0)
    assert verdict.worst < 1.0 and not verdict.sustained and verdict.growth > 0.5
    stalled = [*steady(), (35.0, 1.5)]
    assert not judge(stalled, 35.0, 0, 1.0).sustained
    assert not judge(steady(), 35.0, 1, 1.0).sustained  # readings still queued after the drain
    assert not judge([], 35.0, 0, 1.0).sustained  # nothing processed at all


def test_real_trial_judges_by_the_lag_of_every_batch(mosquitto: LocalBroker, tmp_path: Path) -> None:
    easy = asyncio.run(trial_run(tmp_path / "a", mosquitto.port, 300, seconds=3.0))
    assert easy.sustained and 0 < easy.max_lag_s <= 1.0
    assert easy.p99_lag_s <= easy.max_lag_s and easy.final_lag_s <= easy.max_lag_s
    assert easy.growth_s <= 0.1
    assert -0.1 <= easy.others_cpu <= (os.cpu_count() or 1)  # the other processes' cores
    assert 2.5 <= easy.seconds <= 4.0 and 0 < easy.cpu_share < 1.0
    # The same run judged by a bound no real batch meets: not sustained.
    strict = asyncio.run(trial_run(tmp_path / "b", mosquitto.port, 300, seconds=2.0, max_lag_s=0.0))
    assert not strict.sustained and strict.max_lag_s > 0


def test_capacity_command_prints_the_search(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["capacity", "--start", "200", "--seconds", "2", "--max-trials", "2"]
    assert bench_main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["trials"][0]["streams"] == 200
    assert len(out["trials"]) == 2 and out["streams"] >= 200  # a few hundred streams are sustained
    assert out["samples_per_s"] == out["streams"] and out["pipeline_capacity_samples_per_s"] > 0


def test_latency_reports_both_capacities(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["latency", "--load", "0.5", "--daemon-streams", "400", "--seconds", "3", "--probes-per-s", "4"]
    assert bench_main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["streams"] == 200 and out["load_base"] == "daemon"  # 50 % of the given 400
    assert out["daemon_capacity_streams"] == 400 and out["pipeline_capacity_samples_per_s"] > 1000
    assert out["probes_acked"] == out["probes"] > 0
    assert -0.1 <= out["other_processes_cpu"] <= (os.cpu_count() or 1)
