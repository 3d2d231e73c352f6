"""EWMA and CUSUM: sequential statistics on robust residuals, checked against direct per-sample loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
from detector_drive import make, run, scores_of

from agent.detectors.robust import MAD_TO_SIGMA
from agent.errors import ConfigError


def reference_residuals(x: np.ndarray, window: int) -> list[float]:
    """Robust z of each sample against the median/MAD of the window - 1 samples before it (no NaN)."""
    out = []
    for t in range(x.size):
        base = x[max(0, t - window + 1) : t]
        if base.size < 0.5 * (window - 1) or base.size == 0:
            out.append(math.nan)
            continue
        med = float(np.median(base))
        scale = max(float(np.median(np.abs(base - med))) * MAD_TO_SIGMA, 1e-3, 0.01 * abs(med))
        out.append((x[t] - med) / scale)
    return out


def test_ewma_matches_a_plain_loop_and_catches_a_small_sustained_shift() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 1.0, 300)
    x[200:] += 1.5  # too small for a 6-sigma single-sample rule
    d = make("ewma", ("x",), window_s=120.0, alpha=0.1)
    got = scores_of(run(d, x.reshape(1, -1, 1)))[:, 0]
    z, expected = 0.0, []
    sigma = math.sqrt(0.1 / 1.9)
    for e in reference_residuals(x, d.window):
        if not math.isnan(e):
            z = 0.9 * z + 0.1 * e
        expected.append(math.nan if math.isnan(e) else abs(z) / sigma)
    np.testing.assert_allclose(got, expected, rtol=1e-9, equal_nan=True)
    assert (got[150:200] < 3.0).mean() > 0.9
    assert (got[210:230] > 3.0).all()  # until the rolling baseline absorbs the new level
    single = make("robust_z", ("x",), window_s=120.0)
    assert (scores_of(run(single, x.reshape(1, -1, 1)))[210:230, 0] < 6.0).all()


def test_cusum_matches_a_plain_loop_in_both_directions() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(50.0, 1.0, 260)
    x[100:130] -= 3.0
    x[180:210] += 3.0
    d = make("cusum", ("x",), window_s=60.0, k=0.5, threshold=5.0)
    got = scores_of(run(d, x.reshape(1, -1, 1)))[:, 0]
    up = down = 0.0
    expected = []
    for e in reference_residuals(x, d.window):
        if not math.isnan(e):
            up = min(10.0, max(0.0, up + e - 0.5))
            down = min(10.0, max(0.0, down - e - 0.5))
        expected.append(math.nan if math.isnan(e) else max(up, down))
    np.testing.assert_allclose(got, expected, rtol=1e-9, equal_nan=True)
    assert got[105:130].min() > 5.0 and got[185:210].min() > 5.0
    assert np.nanmax(got) <= 10.0  # capped at twice the threshold
    assert got[150] < 5.0  # back below within h / k samples of the dip ending


def test_cusum_keeps_separate_state_per_slot() -> None:
    d = make("cusum", ("x",), window_s=20.0)
    rng = np.random.default_rng(2)
    quiet = rng.normal(0, 1, (1, 60, 1))
    shifted = quiet.copy()
    shifted[0, 40:] += 6.0
    both = np.concatenate([quiet, shifted])
    scores = scores_of(run(d, both))
    assert scores[45, 1] > 5 and scores[45, 0] < 5
    alone = make("cusum", ("x",), window_s=20.0)
    np.testing.assert_allclose(scores_of(run(alone, quiet))[:, 0], scores[:, 0], equal_nan=True)


def test_ewma_alpha_must_be_below_one() -> None:
    with pytest.raises(ConfigError, match=r"params\.alpha"):
        make("ewma", alpha=1.0)
    with pytest.raises(ConfigError, match=r"params\.k: expected a positive number"):
        make("cusum", k=0)
