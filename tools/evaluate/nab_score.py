"""The NAB score (Lavin & Ahmad 2015), re-implemented from NAB's published scoring rules.

The `nab` name on PyPI belongs to an unrelated project (a dependency resolver), and NAB's own code is
AGPL, so nothing of it is vendored: this module follows the rules as NAB's `sweeper.py` applies them.

Per series: the first 15 % of rows (at most 750) are probationary and not scored. A detection is a row
whose anomaly score is >= the threshold. Inside a labelled window a detection is worth
A * tpWeight / A(-1) with A(y) = 2 / (1 + exp(5 y)) - 1 and y = -(right - i + 1) / width (earlier is
better, only the best detection of a window counts); a window without one costs fnWeight. Outside
windows every detection costs fpWeight * A(y) with y = |i - right of the previous window| / (width of
that window - 1), or the full fpWeight before the first window. The corpus score sums all series at one
threshold, and is normalised as 100 (raw - null) / (perfect - null), where null detects nothing
(-fnWeight per window) and perfect detects every window at its first row (+tpWeight per window).
`optimise` sweeps every distinct score as the threshold, like NAB's optimiser over the whole corpus.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

PROFILES = {
    "standard": (1.0, 1.0, 0.11),  # tpWeight, fnWeight, fpWeight
    "reward_low_FP_rate": (1.0, 1.0, 0.22),
    "reward_low_FN_rate": (1.0, 2.0, 0.11),
}


def scaled_sigmoid(y: float) -> float:
    if y >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


@dataclass(frozen=True, slots=True)
class ScoredRows:
    """One series prepared for scoring: what each row would be worth if it were a detection."""

    scores: FloatArray  # anomaly score per scorable row
    worth: FloatArray  # weighted value of a detection at that row
    window: npt.NDArray[np.int64]  # window number of the row, -1 outside windows
    n_windows: int


def prepare(
    scores: FloatArray, windows: list[tuple[int, int]], profile: str = "standard", probation: float = 0.15
) -> ScoredRows:
    """`windows` are inclusive (first row, last row) index pairs, in order."""
    tp_w, _, fp_w = PROFILES[profile]
    n = len(scores)
    probation_rows = min(math.floor(probation * n), probation * 5000)
    max_tp = scaled_sigmoid(-1.0)
    worth = np.empty(n)
    window_of = np.full(n, -1, dtype=np.int64)
    prev_right: int | None = None
    prev_width = 0.0
    bounds = list(windows)
    k = 0
    i = 0
    while i < n:
        if k < len(bounds) and i == bounds[k][0]:
            left, right = bounds[k]
            width = float(right - left + 1)
            for j in range(left, right + 1):
                worth[j] = scaled_sigmoid(-(right - j + 1) / width) * tp_w / max_tp
                window_of[j] = k
            prev_right, prev_width = right, width
            k += 1
            i = right + 1
            continue
        y = 3.0 if prev_right is None else abs(prev_right - i) / (prev_width - 1.0)
        worth[i] = scaled_sigmoid(y) * fp_w
        i += 1
    keep = np.arange(n) >= probation_rows
    # windows that lie wholly in probation are not scored at all (NAB names their rows "probationary")
    kept_windows = np.unique(window_of[keep & (window_of >= 0)])
    remap = {int(w): idx for idx, w in enumerate(kept_windows)}
    window = np.array([remap.get(int(w), -1) for w in window_of[keep]], dtype=np.int64)
    return ScoredRows(np.asarray(scores, float)[keep], worth[keep], window, len(kept_windows))


def raw_score(rows: ScoredRows, threshold: float, profile: str = "standard") -> float:
    _, fn_w, _ = PROFILES[profile]
    hit = rows.scores >= threshold
    fp = float(rows.worth[hit & (rows.window < 0)].sum())
    total = fp
    for w in range(rows.n_windows):
        inside = hit & (rows.window == w)
        total += float(rows.worth[inside].max()) if inside.any() else -fn_w
    return total


def null_and_perfect(corpus: list[ScoredRows], profile: str = "standard") -> tuple[float, float]:
    tp_w, fn_w, _ = PROFILES[profile]
    windows = sum(r.n_windows for r in corpus)
    return -fn_w * windows, tp_w * windows


def normalised(raw: float, corpus: list[ScoredRows], profile: str = "standard") -> float:
    null, perfect = null_and_perfect(corpus, profile)
    return 100.0 * (raw - null) / (perfect - null)


def corpus_score(corpus: list[ScoredRows], threshold: float, profile: str = "standard") -> float:
    return sum(raw_score(r, threshold, profile) for r in corpus)


def optimise(corpus: list[ScoredRows], profile: str = "standard") -> tuple[float, float]:
    """(best threshold, its raw corpus score) over every distinct anomaly score, in one sweep."""
    _, fn_w, _ = PROFILES[profile]
    scores = np.concatenate([r.scores for r in corpus])
    worth = np.concatenate([r.worth for r in corpus])
    offsets = np.cumsum([0] + [r.n_windows for r in corpus[:-1]])
    window = np.concatenate(
        [np.where(r.window >= 0, r.window + o, -1) for r, o in zip(corpus, offsets, strict=True)]
    )
    n_windows = sum(r.n_windows for r in corpus)
    order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="mergesort")
    best_in = np.full(n_windows, -np.inf)
    total = -fn_w * n_windows  # threshold above every score: nothing detected
    best = (math.inf, total)
    i = 0
    while i < len(order):
        s = scores[order[i]]
        if np.isnan(s):
            break
        j = i
        while j < len(order) and scores[order[j]] == s:  # every row at this score turns on together
            r = order[j]
            w = window[r]
            if w < 0:
                total += worth[r]
            elif worth[r] > best_in[w]:
                total += worth[r] - (best_in[w] if np.isfinite(best_in[w]) else -fn_w)
                best_in[w] = worth[r]
            j += 1
        if total > best[1]:
            best = (float(s), total)
        i = j
    return best
