"""Per-beat RR features for a learned AF combiner: an offline replica of the af detector's scoring.

Each beat's context is the newest `window_beats` RR intervals up to and including it (NaN before the
record's start), what the pipeline hands the af detector with its remembered history, so every
feature is past-only. The detector's own score comes from `AtrialFibrillationDetector.irregularity` on
those contexts (`python -m tools.evaluate.af_combine --check` compares it with pipeline replays). One
difference: after an RR longer than 2.5 nominal periods (2.5 s for the `rr` stream at rate_hz 1) the
pipeline's windows add NaN gap rows, which these contexts do not; the CPSC and MIT-BIH data have none. The
other features re-measure the same contexts with the detector's own helpers and keep what its score
throws away: the unweighted irregularity and the RR trend (a learned combination can fit the rate
weighting itself), lag-2 differences, the pattern flags and the rate-step cut.
"""

from __future__ import annotations

import warnings

import numpy as np

from agent.detectors.af import (
    AtrialFibrillationDetector,
    _after_rate_step,
    _newest_median,
    _two_levels,
    ectopic_pairs,
)
from agent.detectors.base import FloatArray
from agent.detectors.robust import nan_median

FLOOR = 1e-3  # log features: irregularities below 0.1 % of the trend all count as "regular"
NAMES = (
    "log_score",  # the detector's score (rate-weighted), log; no verdict: log(FLOOR / 10)
    "log_irregularity",  # median |ΔRR| / trend of the newest 8 clean differences, unweighted
    "log_trend",  # log median RR (s): with log_irregularity a linear model can fit the rate exponent
    "log_whole_irregularity",  # the same without the rate-step cut
    "log_lag2",  # median |RR(k) - RR(k-2)| / trend, raw intervals (the bigeminy test's numerator)
    "log_clean_lag2",  # the same on the series the score uses (ectopic pairs out, two-level residuals)
    "log_lag2_over_lag1",  # the bigeminy test's ratio
    "log_mean_diff",  # mean instead of median of the clean differences
    "no_verdict",  # the detector gives no verdict (too few differences, bigeminal rhythm)
    "bigeminal",
    "two_level",
    "ectopic_pairs",  # share of the context's intervals in an ectopic pair
    "turning_points",  # share of strict local extremes among the RR (random series: 2/3)
    "cut",  # the score was measured after a rate step
    "beats_after_step",  # share of the context the score used
    "differences",  # clean differences behind the median, / irregularity_beats
)
RECENT = "log_score_median4"  # median log score of the newest 4 beats (a record's, so also past-only)


def contexts(rr: FloatArray, width: int) -> FloatArray:
    """(T, width) matrix: row i holds RR intervals i - width + 1 .. i, NaN before the first."""
    padded = np.concatenate([np.full(width - 1, np.nan), rr])
    return np.lib.stride_tricks.sliding_window_view(padded, width).copy()


def features(detector: AtrialFibrillationDetector, rr_contexts: FloatArray) -> dict[str, FloatArray]:
    """NAMES -> (T,) features of (T, W) contexts, plus `score`, the detector's own (NaN: no verdict)."""
    score, _ = detector.irregularity(rr_contexts)
    rr_contexts = rr_contexts[:, -detector.score_beats :]  # the rules' beats (the ks term may see more)
    in_range = (rr_contexts >= detector.min_rr_s) & (rr_contexts <= detector.max_rr_s)
    rr = np.where(in_range, rr_contexts, np.nan)
    whole = _parts(detector, rr)
    cut_rr = _after_rate_step(rr, detector.rate_step) if detector.rate_step > 0 else rr
    after = _parts(detector, cut_rr)
    # The detector's choice between the two (see AtrialFibrillationDetector.irregularity).
    verdict_after = (after["count"] >= detector.min_differences) & (after["bigeminal"] == 0)
    use = verdict_after & (whole["patterned"] == 0) & (detector.rate_step > 0)
    chosen = {k: np.where(use, after[k], v) for k, v in whole.items()}
    with np.errstate(all="ignore"):
        lag_ratio = np.log(np.maximum(chosen["lag2"], FLOOR) / np.maximum(chosen["lag1"], FLOOR))
    return {
        "score": score,
        "log_score": _log(score, FLOOR / 10),
        "log_irregularity": _log(chosen["median"]),
        "log_trend": np.log(np.nan_to_num(chosen["trend"], nan=0.8)),
        "log_whole_irregularity": _log(whole["median"]),
        "log_lag2": _log(chosen["lag2"]),
        "log_clean_lag2": _log(chosen["clean_lag2"]),
        "log_lag2_over_lag1": np.nan_to_num(lag_ratio, nan=0.0),
        "log_mean_diff": _log(chosen["mean_diff"]),
        "no_verdict": np.isnan(score).astype(float),
        "bigeminal": whole["bigeminal"],
        "two_level": whole["two_level"],
        "ectopic_pairs": whole["pairs"],
        "turning_points": chosen["turning"],
        "cut": use.astype(float),
        "beats_after_step": np.where(use, (~np.isnan(cut_rr)).sum(axis=1), rr.shape[1]) / rr.shape[1],
        "differences": chosen["count"] / detector.irregularity_beats,
    }


