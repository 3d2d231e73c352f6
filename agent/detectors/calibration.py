"""Threshold calibration from a target false-alarm rate on normal data.

A detector scoring every `hop_seconds` that should exceed its threshold `r` times per hour on normal data
needs the exceedance probability per hop ``p = r * hop_seconds / 3600``: the threshold is the ``1 - p``
quantile of the normal score distribution. Scores are collected by replaying a long normal recording at
the detector's own hop, so autocorrelation between overlapping windows is in the sample as it will be live.

When the sample holds enough exceedances (``n * p >= MIN_EXCEEDANCES``) the empirical order statistic is
used, chosen so that no more than ``floor(n * p)`` normal scores lie strictly above it. When ``p`` is too
small for the sample (long-range targets like 1 per day on an hour of data), the tail beyond the
(k+1)-th largest score is modelled as exponential (a generalised Pareto with shape 0, the peaks-over-
threshold estimator) and extrapolated: ``u + beta * ln(k / (n * p))`` with ``beta`` the mean excess.
That stays finite and monotone in ``p`` instead of clamping to the sample maximum.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

if TYPE_CHECKING:
    from agent.detectors.base import FloatArray, StreamingDetector, WindowBlock

MIN_EXCEEDANCES = 20  # below this many expected exceedances the empirical quantile is too noisy
TAIL_FRACTION = 0.05  # the exponential tail is fitted to this top share of the sample (at least 20 points)


def exceedance_probability(target_false_alarms_per_hour: float, hop_seconds: float) -> float:
    if not target_false_alarms_per_hour > 0 or not hop_seconds > 0:
        raise ValueError(
            f"target rate and hop must be positive, got {target_false_alarms_per_hour}/h and {hop_seconds} s"
        )
    p = target_false_alarms_per_hour * hop_seconds / 3600.0
    if p >= 1.0:
        raise ValueError(f"{target_false_alarms_per_hour}/h at one score per {hop_seconds} s is every hop")
    return p


def threshold_for_rate(scores: FloatArray, target_false_alarms_per_hour: float, hop_seconds: float) -> float:
    """The threshold that `scores` (one per hop, any shape; NaN = no verdict) exceed at the target rate."""
    p = exceedance_probability(target_false_alarms_per_hour, hop_seconds)
    flat = np.sort(np.where(np.isnan(scores), -np.inf, scores).ravel())  # NaN hops never alarm
    n = flat.size
    if n < MIN_EXCEEDANCES or not np.isfinite(flat[-1]):
        raise ValueError(f"calibration needs at least {MIN_EXCEEDANCES} finite scores, got {n}")
    allowed = n * p
    if allowed >= MIN_EXCEEDANCES:
        return float(flat[n - math.floor(allowed) - 1])
    k = min(n - 1, max(MIN_EXCEEDANCES, math.ceil(n * TAIL_FRACTION)))
    u = flat[n - k - 1]
    if not np.isfinite(u):  # most hops gave no verdict: fall back to the largest score seen
        return float(flat[-1])
    beta = float(np.mean(flat[n - k :] - u))
    return float(u + beta * math.log(k / allowed))


def replay_scores(
    detector: StreamingDetector, normal: WindowBlock, window: int, hop: int, hop_seconds: float
) -> FloatArray:
    """Scores (hops, S) of `detector` slid over the long recording `normal.values` (S, T, C) at `hop`."""
    from agent.detectors.base import WindowBlock

    values = normal.values
    total = values.shape[1]
    if total < window:
        raise ValueError(f"calibration needs at least {window} samples per stream, got {total}")
    windows = sliding_window_view(values, window, axis=1)  # (S, T-W+1, C, W) views, no copy
    out = []
    for end in range(window, total + 1, hop):
        block = np.ascontiguousarray(np.moveaxis(windows[:, end - window], -1, 1))
        lag = total - end  # samples between this window's end and the recording's end
        times = normal.end_times - lag * hop_seconds / hop
        out.append(detector.score(WindowBlock(block, normal.slots, times, hop)).scores)
    return np.asarray(out)
