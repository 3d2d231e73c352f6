"""Rounds of readings written at once (`StreamPipeline.rounds`: single samples, or frames of one length)
give exactly what `_ingest` gives reading by reading: the same alarm events (every field), detector
scores and state, alarm state, sample counters and windows, for the benchmark's vitals and ECG
workloads and for odd readings (gaps, a clock going back, repeats, NaN, flags, multi-sample frames,
streams appearing mid-batch), in batches of many sizes."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.config import AgentConfig, parse_config
from agent.pipeline import Pipeline
from agent.pipeline.stream import MIN_ROUND
from agent.pipeline.windows import StreamWindows
from agent.readings import Quality, Reading
from tools.bench.scenarios import ecg_config, vitals_config, workload

# Batch sizes fed in turn: single readings, runs shorter and longer than MIN_ROUND, one round of 300
# streams and a reading either side of it, and the daemon's drain.
BATCHES = (1, 3, MIN_ROUND - 1, MIN_ROUND, 40, 299, 300, 301, 777, 2001)
CHANNELS = ("hr", "spo2", "skin_temp")


@dataclasses.dataclass
class Outcome:
    events: list[dict[str, Any]]
    detectors: dict[str, Any]
    alarms: dict[str, Any]
    counters: tuple[int, int]
    windows: np.ndarray[Any, Any]
    ready: np.ndarray[Any, Any]
    rows_in_rounds: int  # samples written by `append_rows`
    wraps: int  # of them, samples that first shifted their row to the buffer's front
    frames_in_rounds: int  # readings written by `append_frames`
    scores: list[np.ndarray[Any, Any]]  # every score array the detectors returned, in call order


def run(
    config: AgentConfig,
    readings: Sequence[Reading],
    rounds: bool,
    monkeypatch: pytest.MonkeyPatch,
    pseudonym: Callable[[str], str] = lambda d: f"p-{d}",
    name: str = "vitals",
    batches: Sequence[int] = BATCHES,
) -> Outcome:
    # Episode ids numbered in creation order (they are random UUIDv7s), so two runs compare.
    counter = itertools.count()
    monkeypatch.setattr("agent.alarms.book.uuid7", lambda: uuid.UUID(int=next(counter)))
    rows = [0, 0]
    append_rows = StreamWindows.append_rows

    def counting(self: StreamWindows, slots: Any, values: Any, times: Any) -> None:
        rows[0] += len(slots)
        rows[1] += int((self._pos[slots] >= 2 * self.window).sum())
        append_rows(self, slots, values, times)

    monkeypatch.setattr(StreamWindows, "append_rows", counting)
    frames = [0]
    append_frames = StreamWindows.append_frames

    def counting_frames(self: StreamWindows, slots: Any, values: Any, times: Any, periods: Any) -> None:
        frames[0] += len(slots)
        append_frames(self, slots, values, times, periods)

    monkeypatch.setattr(StreamWindows, "append_frames", counting_frames)
    pipeline = Pipeline(config, pseudonym)
    scores: list[np.ndarray[Any, Any]] = []
    for detector in pipeline.detectors:
        scores_of = detector.score

        def recording(block: Any, scores_of: Any = scores_of) -> Any:
            got = scores_of(block)
            scores.append(got.scores.copy())
            return got

        monkeypatch.setattr(detector, "score", recording)
    stream = pipeline.streams[name]
    stream.rounds = rounds
    events = []
    i = 0
    for size in itertools.cycle(batches):
        if i >= len(readings):
            break
        events += pipeline.ingest(readings[i : i + size])
        i += size
    slots = np.arange(len(stream.windows.streams), dtype=np.int64)
    return Outcome(
        [dataclasses.asdict(e) for e in events],
        pipeline.detector_state(),
        pipeline.alarm_state(),
        (stream.samples, stream.gated_samples),
        stream.windows.windows(slots),
        stream.windows.ready(slots),
        rows[0],
        rows[1],
        frames[0],
        scores,
    )


def assert_same(fast: Outcome, slow: Outcome) -> None:
    assert len(fast.events) == len(slow.events)
    np.testing.assert_equal(fast.events, slow.events)  # NaN equals NaN here, unlike in ==
    np.testing.assert_equal(fast.detectors, slow.detectors)
    np.testing.assert_equal(fast.alarms, slow.alarms)
    assert fast.counters == slow.counters
    np.testing.assert_array_equal(fast.windows, slow.windows)
    np.testing.assert_array_equal(fast.ready, slow.ready)
    assert len(fast.scores) == len(slow.scores)
    for got, want in zip(fast.scores, slow.scores, strict=True):
        np.testing.assert_array_equal(got, want)  # exactly: the same windows in the same calls


def _gapped(readings: list[Reading]) -> list[Reading]:
    """Some streams drop out for a few seconds (the workload has no gaps of its own)."""
    return [
        r for i, r in enumerate(readings) if not (int(r.stream[3:8]) % 7 == 0 and 40 <= (i // 300) % 60 < 44)
    ]


@pytest.mark.parametrize("gaps", [False, True])
def test_vitals_workload_is_the_same_through_rounds(
    gaps: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load = workload("vitals", 300, 120)
    readings = load.readings(0, load.steps)
    if gaps:
        readings = _gapped(readings)
    config = vitals_config(tmp_path)
    fast = run(config, readings, True, monkeypatch)
    slow = run(config, readings, False, monkeypatch)
    assert_same(fast, slow)
    assert len(fast.events) > 20  # physiological and technical alarms happened
    assert any(e["kind"] == "technical" for e in fast.events)
    assert fast.rows_in_rounds > 0.8 * len(readings)  # the rounds did the work
    assert slow.rows_in_rounds == 0


def odd_config(tmp_path: Path, above: float = 76.0, z: float = 4.0) -> AgentConfig:
    """A limit detector scoring every sample and a robust z-score every 3: two hop groups."""
    raw = {
        "gateway": {"id": "gw", "site": "s"},
        "mqtt": {"url": "mqtt://127.0.0.1:1883"},
        "outbox": {"path": "outbox.sqlite"},
        "devices": [{"id": "dev", "kind": "wearable", "transport": "simulator"}],
        "detectors": [
            {"id": "hi", "type": "limit", "stream": "vitals", "channels": ["hr"], "params": {"above": above}},
            {
                "id": "z",
                "type": "robust_z",
                "stream": "vitals",
                "channels": ["hr", "spo2"],
                "params": {"window_s": 20, "hop_s": 3, "threshold": z},
            },
        ],
        "alarms": [
            {"condition": "high", "detector": "hi", "min_duration_s": 2, "clear_after_s": 2},
            {"condition": "odd", "detector": "z", "min_duration_s": 0, "clear_after_s": 3},
        ],
    }
    return parse_config(raw, base_dir=tmp_path)


def odd_rounds(seed: int, streams: int = 48, steps: int = 400, lost_every: int = 3) -> list[Reading]:
    """Rounds of 1 Hz readings, now and then in another order, with the odd kinds of
    tests/detectors/test_odd_readings.py mixed in; stream s starts at step s, so streams appear in the
    middle of batches; every `lost_every`-th stream loses contact for steps 60-84."""
    rng = np.random.default_rng(seed)
    clock = [1.8e9 + s * 0.37 for s in range(streams)]
    out = []
    for step in range(steps):
        order = rng.permutation(streams) if rng.random() < 0.1 else range(streams)  # now and then shuffled
        for s in list(order):
            if step < s or rng.random() < 0.02:  # not yet, or a missed reading
                continue
            for _ in range(2 if rng.random() < 0.01 else 1):  # sometimes sent twice
                n = 1 if rng.random() < 0.98 else int(rng.choice([2, 3, 7]))
                values = 70 + rng.normal(0, 3, (n, len(CHANNELS)))
                kind = rng.random()
                if kind < 0.03:
                    values[:] = np.nan
                elif kind < 0.06:
                    values[rng.random(values.shape) < 0.5] = np.nan
                elif kind < 0.07:
                    values[:] = 1e12
                elif kind < 0.08:
                    values[0, 0] = np.inf
                kind = rng.random()
                period = 1.0 if n > 1 else 0.0
                if n == 1 and kind < 0.02:
                    period = float(rng.choice([0.5, 2.0, -1.0, math.inf]))  # a period of its own
                kind = rng.random()
                gap = n * 1.0
                if kind < 0.02:
                    gap += rng.uniform(2, 40)  # a dropout
                elif kind < 0.03:
                    gap = -rng.uniform(0, 10)  # the device clock goes back
                elif kind < 0.04:
                    gap = 0.0  # the same time again
                clock[s] += gap
                flags = Quality(int(rng.choice([1, 2, 8, 32]))) if rng.random() < 0.05 else Quality.OK
                if s % lost_every == 0 and 60 <= step < 85:
                    flags |= Quality.NO_CONTACT
                out.append(Reading(f"dev{s:02d}/vitals", CHANNELS, values, clock[s], 0.0, period, flags))
    return out


@pytest.mark.parametrize("changes_kept", [10_000, 0])  # 0: the rounds re-read every engaged stream
def test_odd_readings_are_the_same_through_rounds(
    changes_kept: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agent.pipeline.stream.MIN_ROUND", 8)  # more and shorter runs of both kinds
    monkeypatch.setattr("agent.pipeline.technical.MAX_CHANGES_KEPT", changes_kept)
    readings = odd_rounds(seed=7)
    config = odd_config(tmp_path)
    fast = run(config, readings, True, monkeypatch)
    slow = run(config, readings, False, monkeypatch)
    assert_same(fast, slow)
    singles = sum(r.n_samples == 1 for r in readings)
    assert 0.5 * singles < fast.rows_in_rounds < singles  # rounds, and readings they left to `_ingest`
    assert fast.wraps > 0
    assert len(fast.events) > 20
    assert any(e["condition"] == "sensor_off" for e in fast.events)
    assert fast.counters[1] > 0


def test_streams_sharing_a_pseudonym_are_noted_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two devices under one pseudonym share alarm rows: each reading of either may step the other's
    quality alarm. (The physiological books do not take two streams of one reference in one update,
    with or without rounds, so their rules here never fire.)"""
    monkeypatch.setattr("agent.pipeline.stream.MIN_ROUND", 8)
    readings = odd_rounds(seed=8, steps=120, lost_every=1)
    config = odd_config(tmp_path, above=1e6, z=1e6)
    fast = run(config, readings, True, monkeypatch, lambda d: "one")
    slow = run(config, readings, False, monkeypatch, lambda d: "one")
    assert_same(fast, slow)
    assert fast.rows_in_rounds > 0
    assert any(e["condition"] == "sensor_off" for e in fast.events)


