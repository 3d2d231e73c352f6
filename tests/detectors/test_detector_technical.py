"""rate_of_change, flatline and dropout: the detectors that watch how a signal behaves, not its level."""

from __future__ import annotations

import math

import numpy as np
import pytest
from detector_drive import T0, make, normal_block, run, scores_of

from agent.detectors import WindowBlock
from agent.errors import ConfigError


def one(detector, rows: np.ndarray, hop: int = 1):  # type: ignore[no-untyped-def]
    n = rows.shape[0]
    return detector.score(WindowBlock(rows, np.arange(n), np.full(n, T0), hop))


def test_rate_of_change_is_the_hop_mean_difference_per_second_over_max_rate() -> None:
    d = make("rate_of_change", ("hr", "temp"), rate=4.0, hop_s=0.5, max_rate={"hr": 10.0, "temp": 0.1})
    assert (d.window, d.hop) == (4, 2)
    rows = np.array(
        [[[70, 36.0], [72, 36.0], [80, 36.1], [82, 36.1]], [[70, 36.0], [np.nan, 36.0], [70, 37], [70, 37]]]
    )
    out = one(d, rows, hop=2)
    # stream 0: hr means 71 -> 81 over 0.5 s = 20 bpm/s (2x limit); temp 0.1 over 0.5 s = 0.2/s (2x limit)
    np.testing.assert_allclose(out.scores, [2.0, 20.0])
    np.testing.assert_allclose(out.contributions[1], [0.0, 1.0])
    assert out.observed[1] == pytest.approx(2.0) and out.limits[1] == pytest.approx(0.1)
    np.testing.assert_allclose(out.baseline[0], [71.0, 36.0])


def test_rate_of_change_requires_max_rate() -> None:
    with pytest.raises(ConfigError, match=r"params\.max_rate"):
        make("rate_of_change")
    with pytest.raises(ConfigError, match=r"params\.max_rate: expected a value for each"):
        make("rate_of_change", ("a", "b"), max_rate={"a": 1.0})


def test_flatline_flags_a_stuck_channel_and_names_it() -> None:
    rng = np.random.default_rng(0)
    rows = rng.normal(0, 1, (3, 20, 2))
    rows[1, :, 1] = 42.0  # stuck
    rows[2, :, 0] = np.nan  # nothing to judge on channel 0; channel 1 lively
    d = make("flatline", ("a", "b"), window_s=20.0, epsilon=0.01)
    out = one(d, rows)
    assert out.exceeded.tolist() == [False, True, False]
    assert out.scores[1] == pytest.approx(1e6)
    np.testing.assert_allclose(out.contributions[1], [0.0, 1.0], atol=1e-4)
    assert out.observed[1] == 0.0 and out.limits[1] == 0.01
    assert not math.isnan(out.scores[2])


def test_flatline_calibration_only_desensitises() -> None:
    d = make("flatline", ("a",), window_s=10.0, epsilon=0.01)
    lively = np.random.default_rng(1).normal(0, 1, (5, 400, 1))
    d.calibrate(normal_block(lively), 10.0, 1.0)
    assert d.threshold == 1.0
    pinned = np.full((5, 400, 1), 100.0)  # SpO2 legitimately pinned at 100 %
    pinned[:, ::50] = 99.0
    d.calibrate(normal_block(pinned), 10.0, 1.0)
    assert d.threshold > 1.0
    assert not scores_of(run(d, pinned[:1, 200:]))[10:, 0].__gt__(d.threshold).any()


def test_dropout_is_the_worst_channel_missing_fraction() -> None:
    rows = np.zeros((2, 10, 2))
    rows[0, :6, 0] = np.nan
    rows[1, ::5, 1] = np.nan
    d = make("dropout", ("a", "b"), window_s=10.0)
    out = one(d, rows)
    np.testing.assert_allclose(out.scores, [0.6, 0.2])
    assert out.exceeded.tolist() == [True, False]
    assert out.observed[0] == 0.6 and out.limits[0] == 0.5
    with pytest.raises(ConfigError, match=r"params\.max_missing"):
        make("dropout", max_missing=1.0)
