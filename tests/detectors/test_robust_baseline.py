"""`robust_baseline` (lanes sorted in place) against the medians of `nan_median`, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from agent.detectors.robust import MAD_TO_SIGMA, RELATIVE_FLOOR, nan_median, robust_baseline


def by_nan_median(history: np.ndarray, min_valid: float, min_scale: float) -> tuple[np.ndarray, ...]:
    """The baseline as it was computed before 2026-11-30: two `nan_median` calls over the N axis."""
    median, count = nan_median(history)
    mad, _ = nan_median(np.abs(history - median[:, None, :]))
    floor = np.maximum(min_scale, RELATIVE_FLOOR * np.abs(np.nan_to_num(median)))
    scale = np.maximum(np.nan_to_num(mad * MAD_TO_SIGMA, nan=0.0), floor)
    enough = count >= max(1.0, min_valid * history.shape[1])
    return np.where(enough, median, np.nan), scale, enough


def awkward_history(rng: np.random.Generator, streams: int, samples: int, channels: int) -> np.ndarray:
    """Quantised values (ties), NaN gaps, all-NaN lanes, signed zeros and infinities."""
    values = rng.normal(80.0, 5.0, (streams, samples, channels)).round(0)
    values[rng.random(values.shape) < 0.1] = np.nan
    values[: streams // 8, :, 0] = np.nan  # a channel never valid
    zeros = rng.choice([0.0, -0.0, 1.0, -1.0, np.nan], (streams // 8, samples, channels))
    values[streams // 8 : streams // 4] = zeros
    values[streams // 4 : streams // 4 + 4, ::3] = np.inf
    values[streams // 4 + 4 : streams // 4 + 8, ::2] = -np.inf
    return values


@pytest.mark.parametrize(
    ("streams", "samples", "channels"), [(64, 60, 2), (40, 9, 1), (16, 33, 5), (1, 4, 2)]
)
def test_the_baseline_is_that_of_nan_median_bit_for_bit(streams: int, samples: int, channels: int) -> None:
    rng = np.random.default_rng(streams * samples)
    window = awkward_history(rng, streams, samples + 1, channels)
    history = window[:, :-1, :]  # the detectors' view: not contiguous
    before = window.copy()
    with np.errstate(invalid="ignore"):  # inf - inf, in both
        got = robust_baseline(history, 0.5, 1e-3)
        want = by_nan_median(history, 0.5, 1e-3)
    for mine, theirs in zip((got.median, got.scale, got.enough), want, strict=True):
        assert mine.shape == theirs.shape == (streams, channels)
        assert mine.dtype == theirs.dtype
        assert mine.tobytes() == theirs.tobytes()  # NaN, -0.0 and all
    assert np.array_equal(window, before, equal_nan=True)  # the caller's window is not written
    if streams >= 8:  # the cases above are really exercised
        assert np.isnan(got.median).any() and got.enough.any() and np.isinf(got.median).any()


def test_a_contiguous_history_is_not_written_either() -> None:
    history = awkward_history(np.random.default_rng(3), 16, 30, 2)
    lanes_like = np.ascontiguousarray(np.moveaxis(history, 1, -1))  # (S, C, N) contiguous
    view = np.moveaxis(lanes_like, -1, 1)  # an (S, N, C) view whose moveaxis back needs no copy
    before = lanes_like.copy()
    with np.errstate(invalid="ignore"):
        got = robust_baseline(view, 0.5, 1e-3)
        want = by_nan_median(view, 0.5, 1e-3)
    assert np.array_equal(lanes_like, before, equal_nan=True)
    assert got.median.tobytes() == want[0].tobytes() and got.scale.tobytes() == want[1].tobytes()