def with_recent(feats: dict[str, FloatArray], beats: int = 4) -> dict[str, FloatArray]:
    """`feats` of one record plus RECENT: the median `log_score` of each beat and the 3 before it."""
    score = feats["log_score"]
    padded = np.concatenate([np.full(beats - 1, np.nan), score])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        recent = np.nanmedian(np.lib.stride_tricks.sliding_window_view(padded, beats), axis=1)
    return {**feats, RECENT: recent}


def _log(values: FloatArray, missing: float = FLOOR) -> FloatArray:
    return np.log(np.maximum(np.nan_to_num(values, nan=missing), missing))


def _parts(detector: AtrialFibrillationDetector, rr: FloatArray) -> dict[str, FloatArray]:
    """The detector's `_measure` on (T, W) in-range RR, keeping its intermediates (no verdict masking)."""
    trend, _ = nan_median(rr)
    ratio = rr / trend[:, None]
    pair, ectopic = ectopic_pairs(ratio, detector.ectopic_prematurity)
    clean = np.where(ectopic, np.nan, ratio)
    k = detector.irregularity_beats
    diffs = np.abs(np.diff(clean, axis=1))
    median, count = _newest_median(diffs, k)
    lag1, _ = _newest_median(np.abs(ratio[:, 1:] - ratio[:, :-1]), k)
    lag2, _ = _newest_median(np.abs(ratio[:, 2:] - ratio[:, :-2]), k)
    with np.errstate(invalid="ignore"):
        bigeminal = lag2 < detector.bigeminy_ratio * lag1
    two_level, residual = _two_levels(ratio, detector.two_level_fraction)
    two_level &= detector.two_level_fraction > 0
    residual_clean = np.where(ectopic, np.nan, residual)
    within, _ = _newest_median(np.abs(np.diff(residual_clean, axis=1)), k)
    median = np.where(two_level, within, median)
    series = np.where(two_level[:, None], residual_clean, clean)  # what the score's differences come from
    clean_lag2, _ = _newest_median(np.abs(series[:, 2:] - series[:, :-2]), k)
    newest = np.cumsum(~np.isnan(diffs[:, ::-1]), axis=1)[:, ::-1] <= k
    valid = ~np.isnan(ratio)
    mid = ratio[:, 1:-1]
    turning = ((mid > ratio[:, :-2]) & (mid > ratio[:, 2:])) | ((mid < ratio[:, :-2]) & (mid < ratio[:, 2:]))
    triples = (valid[:, 1:-1] & valid[:, :-2] & valid[:, 2:]).sum(axis=1)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_diff = np.nanmean(np.where(newest, diffs, np.nan), axis=1)
    return {
        "median": median,
        "count": count.astype(float),
        "trend": trend,
        "lag1": lag1,
        "lag2": lag2,
        "clean_lag2": clean_lag2,
        "mean_diff": mean_diff,
        "bigeminal": bigeminal.astype(float),
        "two_level": two_level.astype(float),
        "pairs": pair.sum(axis=1) / np.maximum(valid.sum(axis=1) - 1, 1),
        "turning": turning.sum(axis=1) / np.maximum(triples, 1),
        "patterned": (bigeminal | pair[:, -k:].any(axis=1) | two_level).astype(float),
    }
