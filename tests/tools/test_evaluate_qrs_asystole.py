"""tools.evaluate.qrs_asystole: the hidden-asystole rule, the QRST cancellation, the noise sizes, the
re-spacing of beats to a fast rhythm (synthetic signals; the tool's cases need the shared datasets)."""

from __future__ import annotations

import numpy as np

from tools.evaluate import qrs_asystole as q

FS = int(q.FS)


def test_an_asystole_is_hidden_only_when_no_3_s_gap_comes_within_10_s() -> None:
    onset = 100 * FS
    every_2_s = np.array([onset - FS, *(onset + k * 2 * FS for k in range(1, 6))], dtype=np.int64)
    assert q.hidden(every_2_s, onset)
    with_a_gap = np.array([onset - FS, onset + FS, onset + round(4.5 * FS), onset + 6 * FS], dtype=np.int64)
    assert not q.hidden(with_a_gap, onset)  # 3.5 s between 1 s and 4.5 s
    assert not q.hidden(np.array([onset - FS], dtype=np.int64), onset)  # nothing in it: the alarm fires


def test_qrst_cancellation_leaves_the_noise_and_takes_out_two_alternating_beat_shapes() -> None:
    rng = np.random.default_rng(0)
    n = 120 * FS
    beats = np.arange(FS, n - FS, round(0.8 * FS), dtype=np.int64)
    t = np.arange(-30, 31)
    upright, flipped = np.exp(-(t**2) / 40.0), -0.8 * np.exp(-((t - 5) ** 2) / 30.0)
    ecg = np.zeros(n)
    for k, b in enumerate(beats.tolist()):
        ecg[b - 30 : b + 31] += upright if k % 3 else flipped  # two shapes, as MIT-BIH 108's
    noise = rng.normal(0.0, 0.02, n)
    residual = q.cancel_qrst(ecg + noise, beats)
    inner = slice(2 * FS, n - 2 * FS)
    assert np.abs(residual[inner] - noise[inner]).max() < 0.05  # the beats (1 mV) are gone
    assert np.std(residual[inner]) > 0.015  # the noise is not


def test_each_burst_has_the_asked_size() -> None:
    rng = np.random.default_rng(1)
    noise = q.asystole_noise(rng, "muscle", "bursts", [], 0.4)
    active = np.flatnonzero(noise != 0.0)
    edges = np.flatnonzero(np.diff(active) > 1)
    bursts = np.split(active, edges + 1)
    assert len(bursts) >= 3
    for burst in bursts:  # each scaled on its own (the tapered ends' zeros left out: within 5 %)
        assert abs(q.size(noise[burst[0] : burst[-1] + 1]) - 0.4) < 0.02
    continuous = q.asystole_noise(np.random.default_rng(2), "muscle", "continuous", [], 0.4)
    assert abs(q.size(continuous) - 0.4) < 1e-9


def test_respacing_gives_the_asked_rate_and_keeps_each_qrs_at_its_mark() -> None:
    n = 600 * FS
    beats = np.arange(FS, n - FS, FS, dtype=np.int64)  # 60 bpm
    t = np.arange(-10, 11)
    ecg = np.zeros(n)
    for b in beats.tolist():
        ecg[b - 10 : b + 11] += np.exp(-(t**2) / 8.0)
    signal, marks = q.respaced(ecg, beats, 1, 165.0, 60.0)
    assert len(signal) == 60 * FS
    assert abs(60.0 * FS / float(np.diff(marks).mean()) - 165.0) < 1.0
    assert np.allclose(signal[marks], 1.0)
