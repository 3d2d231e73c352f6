"""Per-stream adaptation, shared by detectors that fit each stream on its own first rows (SKAB's
"calibrate on each file's first rows"): collecting those rows, the rows a fit may learn from, and the
threshold set from them."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from agent.detectors.base import BoolArray, FloatArray, IntArray, WindowBlock
from agent.detectors.robust import MAD_TO_SIGMA

# A learning row is left out when a channel sits further than this many robust spreads from its median.
OUTLIER_SPREADS = 10.0
# The spread is also at least the central 90 % of the rows over its width in standard deviations of a
# normal distribution (2 x 1.645), so a channel with a few levels (MAD 0) keeps its rows: every row
# inside the 5-95 % quantiles is kept whatever the MAD, and only up to 5 % of a channel's rows (at either
# end) can ever be left out.
CENTRAL_QUANTILES = (0.05, 0.95)
CENTRAL_SIGMAS = 3.29


def counted(seen: np.ndarray[Any, Any], slots: IntArray) -> IntArray:
    """`seen[slot]` for each of `slots`, 0 for slots the detector has not grown to yet (never fed: a
    machine off since the start)."""
    out = np.zeros(len(slots), np.int64)
    known = slots < len(seen)
    out[known] = seen[slots[known]]
    return out


def collect_rows(
    block: WindowBlock, rows: FloatArray, seen: np.ndarray[Any, Any], adapt_rows: int
) -> list[int]:
    """Add the block's new complete rows to `rows[slot]` (S, adapt_rows, C) of the streams still
    adapting, counting them in `seen[slot]`; the slots that have just reached `adapt_rows`."""
    finished = []
    for i, slot in enumerate(block.slots):
        have = int(seen[slot])
        if have >= adapt_rows:
            continue
        # A stream's first window brings all its rows; later ones only the `hop` newest.
        new = block.values[i] if have == 0 else block.values[i, -block.hop :]
        take = new[: adapt_rows - have]
        take = take[~np.isnan(take).any(axis=1)]
        rows[slot, have : have + len(take)] = take
        seen[slot] = have + len(take)
        if seen[slot] >= adapt_rows:
            finished.append(int(slot))
    return finished


def learning_rows(rows: FloatArray, min_scale: FloatArray) -> BoolArray:
    """Which of a stream's adaptation rows (T, C) a fit learns its mean, scale and normal subspace from:
    those with no channel beyond `OUTLIER_SPREADS` robust spreads (MAD, at least the central quantiles'
    spread and `min_scale`) from the channel's median. One ADC error word (65535) or a garbage float
    (1e300) in the learning hour made the plain std the scale (3777 against 0.085 bar): the rule was
    blind to a 15 % pressure drop for as long as the learnt state lived (equipment review, F2)."""
    center = np.median(rows, axis=0)
    low, high = np.quantile(rows, CENTRAL_QUANTILES, axis=0)
    mad = MAD_TO_SIGMA * np.median(np.abs(rows - center), axis=0)
    spread = np.maximum(np.maximum(mad, (high - low) / CENTRAL_SIGMAS), min_scale)
    kept: BoolArray = (np.abs(rows - center) <= OUTLIER_SPREADS * spread).all(axis=1)
    return kept


def clean_windows(kept: BoolArray, window: int) -> BoolArray:
    """Per window of `window` consecutive rows (as `sliding_window_view` gives them): all rows kept."""
    clean: BoolArray = np.asarray(sliding_window_view(kept, window).all(axis=1), dtype=bool)
    return clean


def adaptation_quantile(scores: FloatArray, smooth_rows: int, quantile: float) -> float:
    """The `quantile` of the adaptation windows' scores, smoothed as live scores are. NaN scores (windows
    holding a row left out of learning) spoil the smoothed values they enter, which are skipped; if
    none is left, the quantile of the finite raw scores."""
    smoothed = np.convolve(scores, np.ones(smooth_rows) / smooth_rows, mode="valid")
    smoothed = smoothed[np.isfinite(smoothed)]
    if smoothed.size == 0:
        smoothed = scores[np.isfinite(scores)]
    return float(np.quantile(smoothed, quantile))
