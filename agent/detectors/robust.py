"""NaN-aware robust location and scale over the sample axis, without warnings or Python loops.

`np.nanmedian` warns on all-NaN slices and is slow on small axes; sorting once (NaN sorts last) and
indexing the middle of each slice's valid count gives the same median for every (stream, channel) at once.
The MAD is scaled by 1.4826 so it estimates the standard deviation of Gaussian data, and floored so a flat
baseline (a constant or quantised signal) does not divide by ~0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.detectors.base import BoolArray, FloatArray, IntArray

MAD_TO_SIGMA = 1.4826  # 1 / Phi^-1(3/4)
RELATIVE_FLOOR = 0.01  # scale is at least 1% of |median|: a flat 70 bpm baseline gets scale 0.7 bpm


@dataclass(frozen=True, slots=True)
class RobustBaseline:
    median: FloatArray  # (S, C), NaN where too few valid samples
    scale: FloatArray  # (S, C) MAD * 1.4826, floored
    enough: BoolArray  # (S, C) at least the required fraction of samples was valid


def nan_median(values: FloatArray, axis: int = 1) -> tuple[FloatArray, FloatArray]:
    """(median, count of valid samples) along `axis`; median NaN where no sample is valid."""
    ordered = np.sort(values, axis=axis)
    if values.ndim == 2 and axis in (1, -1):  # (S, N), e.g. RR contexts: plain indexing costs less
        count2 = (~np.isnan(values)).sum(axis=1)
        rows, last2 = np.arange(values.shape[0]), np.maximum(count2 - 1, 0)
        middle = (ordered[rows, last2 // 2] + ordered[rows, (last2 + 1) // 2]) / 2.0
        return np.where(count2 > 0, middle, np.nan), count2.astype(np.float64)
    # Summing booleans along a middle axis with a short last axis (S, N, C) is strided and ~6x slower
    # than along a contiguous last axis: lay the axis out last first (a cheap boolean copy).
    count = np.ascontiguousarray(~np.isnan(np.moveaxis(values, axis, -1))).sum(axis=-1)
    last = np.maximum(count - 1, 0)
    lo = np.take_along_axis(ordered, np.expand_dims(last // 2, axis), axis=axis)
    hi = np.take_along_axis(ordered, np.expand_dims((last + 1) // 2, axis), axis=axis)
    median = np.squeeze((lo + hi) / 2.0, axis=axis)
    return np.where(count > 0, median, np.nan), count.astype(np.float64)


def robust_baseline(history: FloatArray, min_valid: float, min_scale: float) -> RobustBaseline:
    """Median and floored, scaled MAD of `history` (S, N, C) over its N samples."""
    # Worked on one (S, C, N) copy, each (stream, channel) lane's samples contiguous, sorted in place:
    # on (S, N, C) every array operation's inner loop ran over the C channels (2 for vitals), and
    # `history - median` was the dearest line of the vitals agent (profile of 2026-11-30). Each lane
    # is sorted from the same values in the same order as `nan_median(history)` sorts them, and the
    # deviations of the sorted lane are the same values in another order, so their sorted lane is the
    # same: both medians are those of `nan_median`, bit for bit (tests/detectors/test_robust_baseline.py).
    lanes = np.moveaxis(history, 1, -1).copy()  # C order: the caller's array is never written
    lanes.sort(axis=-1)  # NaN last
    count = (~np.isnan(lanes)).sum(axis=-1)
    median = _sorted_median(lanes, count)
    np.abs(np.subtract(lanes, median[:, :, None], out=lanes), out=lanes)
    lanes.sort(axis=-1)
    # A deviation is NaN where its sample is, and where an infinite sample meets an infinite median
    # (inf - inf): only then are the valid deviations counted again, as `nan_median` would.
    valid = (~np.isnan(lanes)).sum(axis=-1) if np.isinf(median).any() else count
    mad = _sorted_median(lanes, valid)
    floor = np.maximum(min_scale, RELATIVE_FLOOR * np.abs(np.nan_to_num(median)))
    scale = np.maximum(np.nan_to_num(mad * MAD_TO_SIGMA, nan=0.0), floor)
    enough = count.astype(np.float64) >= max(1.0, min_valid * history.shape[1])
    return RobustBaseline(np.where(enough, median, np.nan), scale, enough)


def _sorted_median(lanes: FloatArray, count: IntArray) -> FloatArray:
    """`nan_median`'s median of lanes already sorted along the last axis, `count` valid (NaN last)."""
    last = np.maximum(count - 1, 0)[..., None]
    lo = np.take_along_axis(lanes, last // 2, axis=-1)[..., 0]
    hi = np.take_along_axis(lanes, (last + 1) // 2, axis=-1)[..., 0]
    median: FloatArray = np.where(count > 0, (lo + hi) / 2.0, np.nan)
    return median


def standardized_hop(
    values: FloatArray, hop: int, min_valid: float, min_scale: float
) -> tuple[FloatArray, RobustBaseline]:
    """Residuals (S, hop, C) of the newest `hop` samples in robust-z units, and the baseline of the rest."""
    hop = min(hop, values.shape[1] - 1)
    base = robust_baseline(values[:, :-hop, :], min_valid, min_scale)
    residuals = (values[:, -hop:, :] - base.median[:, None, :]) / base.scale[:, None, :]
    return residuals, base
