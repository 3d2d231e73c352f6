"""Every injected wearable episode shows its signature, and only during the episode."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import median_filter  # type: ignore[import-untyped]
from scipy.signal import find_peaks  # type: ignore[import-untyped]
from simhelpers import START, series, wearable

from agent.readings import Quality
from agent.simulation import simulate


def rmssd_ratio(rr: np.ndarray) -> float:
    """RMSSD relative to the mean RR: ~0.05 in sinus rhythm at rest, several times more in AF."""
    return float(np.sqrt(np.mean(np.diff(rr) ** 2)) / rr.mean())


@pytest.mark.parametrize("seed", [1, 2])
def test_bradycardia(seed: int) -> None:
    readings, _ = simulate(wearable(seed, ("bradycardia", 100, 120)), 300, START)
    hr = series(readings, "w1/vitals")
    during = hr.between(130, 190).col("hr")
    assert during.min() >= 33 and during.max() <= 47
    assert hr.between(0, 100).col("hr").min() > 50


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_af_is_fast_and_irregularly_irregular(seed: int) -> None:
    readings, _ = simulate(wearable(seed, ("af", 300, 300)), 900, START)
    rr = series(readings, "w1/rr")
    normal = rr.between(0, 300).col("rr")
    af = rr.between(305, 600).col("rr")
    assert rmssd_ratio(af) > 3 * rmssd_ratio(normal)
    assert af.std() / af.mean() > 0.15
    assert 95 <= 60 / af.mean() <= 145
    # irregularly irregular: successive intervals nearly uncorrelated (sinus RR is strongly autocorrelated)
    assert abs(np.corrcoef(af[:-1], af[1:])[0, 1]) < 0.3
    assert np.corrcoef(normal[:-1], normal[1:])[0, 1] > 0.3
    after = rr.between(620, 900).col("rr")
    assert rmssd_ratio(after) < 0.12


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_spo2_desaturation(seed: int) -> None:
    readings, _ = simulate(wearable(seed, ("spo2_desaturation", 200, 90)), 400, START)
    v = series(readings, "w1/vitals")
    before = np.median(v.between(100, 200).col("spo2"))
    assert before - v.between(200, 290).col("spo2").min() >= 3
    assert v.between(200, 290).col("spo2").min() >= 84
    assert np.median(v.between(300, 400).col("spo2")) >= before - 1


def test_contact_loss_flags_zeroes_and_silences_rr() -> None:
    readings, _ = simulate(wearable(1, ("contact_loss", 100, 30), ecg=True), 200, START)
    v = series(readings, "w1/vitals")
    lost = v.between(100, 130)
    assert len(lost.t) == 30
    assert np.all(lost.quality & Quality.NO_CONTACT)
    assert np.all(lost.col("hr") == 0) and np.all(lost.col("spo2") == 0)
    assert lost.col("skin_temp")[-1] < lost.col("skin_temp")[0] - 1.0  # the patch cools off the skin
    assert not np.any(v.between(0, 100).quality) and not np.any(v.between(131, 200).quality)
    assert len(series(readings, "w1/rr").between(100, 130).t) == 0
    ecg = series(readings, "w1/ecg")
    assert np.all(ecg.between(100, 130).quality & Quality.NO_CONTACT)
    assert not np.any(ecg.between(0, 99.9).quality)


def test_dropout_has_no_readings_and_marks_the_gap() -> None:
    readings, truth = simulate(wearable(1, ("dropout", 100, 20), ecg=True), 200, START)
    assert [(g.start - START, g.end - START) for g in truth] == [(100, 120)]
    for stream in ("w1/vitals", "w1/rr", "w1/ecg"):
        s = series(readings, stream)
        assert len(s.between(100, 120).t) == 0
        after = s.t[s.t >= 120]
        gaps = s.t[(s.quality & Quality.GAP) != 0]
        assert list(gaps) == [after[0]]  # exactly the first reading after the dropout says GAP


def test_stuck_sensor_freezes_one_vitals_channel() -> None:
    readings, truth = simulate(wearable(3, ("stuck_sensor", 100, 120)), 300, START)
    v = series(readings, "w1/vitals")
    during = v.between(100, 220).values
    frozen = [j for j in range(3) if np.ptp(during[:, j]) == 0]
    assert len(frozen) == 1
    j = frozen[0]
    assert truth[0].channel == v.channels[j]
    assert during[0, j] == v.between(99, 100).values[0, j]  # held at the last value before the episode
    assert np.ptp(v.between(220, 300).values[:, j]) > 0


@pytest.mark.parametrize("seed", [1, 7])
def test_ecg_r_peaks_line_up_with_rr_beats(seed: int) -> None:
    readings, _ = simulate(wearable(seed, ("af", 60, 60), ("tachycardia", 150, 60), ecg=True), 240, START)
    blocks = [r for r in readings if r.stream == "w1/ecg"]
    assert all(r.n_samples == 25 and r.period_s == 0.004 and r.channels == ("ecg",) for r in blocks)
    assert np.allclose(np.diff([r.wall_time for r in blocks]), 0.1)
    signal = np.concatenate([r.values[:, 0] for r in blocks])
    t = blocks[0].wall_time + 0.004 * np.arange(len(signal)) - START
    assert 0.5 < np.ptp(signal[:2500]) < 3.0  # millivolts
    # remove the baseline wander, then the R waves are the tall narrow peaks (T waves stay under 60 % of R)
    detrended = signal - median_filter(signal, size=151)
    peaks, _ = find_peaks(detrended, height=0.7 * np.percentile(detrended, 99.5), distance=40)
    found = t[peaks]
    beats = series(readings, "w1/rr").t
    inner = beats[(beats > 1) & (beats < 239)]
    assert len(inner) > 250
    # every beat has an R peak within two samples, and every R peak is a beat
    assert np.max(np.min(np.abs(inner[:, None] - found[None, :]), axis=1)) <= 0.008
    inner_found = found[(found > 1) & (found < 239)]
    assert np.max(np.min(np.abs(inner_found[:, None] - beats[None, :]), axis=1)) <= 0.008
