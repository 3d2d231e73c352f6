"""The `robust_z` detector: robust z of the new samples against the median/MAD of the earlier window."""

from __future__ import annotations

import math

import numpy as np
import pytest
from detector_drive import T0, make

from agent.detectors import WindowBlock
from agent.detectors.robust import MAD_TO_SIGMA
from agent.errors import ConfigError


def test_z_matches_a_direct_median_mad_computation() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(70, 3, (4, 30, 2))
    values[1, -1, 1] = 150.0
    d = make("robust_z", ("hr", "spo2"), window_s=30.0)
    out = d.score(WindowBlock(values, np.arange(4), np.full(4, T0), 1))
    base = values[:, :-1, :]
    med = np.median(base, axis=1)
    mad = np.median(np.abs(base - med[:, None, :]), axis=1) * MAD_TO_SIGMA
    z = np.abs(values[:, -1, :] - med) / mad
    np.testing.assert_allclose(out.scores, z.max(axis=1))
    np.testing.assert_allclose(out.contributions, z / z.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(out.baseline, med)
    assert out.exceeded.tolist() == [False, True, False, False]
    assert out.observed[1] == 150.0
    assert out.limits[1] == pytest.approx(med[1, 1] + 6.0 * mad[1, 1])


def test_flat_baseline_is_floored_instead_of_dividing_by_zero() -> None:
    values = np.full((1, 20, 1), 70.0)
    values[0, -1, 0] = 71.0
    d = make("robust_z", ("hr",), window_s=20.0)
    out = d.score(WindowBlock(values, np.arange(1), np.full(1, T0), 1))
    assert out.scores[0] == pytest.approx(1.0 / 0.7)  # floor: 1% of the 70 bpm median
    zero = np.zeros((1, 20, 1))
    zero[0, -1, 0] = 0.01
    out = d.score(WindowBlock(zero, np.arange(1), np.full(1, T0), 1))
    assert out.scores[0] == pytest.approx(10.0)  # absolute floor min_scale = 1e-3


def test_too_little_valid_baseline_gives_no_verdict() -> None:
    values = np.full((1, 20, 1), np.nan)
    values[0, -3:, 0] = [70, 71, 200]
    d = make("robust_z", ("hr",), window_s=20.0)
    out = d.score(WindowBlock(values, np.arange(1), np.full(1, T0), 1))
    assert math.isnan(out.scores[0]) and not out.exceeded[0]


def test_hop_scores_the_worst_new_sample() -> None:
    rng = np.random.default_rng(2)
    values = rng.normal(0, 1, (1, 40, 1))
    values[0, -5] = 30.0  # inside the 5-sample hop, not the newest
    d = make("robust_z", ("x",), window_s=40.0, hop_s=5.0)
    out = d.score(WindowBlock(values, np.arange(1), np.full(1, T0), 5))
    assert out.scores[0] > 15 and out.observed[0] == 30.0


def test_bad_params() -> None:
    with pytest.raises(
        ConfigError, match=r"detectors\.robust_z_1\.params\.threshold: expected a positive number"
    ):
        make("robust_z", threshold=-1)
    with pytest.raises(ConfigError, match=r"params\.hop_s"):
        make("robust_z", window_s=10, hop_s=20)
    with pytest.raises(ConfigError, match=r"params\.min_valid: expected a fraction"):
        make("robust_z", min_valid=2)