def test_append_rows_equals_append_across_the_buffer_end() -> None:
    """One sample per stream per round through both, over many wraps of a small buffer."""
    rng = np.random.default_rng(3)
    one, many = StreamWindows(("a", "b"), 3), StreamWindows(("a", "b"), 3)
    for name in "pqrst":
        one.slot(name), many.slot(name)
    slots = np.arange(5, dtype=np.int64)
    t = 100.0
    for step in range(40):
        picked = slots[rng.random(5) < 0.7]
        rows = rng.normal(size=(picked.size, 2))
        t += 1.0
        for k, slot in enumerate(picked.tolist()):
            one.append(slot, rows[k : k + 1], t, 1.0)
        if step == 0:  # the first sample of a stream has no last time: not one `append_rows` may take
            assert not many.continues(picked, np.full(picked.size, t), np.ones(picked.size)).any()
            for k, slot in enumerate(picked.tolist()):
                many.append(slot, rows[k : k + 1], t, 1.0)
            continue
        times = np.full(picked.size, t)
        ok = many.continues(picked, times, np.ones(picked.size))
        for k, slot in enumerate(picked.tolist()):
            if not ok[k]:
                many.append(slot, rows[k : k + 1], t, 1.0)
        many.append_rows(picked[ok], rows[ok], times[ok])
        for length in (1, 3):
            np.testing.assert_array_equal(many.windows(slots, length), one.windows(slots, length))
        np.testing.assert_array_equal(many.ready(slots), one.ready(slots))
        assert (
            many.continues(slots, np.full(5, t + 1), np.ones(5)).tolist()
            == one.continues(slots, np.full(5, t + 1), np.ones(5)).tolist()
        )


