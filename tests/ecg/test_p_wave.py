"""``p_wave``: the atrial activity of each beat (agent.ecg.p_wave) as the ECG -> RR stage gives it.

A synthetic ECG, built here from a seeded generator: each beat a QRS spike and a T wave; in sinus rhythm a
P wave 0.16 s before the R peak, in AF none but fibrillatory waves (4-9 Hz) instead. The beats are at known
samples (a scripted finder), so the tests pin the stage and the measure, not the QRS detector.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from agent.config.schema import BeatsConfig
from agent.ecg import rr_from_ecg
from agent.ecg.p_wave import (
    MIN_RR_S,
    POINTS,
    AtrialActivity,
    holds_qrs,
    pre_r_segment,
    samples_after,
    samples_needed,
)
from agent.ecg.rr_from_ecg import CHANNELS, RrFromEcg
from agent.readings import Reading

RATE = 250.0
FRAME = 50


class ScriptedFinder:
    """Reports each scripted peak once `delay_s` of samples followed it, as the real detector would."""

    delay_s = 0.4

    def __init__(self, peaks: npt.NDArray[np.int64]) -> None:
        self.peaks = peaks
        self.fed = 0

    def feed(self, samples: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        before, self.fed = self.fed, self.fed + len(samples)
        lag = round(self.delay_s * RATE)
        return self.peaks[(self.peaks + lag >= before) & (self.peaks + lag < self.fed)]


def _bump(t: npt.NDArray[np.float64], at: float, width: float, height: float) -> npt.NDArray[np.float64]:
    return np.asarray(height * np.exp(-0.5 * ((t - at) / width) ** 2), dtype=np.float64)


def synthetic_ecg(
    rr_s: npt.NDArray[np.float64], *, p_waves: bool, seed: int, wide: frozenset[int] = frozenset()
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """(ECG in mV, R-peak samples): beats after the intervals `rr_s` from 1 s in; the beats in `wide`
    (indices) are PVC-like (a wide, tall QRS of the other polarity, no P wave)."""
    rng = np.random.default_rng(seed)
    peaks_s = 1.0 + np.concatenate([[0.0], np.cumsum(rr_s)])
    n = round((peaks_s[-1] + 1.0) * RATE)
    t = np.arange(n) / RATE
    ecg = rng.normal(0.0, 0.01, n)  # small noise
    for k, at in enumerate(peaks_s):
        if k in wide:
            ecg += _bump(t, at, 0.035, -2.0) + _bump(t, at + 0.30, 0.06, 0.4)
            continue
        ecg += _bump(t, at, 0.010, 1.5) + _bump(t, at + 0.25, 0.04, 0.3)
        if p_waves:
            ecg += _bump(t, at - 0.16, 0.025, 0.15)
    if not p_waves:  # fibrillatory waves: a few sines of 4-9 Hz whose frequency and phase wander
        for freq in rng.uniform(4.0, 9.0, 4):
            drift = np.cumsum(rng.normal(0.0, 0.02, n))
            ecg += 0.04 * np.sin(2 * np.pi * freq * t + drift + rng.uniform(0, 2 * np.pi))
    return ecg, np.round(peaks_s * RATE).astype(np.int64)


def p_wave_readings(
    ecg: npt.NDArray[np.float64], peaks: npt.NDArray[np.int64], *, p_wave: bool = True
) -> list[Reading]:
    channels = CHANNELS if p_wave else tuple(c for c in CHANNELS if c != "p_wave")
    stage = RrFromEcg("strap", BeatsConfig(), make_finder=lambda _: ScriptedFinder(peaks), channels=channels)
    out: list[Reading] = []
    for start in range(0, len(ecg), FRAME):
        block = Reading(
            "strap/ecg", ("ecg",), ecg[start : start + FRAME, None], start / RATE, 0.0, 1.0 / RATE
        )
        out += [r for r in stage.take(block) if r.stream == "strap/rr"]
    return out


def p_wave_values(readings: list[Reading]) -> list[float]:
    """The p_wave of each beat reading, NaN where it left the channel out."""
    return [
        float(r.values[0, r.channels.index("p_wave")]) if "p_wave" in r.channels else math.nan
        for r in readings
    ]


def irregular_rr(n: int, seed: int, mean: float = 0.85) -> npt.NDArray[np.float64]:
    return np.random.default_rng(seed).uniform(mean - 0.15, mean + 0.15, n)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_p_waves_read_alike_and_fibrillatory_waves_do_not(seed: int) -> None:
    rr = irregular_rr(60, seed)  # the same intervals: only the atrial activity differs
    sinus = p_wave_values(p_wave_readings(*synthetic_ecg(rr, p_waves=True, seed=seed)))
    af = p_wave_values(p_wave_readings(*synthetic_ecg(rr, p_waves=False, seed=seed)))
    assert np.sum(np.isfinite(sinus)) >= 40 and np.sum(np.isfinite(af)) >= 40
    assert np.nanmedian(sinus) > 0.9
    assert np.nanmedian(af) < 0.4
    assert np.nanpercentile(sinus, 10) > np.nanpercentile(af, 90)


def test_the_values_are_deterministic_to_the_byte() -> None:
    ecg, peaks = synthetic_ecg(irregular_rr(40, 7), p_waves=True, seed=7)
    first = np.array(p_wave_values(p_wave_readings(ecg, peaks)))
    again = np.array(p_wave_values(p_wave_readings(ecg.copy(), peaks.copy())))
    assert first.tobytes() == again.tobytes()


def test_odd_shaped_beats_and_short_intervals_carry_no_p_wave_and_the_rest_do() -> None:
    rr = np.full(50, 0.9)
    rr[29] = 0.5  # beat 30 after a short interval: the previous T wave would be in its segment
    wide = frozenset({20, 40})  # PVC-like beats
    readings = p_wave_readings(*synthetic_ecg(rr, p_waves=True, seed=4, wide=wide))
    by_beat = {round(r.wall_time * RATE): r for r in readings}
    _, peaks = synthetic_ecg(rr, p_waves=True, seed=4, wide=wide)
    for k in (20, 30, 40):
        reading = by_beat[int(peaks[k])]
        assert "qrs_shape" in reading.channels  # the shape is known: p_wave left out, not NaN
        assert "p_wave" not in reading.channels
    assert rr[29] < MIN_RR_S
    later = [by_beat[int(p)] for p in peaks[16:] if int(p) in by_beat]  # 8 normal beats after the shape's 8
    with_p = [r for r in later if "p_wave" in r.channels]
    assert len(with_p) == len(later) - 3
    young = ("rr", "hr", "qrs_shape", "qrs_core", "p_wave", "qrs_width")  # the stream's first 32 beats
    assert all(r.channels in (young, young[:-1]) for r in with_p)
    assert min(float(r.values[0, r.channels.index("p_wave")]) for r in with_p) > 0.9


def test_a_stage_asked_for_no_p_wave_leaves_the_channel_out_and_never_runs_its_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Failed before the stage took `p_wave` (every beats stage computed it, read or not).
    ecg, peaks = synthetic_ecg(irregular_rr(40, 5), p_waves=True, seed=5)
    ecg = np.concatenate([ecg, np.full(round(2 * RATE), np.nan)])  # then no value: a reading says so
    with_p = p_wave_readings(ecg, peaks)

    def not_run(*_: object) -> float:
        raise AssertionError("the p_wave code ran")

    for name in ("holds_qrs", "pre_r_segment", "samples_after", "samples_needed"):
        monkeypatch.setattr(rr_from_ecg, name, not_run)
    monkeypatch.setattr(AtrialActivity, "score", not_run)
    without = p_wave_readings(ecg, peaks, p_wave=False)
    assert any("p_wave" in r.channels for r in with_p)
    assert not any("p_wave" in r.channels for r in without)
    no_value = without[-1]
    assert np.isnan(no_value.values).all()
    assert no_value.channels == ("rr", "hr", "qrs_shape", "qrs_core", "qrs_width")
    # the other channels are those of a stage that computes p_wave
    assert len(without) == len(with_p) >= 35
    for a, b in zip(with_p, without, strict=True):
        kept = [i for i, name in enumerate(a.channels) if name != "p_wave"]
        assert (b.channels, b.wall_time) == (tuple(a.channels[i] for i in kept), a.wall_time)
        np.testing.assert_array_equal(b.values, a.values[:, kept])


def test_the_template_needs_eight_normal_beats_and_a_flat_segment_has_no_value() -> None:
    atria = AtrialActivity()
    segment = np.sin(np.linspace(0.0, np.pi, POINTS))
    assert [math.isnan(atria.score(segment)) for _ in range(9)] == [True] * 8 + [False]
    assert atria.score(segment) == pytest.approx(1.0)
    assert math.isnan(atria.score(np.zeros(POINTS)))


def test_the_segment_is_detrended_and_of_fixed_length_at_any_rate() -> None:
    for rate in (130.0, 250.0, 500.0):
        raw = np.linspace(0.0, 3.0, samples_needed(rate) + 1)  # baseline wander alone
        segment = pre_r_segment(raw, rate)
        assert segment.shape == (POINTS,)
        assert np.abs(segment).max() < 1e-9


def multiphasic_af_ecg(
    rr_s: npt.NDArray[np.float64], seed: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """AF (no P waves) whose QRS is an R wave 70 ms before a deeper, broad S wave: the S is the largest
    deflection, so the sample taken as the R peak is the S and the pre-R segment's end holds the R wave."""
    ecg, peaks = synthetic_ecg(rr_s, p_waves=False, seed=seed)
    t = np.arange(len(ecg)) / RATE
    for at in peaks / RATE:  # replace the narrow R at the peak by an R 70 ms before and a broad S at it
        ecg += -_bump(t, at, 0.010, 1.5) + _bump(t, at - 0.070, 0.012, 1.0) + _bump(t, at, 0.022, -1.6)
    return ecg, peaks


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_pre_r_segment_holding_the_qrs_onset_gives_no_p_wave(seed: int) -> None:
    # Failed before the slope guard: the repeating R wave read as P waves
    # (p_wave on 45 of 60 beats, median 0.61-0.68).
    readings = p_wave_readings(*multiphasic_af_ecg(irregular_rr(60, seed), seed))
    assert len(readings) >= 55
    assert all("qrs_shape" in r.channels for r in readings[8:])  # the shape known: p_wave left out
    assert not any("p_wave" in r.channels for r in readings)


def test_holds_qrs_tells_a_p_wave_from_a_qrs_onset_at_any_rate() -> None:
    for rate in (130.0, 250.0, 500.0):
        before = samples_needed(rate)
        t = (np.arange(before + 1 + samples_after(rate)) - before) / rate  # 0 at the R peak
        qrs = _bump(t, 0.0, 0.010, 1.5)
        assert not holds_qrs(qrs + _bump(t, -0.16, 0.025, 0.15), rate)  # a P wave at PR 0.16 s
        assert holds_qrs(qrs + _bump(t, -0.10, 0.012, 1.0), rate)  # a QRS part 100 ms before
