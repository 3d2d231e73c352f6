"""The ECG → RR stage (agent.ecg.rr_from_ecg) with a scripted beat finder: what it does around the detector.

The finder here reports R peaks at known sample indices, `delay` samples late, as the real detector
(tests/ecg/test_qrs.py) would; these tests pin the stage's own rules: intervals by sample count, stamps
from the block that holds the peak, no interval across a gap or a NaN, flagged ECG told on the RR stream,
the device's own RR replaced.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from agent.config.schema import BeatsConfig
from agent.ecg.rr_from_ecg import HoleEnds, RrFromEcg
from agent.readings import Quality, Reading

RATE = 250.0
T0 = 1_800_000_000.0


class ScriptedFinder:
    """Reports each scripted peak (an index since this finder started) once `delay` samples followed it."""

    delay_s = 0.4

    def __init__(self, peaks: list[int]) -> None:
        self.peaks = peaks
        self.fed = 0

    def feed(self, samples: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        before, self.fed = self.fed, self.fed + len(samples)
        lag = round(self.delay_s * RATE)
        return np.array([p for p in self.peaks if before <= p + lag < self.fed], dtype=np.int64)


def stage_with(*scripts: list[int]) -> tuple[RrFromEcg, list[ScriptedFinder]]:
    """A stage whose n-th detector (after n - 1 restarts) reports scripts[n]."""
    made: list[ScriptedFinder] = []

    def make(rate_hz: float) -> ScriptedFinder:
        assert rate_hz == pytest.approx(RATE)
        finder = ScriptedFinder(scripts[len(made)])
        made.append(finder)
        return finder

    return RrFromEcg("patch", BeatsConfig(), make_finder=make), made


def ecg_blocks(
    n_blocks: int, size: int = 25, start: float = T0, quality: Quality = Quality.OK
) -> list[Reading]:
    return [
        Reading(
            "patch/ecg",
            ("ecg",),
            np.zeros((size, 1)),
            start + i * size / RATE,
            100.0 + i * size / RATE,
            1.0 / RATE,
            quality,
        )
        for i in range(n_blocks)
    ]


def rr_of(readings: list[Reading]) -> list[tuple[float, float, Quality]]:
    return [(r.wall_time, float(r.values[0, 0]), r.quality) for r in readings if r.stream == "patch/rr"]


def run(stage: RrFromEcg, readings: list[Reading]) -> list[Reading]:
    return [out for r in readings for out in stage.take(r)]


def test_intervals_by_sample_count_stamped_at_the_peak_and_ecg_passed_on() -> None:
    stage, _ = stage_with([100, 300, 510, 700])
    blocks = ecg_blocks(40)
    out = run(stage, blocks)
    assert [r for r in out if r.stream == "patch/ecg"] == blocks
    got = rr_of(out)
    assert [rr for _, rr, _ in got] == pytest.approx([200 / RATE, 210 / RATE, 190 / RATE])
    assert [t for t, _, _ in got] == pytest.approx([T0 + p / RATE for p in (300, 510, 700)])
    assert all(q is Quality.OK for _, _, q in got)
    assert (stage.beats, stage.intervals) == (4, 3)


def test_stamps_follow_the_blocks_own_times_while_intervals_follow_the_samples() -> None:
    # BLE stamps frames by arrival: a block 30 ms late is still one signal (< GAP_S), its peak is
    # stamped by that block, and the interval is counted in samples, not from the jittered stamps
    stage, _ = stage_with([10, 260])
    blocks = ecg_blocks(40)
    late = blocks[10]  # holds sample 260 (samples 250..274)
    blocks[10] = Reading(
        late.stream, late.channels, late.values, late.wall_time + 0.03, late.monotonic, late.period_s
    )
    got = rr_of(run(stage, blocks))
    assert got[0][1] == pytest.approx(1.0)
    assert got[0][0] == pytest.approx(T0 + 260 / RATE + 0.03)


def test_no_interval_across_a_gap_flag_or_a_time_jump() -> None:
    for cut in ("flag", "jump"):
        stage, finders = stage_with([100, 300], [50, 250])
        first = ecg_blocks(30)
        start = first[-1].end_time + 1.0 / RATE + (2.0 if cut == "jump" else 0.0)
        second = ecg_blocks(30, start=start, quality=Quality.GAP if cut == "flag" else Quality.OK)
        second = [second[0], *(ecg_blocks(30, start=start)[1:])]
        got = rr_of(run(stage, first + second))
        assert len(finders) == 2 and stage.restarts == 1, cut
        # one interval before the cut, one after: none spanning it
        assert [rr for _, rr, _ in got] == pytest.approx([200 / RATE, 200 / RATE]), cut
        assert got[1][0] == pytest.approx(start + 250 / RATE), cut


def test_no_interval_across_a_nan_sample() -> None:
    stage, _ = stage_with([100, 300, 500])
    blocks = ecg_blocks(40)
    values = blocks[8].values.copy()  # samples 200..224: a NaN at 210, between the peaks 100 and 300
    values[10, 0] = math.nan
    blocks[8] = Reading("patch/ecg", ("ecg",), values, blocks[8].wall_time, blocks[8].monotonic, 1.0 / RATE)
    got = rr_of(run(stage, blocks))
    assert [rr for _, rr, _ in got] == pytest.approx([200 / RATE])  # 300 -> 500 only


def test_flagged_ecg_is_fed_as_nan_and_told_on_the_rr_stream_once_a_second() -> None:
    stage, finders = stage_with([100, 300, 1600, 1800])
    seen: list[npt.NDArray[np.float64]] = []
    real_feed = ScriptedFinder.feed

    def spy(self: ScriptedFinder, samples: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        seen.append(samples.copy())
        return real_feed(self, samples)

    blocks = ecg_blocks(100)
    for i in range(20, 50):  # samples 500..1249: 3 s of electrode off
        b = blocks[i]
        blocks[i] = Reading(
            b.stream, b.channels, b.values, b.wall_time, b.monotonic, b.period_s, Quality.NO_CONTACT
        )
    ScriptedFinder.feed = spy  # type: ignore[method-assign]
    try:
        got = rr_of(run(stage, blocks))
    finally:
        ScriptedFinder.feed = real_feed  # type: ignore[method-assign]
    assert len(finders) == 1
    assert all(np.isnan(s).all() for s in seen[20:50]) and not np.isnan(seen[19]).any()
    flagged = [(t, q) for t, rr, q in got if math.isnan(rr)]
    assert [q for _, q in flagged] == [Quality.NO_CONTACT] * 3
    assert [t - T0 for t, _ in flagged] == pytest.approx([2.0, 3.0, 4.0])
    intervals = [rr for _, rr, _ in got if not math.isnan(rr)]
    assert intervals == pytest.approx([200 / RATE, 200 / RATE])  # 100->300 and 1600->1800; none across


def test_the_devices_own_rr_readings_are_replaced() -> None:
    stage, _ = stage_with([100, 300])
    own = Reading.single("patch/rr", {"rr": 0.8}, T0, 100.0)
    vitals = Reading.single("patch/vitals", {"hr": 70.0}, T0, 100.0)
    assert stage.take(own) == [] and stage.take(vitals) == [vitals]
    assert stage.own_rr_dropped == 1


def test_a_change_of_rate_starts_a_fresh_detector() -> None:
    made: list[float] = []

    def make(rate_hz: float) -> ScriptedFinder:
        made.append(rate_hz)
        return ScriptedFinder([])

    stage = RrFromEcg("patch", BeatsConfig(), make_finder=make)
    run(stage, ecg_blocks(3))
    b = ecg_blocks(1, start=ecg_blocks(4)[3].wall_time)[0]
    stage.take(Reading(b.stream, b.channels, b.values, b.wall_time, b.monotonic, 1.0 / 130.0))
    assert made == pytest.approx([RATE, 130.0])


def test_each_interval_carries_the_rate_over_the_last_eight_since_the_last_hole() -> None:
    peaks = [100 + 200 * i for i in range(12)]  # 0.8 s apart: 75 bpm
    peaks[6] += 50  # one late beat: 1.0 s, then 0.6 s
    stage, _ = stage_with(peaks)
    got = [r for r in run(stage, ecg_blocks(120)) if r.stream == "patch/rr"]
    # the first 8 beats have no shape yet: their readings leave qrs_shape and qrs_core out
    assert [r.channels for r in got[:7]] == [("rr", "hr")] * 7
    assert all(r.channels == ("rr", "hr", "qrs_shape", "qrs_core") for r in got[8:])
    rr = [float(r.values[0, 0]) for r in got]
    hr = [float(r.values[0, 1]) for r in got]
    for i in range(len(got)):
        recent = rr[max(0, i - 7) : i + 1]
        assert hr[i] == pytest.approx(60.0 * len(recent) / sum(recent))
    assert hr[0] == pytest.approx(75.0) and hr[-1] == pytest.approx(75.0)


def test_an_ecg_at_a_rate_the_detector_cannot_work_at_is_passed_on_without_beats(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stage = RrFromEcg("patch", BeatsConfig())  # the real detector: 100..1000 Hz
    slow = [
        Reading("patch/ecg", ("ecg",), np.zeros((50, 1)), T0 + i, 100.0 + i, 1.0 / 50.0) for i in range(5)
    ]
    with caplog.at_level("WARNING"):
        out = run(stage, slow)
    assert out == slow and stage.beats == 0
    assert [r.getMessage() for r in caplog.records] == [
        "patch: no beats found in its ECG: ECG rate 50.0 Hz is outside 100..1000 Hz (devices.<id>.beats)"
    ]


def test_a_block_stamped_early_by_arrival_jitter_is_the_same_signal() -> None:
    # BLE frames are stamped on arrival: after a late one the next overlaps it; no restart, no lost beats
    stage, finders = stage_with([100, 300, 500])
    blocks = ecg_blocks(40)
    for i, shift in ((11, 0.6), (25, -0.6)):  # one frame late, another stamped early
        b = blocks[i]
        blocks[i] = Reading(b.stream, b.channels, b.values, b.wall_time + shift, b.monotonic, b.period_s)
    got = rr_of(run(stage, blocks))
    assert len(finders) == 1 and stage.restarts == 0
    assert [rr for _, rr, _ in got] == pytest.approx([200 / RATE, 200 / RATE])


def test_single_ecg_samples_without_a_spacing_are_told_once(caplog: pytest.LogCaptureFixture) -> None:
    stage, finders = stage_with([])
    lines = [Reading.single("patch/ecg", {"ecg": 0.1}, T0 + i / RATE, 100.0) for i in range(3)]
    with caplog.at_level("WARNING"):
        assert run(stage, lines) == lines
    assert stage.unspaced == 3 and not finders
    assert len(caplog.records) == 1 and "serial.rate_hz" in caplog.records[0].getMessage()


def test_hole_ends_tell_which_intervals_span_a_hole() -> None:
    holes = HoleEnds()
    finite = np.ones(25, dtype=bool)
    finite[[3, 4, 20]] = False  # runs [3, 5) and [20, 21)
    holes.add(100, finite)
    tail = np.ones(25, dtype=bool)
    tail[22:] = False  # a run open at the block's end ...
    holes.add(125, tail)
    head = np.ones(25, dtype=bool)
    head[:2] = False  # ... that goes on into the next block: one run [147, 152)
    holes.add(150, head)
    assert holes.spanned(90, 110) and holes.spanned(104, 121) and not holes.spanned(105, 120)
    assert not holes.spanned(121, 146) and holes.spanned(121, 160) and not holes.spanned(152, 170)
    assert holes.newest() == 152
    holes.forget_before(130)  # only peaks after 130 will be asked about: 121 is the newest end they need
    assert holes.spanned(100, 140) and not holes.spanned(121, 140) and holes.spanned(140, 152)


def test_a_signal_full_of_holes_and_without_beats_keeps_bounded_memory() -> None:
    import tracemalloc

    stage, _ = stage_with([])
    values = np.zeros((25, 1))
    values[12, 0] = np.nan  # a lost sample in every block, and never a beat: 20 minutes of it
    start = T0

    def twenty_minutes() -> None:
        nonlocal start
        for _ in range(12_000):
            stage.take(Reading("patch/ecg", ("ecg",), values, start, 0.0, 1.0 / RATE))
            start += 25 / RATE

    twenty_minutes()  # the first fill what is kept; the next must not add to it
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    twenty_minutes()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 200_000