def test_restored_episodes_are_the_same_through_rounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saved mid-storm and restored into fresh pipelines (a restart): the streams whose technical
    episodes were open are watched by the rounds from their first reading after the restart."""
    load = workload("vitals", 300, 150)
    readings = load.readings(0, load.steps)
    cut = len(readings) // 2
    config = vitals_config(tmp_path)
    counter = itertools.count()
    monkeypatch.setattr("agent.alarms.book.uuid7", lambda: uuid.UUID(int=next(counter)))
    before = Pipeline(config, lambda d: f"p-{d}")
    before.ingest(readings[:cut])
    saved_detectors = json.loads(json.dumps(before.detector_state()))
    saved_alarms = json.loads(json.dumps(before.alarm_state()))
    open_technical = [
        row for key, book in saved_alarms.items() if key.startswith("builtin.") for row in book["streams"]
    ]
    assert any(row["state"] != "NORMAL" for row in open_technical)  # the case under test
    # The devices with an open episode come back 20 s after the others: their streams get slots after
    # the rounds have started watching.
    engaged = [row for row in open_technical if row["state"] != "NORMAL"]
    late = {f"{row['device'].removeprefix('p-')}/vitals" for row in engaged}
    resumed = readings[cut : cut + 20 * 300]
    rest = [r for r in resumed if r.stream not in late] + readings[cut + 20 * 300 :]
    outcomes = []
    for rounds in (True, False):
        counter = itertools.count(10**6)  # new episodes numbered alike in both runs
        pipeline = Pipeline(config, lambda d: f"p-{d}")
        pipeline.load_state(saved_detectors, saved_alarms)
        pipeline.streams["vitals"].rounds = rounds
        events = []
        for i in range(0, len(rest), 2001):
            events += pipeline.ingest(rest[i : i + 2001])
        outcomes.append(([dataclasses.asdict(e) for e in events], pipeline.alarm_state()))
    (fast_events, fast_alarms), (slow_events, slow_alarms) = outcomes
    assert len(fast_events) == len(slow_events) > 10
    np.testing.assert_equal(fast_events, slow_events)
    np.testing.assert_equal(fast_alarms, slow_alarms)
    assert any(e["condition"] == "sensor_off" and e["phase"].value == "end" for e in fast_events)


class CountingDict(dict[str, int]):
    """The stream pipeline's slot table, counting lookups."""

    gets = 0

    def get(self, key: str, default: Any = None) -> Any:
        CountingDict.gets += 1
        return super().get(key, default)


