"""threshold_for_rate: empirical quantile when the sample allows it, exponential tail beyond."""

from __future__ import annotations

import math

import numpy as np
import pytest
from detector_drive import make, normal_block
from scipy.stats import norm

from agent.detectors.calibration import threshold_for_rate
from agent.errors import ConfigError


def test_empirical_quantile_leaves_at_most_the_allowed_exceedances() -> None:
    scores = np.random.default_rng(0).normal(size=100_000)
    t = threshold_for_rate(scores, 36.0, 1.0)  # p = 0.01
    assert t == pytest.approx(norm.ppf(0.99), abs=0.03)
    assert (scores > t).sum() <= 1000


def test_nan_scores_count_as_hops_that_did_not_alarm() -> None:
    scores = np.random.default_rng(1).normal(size=20_000)
    with_gaps = np.concatenate([scores, np.full(20_000, np.nan)])
    # half the hops gave no verdict: the same rate allows twice the exceedance share among real scores
    assert threshold_for_rate(with_gaps, 36.0, 1.0) == pytest.approx(threshold_for_rate(scores, 72.0, 1.0))


def test_exponential_tail_extrapolates_past_the_sample() -> None:
    scores = np.random.default_rng(2).normal(size=20_000)
    p = 1e-5  # 0.2 expected exceedances in the sample
    t = threshold_for_rate(scores, p * 3600.0, 1.0)
    assert t > scores.max() or math.isclose(t, scores.max(), rel_tol=0.05)
    # an exponential tail is heavier than the Gaussian one: the estimate errs on the quiet side
    assert norm.ppf(1 - p) - 0.2 < t < norm.ppf(1 - p) + 1.0
    lower = [threshold_for_rate(scores, r, 1.0) for r in (0.01, 0.1, 1.0, 10.0)]
    assert lower == sorted(lower, reverse=True)


@pytest.mark.parametrize(
    ("scores", "rate", "hop", "match"),
    [
        (np.zeros(100), 0.0, 1.0, "positive"),
        (np.zeros(100), 3600.0, 1.0, "every hop"),
        (np.zeros(5), 1.0, 1.0, "at least"),
        (np.full(100, np.nan), 1.0, 1.0, "finite"),
    ],
)
def test_bad_calibration_inputs(scores: np.ndarray, rate: float, hop: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        threshold_for_rate(scores, rate, hop)


def test_detector_reports_a_calibration_failure_by_its_id() -> None:
    d = make("robust_z", window_s=30.0)
    with pytest.raises(ConfigError, match=r"detectors\.robust_z_1: cannot calibrate"):
        d.calibrate(normal_block(np.zeros((1, 10, 1))), 1.0, 1.0)
