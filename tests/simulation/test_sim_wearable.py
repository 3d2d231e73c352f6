"""Wearable model: determinism, physiological ranges, and the signature of each injected episode."""

from __future__ import annotations

import numpy as np
import pytest
from simhelpers import START, series, wearable

from agent.simulation import simulate


def test_same_seed_same_readings_different_seed_differs() -> None:
    a, _ = simulate(wearable(5, ("tachycardia", 100, 60)), 300, START)
    b, _ = simulate(wearable(5, ("tachycardia", 100, 60)), 300, START)
    c, _ = simulate(wearable(6, ("tachycardia", 100, 60)), 300, START)
    assert [(r.stream, r.wall_time, r.quality) for r in a] == [(r.stream, r.wall_time, r.quality) for r in b]
    assert all(np.array_equal(x.values, y.values) for x, y in zip(a, b, strict=True))
    va, vc = series(a, "w1/vitals"), series(c, "w1/vitals")
    assert not np.array_equal(va.values, vc.values)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5, 6, 7])
def test_normal_vitals_are_physiological(seed: int) -> None:
    readings, truth = simulate(wearable(seed), 600, START)
    assert truth == []
    v = series(readings, "w1/vitals")
    assert v.channels == ("hr", "spo2", "skin_temp")
    assert len(v.t) == 600 and v.t[0] == 0.0 and np.all(np.diff(v.t) == 1.0)
    hr, spo2, skin = v.col("hr"), v.col("spo2"), v.col("skin_temp")
    assert hr.min() >= 45 and hr.max() <= 110
    assert 50 <= np.median(hr) <= 90
    assert hr.std() > 0.5  # it varies: RSA, drift, noise
    assert spo2.min() >= 94 and spo2.max() <= 100
    assert np.array_equal(spo2, np.round(spo2))  # the sensor reports whole percent
    assert skin.min() >= 32.5 and skin.max() <= 35.5
    assert np.all(v.quality == 0)


def test_baseline_heart_rate_varies_per_seed() -> None:
    medians = {
        float(np.median(series(simulate(wearable(s), 120, START)[0], "w1/vitals").col("hr")))
        for s in range(8)
    }
    assert len(medians) >= 4


def test_rr_intervals_match_vitals_heart_rate_and_show_rsa() -> None:
    readings, _ = simulate(wearable(2), 600, START)
    rr = series(readings, "w1/rr")
    hr = series(readings, "w1/vitals").col("hr")
    assert rr.channels == ("rr",)
    assert np.allclose(np.diff(rr.t), rr.col("rr")[1:])  # each RR is the time since the previous beat
    assert abs(60.0 / rr.col("rr").mean() - hr.mean()) < 2.0
    rmssd = np.sqrt(np.mean(np.diff(rr.col("rr")) ** 2))
    assert 0.01 < rmssd < 0.12  # resting HRV, seconds
    # respiratory sinus arrhythmia: a spectral peak of the RR series in the 0.15-0.4 Hz band
    grid = np.arange(rr.t[0], rr.t[-1], 0.25)
    x = np.interp(grid, rr.t, rr.col("rr"))
    power = np.abs(np.fft.rfft(x - x.mean())) ** 2
    f = np.fft.rfftfreq(len(x), 0.25)
    hf = power[(f >= 0.15) & (f <= 0.4)].sum()
    assert hf > 0.2 * power[(f > 0.01) & (f <= 1.0)].sum()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tachycardia_signature(seed: int) -> None:
    readings, truth = simulate(wearable(seed, ("tachycardia", 200, 120)), 500, START)
    assert [(g.condition, g.start - START, g.end - START) for g in truth] == [("tachycardia", 200, 320)]
    v = series(readings, "w1/vitals")
    during = v.between(200, 320).col("hr")
    assert np.mean(during > 120) > 0.6
    assert 125 <= during.max() <= 165
    outside = np.concatenate((v.between(0, 200).col("hr"), v.between(330, 500).col("hr")))
    assert outside.max() < 100