def test_looking_for_rounds_costs_a_few_lookups_a_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of 5,000 streams never seen before (the daemon's first turns after a start, or the
    bench's warm-up of 600,000 readings) has no round until their second reading: each reading goes
    through `_ingest`, and looking for a round after it must not look through the rest of the batch."""
    load = workload("vitals", 5000, 3)
    readings = load.readings(0, 2)
    pipeline = Pipeline(vitals_config(tmp_path), lambda d: f"p-{d}")
    stream = pipeline.streams["vitals"]
    stream._slots = CountingDict()
    monkeypatch.setattr(CountingDict, "gets", 0)
    pipeline.ingest(readings)
    assert len(stream._slots) == 5000
    assert CountingDict.gets < 100 * len(readings)  # ~64 per new stream, then 1 per reading of a round
    assert stream.samples == len(readings)


def _odd_frames(readings: list[Reading], seed: int) -> list[Reading]:
    """The ECG workload with some frames lost (gaps to fill), some flagged or NaN, some sent twice, a
    few with a spacing of their own (another rate) and clocks that go back now and then."""
    rng = np.random.default_rng(seed)
    out = []
    for r in readings:
        kind = rng.random()
        if kind < 0.01:
            continue  # lost: the stream's next frame starts after a gap
        values, period, wall, flags = r.values, r.period_s, r.wall_time, r.quality
        if kind < 0.02:
            values = np.full_like(values, np.nan)
        elif kind < 0.03:
            flags |= Quality(int(rng.choice([1, 2, 8, 32])))
        elif kind < 0.035:
            period = float(rng.choice([2 * period, period / 2]))
        elif kind < 0.04:
            wall -= rng.uniform(0, 1)
        out.append(Reading(r.stream, r.channels, values, wall, r.monotonic, period, flags))
        if rng.random() < 0.005:
            out.append(out[-1])
    return out


@pytest.mark.parametrize("frame", [8, 25, 73, 300])
@pytest.mark.parametrize("odd", [False, True])
def test_ecg_frames_are_the_same_through_rounds(
    frame: int, odd: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frames of one length (an ECG backlog: one hop, the simulator's 25-sample blocks, a Polar H10's 73,
    and more than the window buffer shows) go through rounds too, with the same outcome to the last
    score; the autoencoder scores every window."""
    load = workload("ecg", 60, 12.0 if frame < 100 else 60.0, frame=frame)
    readings = load.readings(0, load.steps)
    if odd:
        readings = _odd_frames(readings, seed=frame)
    # ecg-beat's 64-sample window: a verdict within 0.26 s of every start and gap in these 12 s (the
    # bench's default ecg-window needs 2 s); the rounds do not depend on the model
    config = ecg_config(tmp_path, model="ecg-beat")
    batches = (1, 7, MIN_ROUND, 59, 60, 61, 300, 2001)
    fast = run(config, readings, True, monkeypatch, name="ecg", batches=batches)
    slow = run(config, readings, False, monkeypatch, name="ecg", batches=batches)
    assert_same(fast, slow)
    assert fast.frames_in_rounds > (0.3 if odd else 0.8) * len(readings)  # the rounds did the work
    assert slow.frames_in_rounds == 0
    assert sum(np.isfinite(s).sum() for s in fast.scores) > 0.5 * len(readings)  # a verdict a frame, most
    assert len(fast.events) > 5
    assert fast.counters[1] > 0  # flagged frames were gated


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6])
def test_append_frames_equals_append_across_the_buffer_end(n: int) -> None:
    """One frame of n samples per stream per round through both (window 4: frames shorter than it, as
    long and longer), over many wraps of the small buffer; a stream skipping a round has a gap, which
    `append_frames` may not take."""
    rng = np.random.default_rng(n)
    one, many = StreamWindows(("a", "b"), 4), StreamWindows(("a", "b"), 4)
    for name in "pqrst":
        one.slot(name), many.slot(name)
    slots = np.arange(5, dtype=np.int64)
    periods = np.array([0.25, 0.5, 0.25, 0.5, 1.0])
    taken = 0
    for step in range(60):
        picked = slots[rng.random(5) < 0.8]
        frames = rng.normal(size=(picked.size, n, 2))
        times = 100.0 + step * n * periods[picked]  # every stream's frames back to back
        ok = many.continues(picked, times, periods[picked])
        for k, slot in enumerate(picked.tolist()):
            one.append(slot, frames[k], times[k], periods[slot])
            if not ok[k]:
                many.append(slot, frames[k], times[k], periods[slot])
        many.append_frames(picked[ok], frames[ok], times[ok], periods[picked][ok])
        taken += int(ok.sum())
        for length in (1, 4):
            np.testing.assert_array_equal(many.windows(slots, length), one.windows(slots, length))
        np.testing.assert_array_equal(many.ready(slots), one.ready(slots))
        assert many._last_time == one._last_time
    assert taken > 100  # of ~240 frames: the rest came after a skipped round (a gap) or were first
