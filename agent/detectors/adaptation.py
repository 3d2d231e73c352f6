"""Per-stream adaptation, shared by detectors that fit each stream on its own first rows (SKAB's
"calibrate on each file's first rows"): collecting those rows, and the threshold set from them."""

from __future__ import annotations

from typing import Any

import numpy as np

from agent.detectors.base import FloatArray, WindowBlock


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


def adaptation_quantile(scores: FloatArray, smooth_rows: int, quantile: float) -> float:
    """The `quantile` of the adaptation windows' scores, smoothed as live scores are."""
    smoothed = np.convolve(scores, np.ones(smooth_rows) / smooth_rows, mode="valid")
    return float(np.quantile(smoothed, quantile))
