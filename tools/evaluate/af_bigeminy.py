"""A stricter bigeminy test for the af score (alternation at every beat), leave one subject out on CPSC-2021.

    python -m tools.evaluate.af_bigeminy --config tools/evaluate/configs/cpsc.toml --out eval/af-bigeminy

The af detector (agent/detectors/af.py) gives no verdict when a window looks bigeminal: the median
lag-2 RR difference is below `bigeminy_ratio` (0.3) times the median lag-1 one. AF that alternates
short-long by chance for a few beats passes that median test too (42 AF beats with no verdict in the
held-out folds). Bigeminy proper alternates at every beat, so the variants also require the signs of
the newest `irregularity_beats` (8) raw RR differences to alternate at all but one ("≥ 6 of 7") or at
every one ("strict") of their adjacent pairs (pairs broken by an artifact do not count). Everything
else is the shipped detector; the protocol is tools/evaluate/af_offset.py's (γ, step and threshold
chosen by Youden on five subjects, the sixth scored; MIT-BIH, whose record 200 is bigeminy, at the fit
on all six).

Result on the CPSC-2021 sample (2026-11-30): not adopted. Baseline Se 0.941 / Sp 0.961 (MIT-BIH 0.911);
≥ 6 of 7: 0.946 / 0.959 (0.908); every beat: 0.952 / 0.948 (0.898): AF beats regained for as many or more
false ones. docs/benchmarks.md has the tables.
"""

from __future__ import annotations

import numpy as np

from agent.detectors.af import (
    REFERENCE_RR_S,
    AtrialFibrillationDetector,
    _Measured,
    _newest_median,
    _two_levels,
    ectopic_pairs,
)
from agent.detectors.robust import nan_median
from tools.evaluate.af_offset import Row, Scorer, arguments, load, report, rules, shipped
from tools.evaluate.datasets import BoolArray, FloatArray
from tools.evaluate.report import write_report

BASELINE, ALL_BUT_ONE, STRICT = (
    "shipped bigeminy test",
    "+ alternation ≥ 6 of 7",
    "+ alternation at every beat",
)


def alternating(ratio: FloatArray, k: int, missing: int) -> BoolArray:
    """Rows whose newest `k` RR differences change sign at all but `missing` of their adjacent pairs."""
    d = np.diff(ratio, axis=1)[:, -k:]
    product = d[:, 1:] * d[:, :-1]
    pairs = (~np.isnan(product)).sum(axis=1)
    with np.errstate(invalid="ignore"):
        flips = (product < 0).sum(axis=1)
    result: BoolArray = flips >= pairs - missing
    return result


class StricterBigeminy(AtrialFibrillationDetector):
    """The af detector with the bigeminal test also requiring alternation (`missing` None: shipped)."""

    missing: int | None = None

    def _measure(self, rr: FloatArray, suppress_bigeminy: bool = True) -> _Measured:
        # A copy of AtrialFibrillationDetector._measure; only the `bigeminal` line differs.
        trend, _ = nan_median(rr)
        ratio = rr / trend[:, None]
        pair, ectopic = ectopic_pairs(ratio, self.ectopic_prematurity)
        clean = np.where(ectopic, np.nan, ratio)
        median, count = _newest_median(np.abs(np.diff(clean, axis=1)), self.irregularity_beats)
        enough = count >= self.min_differences
        lag1, _ = _newest_median(np.abs(ratio[:, 1:] - ratio[:, :-1]), self.irregularity_beats)
        lag2, _ = _newest_median(np.abs(ratio[:, 2:] - ratio[:, :-2]), self.irregularity_beats)
        with np.errstate(invalid="ignore"):
            bigeminal = lag2 < self.bigeminy_ratio * lag1
        if self.missing is not None:
            bigeminal &= alternating(ratio, self.irregularity_beats, self.missing)
        if suppress_bigeminy:
            enough &= ~bigeminal
        patterned = bigeminal | pair[:, -self.irregularity_beats :].any(axis=1)
        if self.two_level_fraction > 0:
            two_level, residual = _two_levels(ratio, self.two_level_fraction)
            within, _ = _newest_median(
                np.abs(np.diff(np.where(ectopic, np.nan, residual), axis=1)), self.irregularity_beats
            )
            median = np.where(two_level, within, median)
            patterned |= two_level
        with np.errstate(all="ignore"):
            score = (
                median * (REFERENCE_RR_S / trend) ** self.rate_exponent - self.bias * trend / REFERENCE_RR_S
            )
        return _Measured(np.where(enough, score, np.nan), trend, patterned)


def scorer(missing: int | None) -> Scorer:
    def score(detector: AtrialFibrillationDetector, rr_contexts: FloatArray) -> FloatArray:
        stricter = StricterBigeminy.__new__(StricterBigeminy)
        stricter.__dict__.update(detector.__dict__)
        stricter.missing = missing
        return stricter.irregularity(rr_contexts)[0]

    return score


def main(argv: list[str] | None = None) -> int:
    args = arguments(
        "python -m tools.evaluate.af_bigeminy", __doc__.split("\n\n")[0], "eval-af-bigeminy", argv
    )
    config, series, mit = load(args)
    r = rules()
    single = (r.ratio == 1) & (r.below == 1)
    scorers = {BASELINE: shipped, ALL_BUT_ONE: scorer(1), STRICT: scorer(0)}
    rows: list[Row] = [(name, name, single) for name in scorers]
    title = f"af: a stricter bigeminy test, leave one subject out — `{args.config}`"
    write_report(args.out, report(title, config, series, mit, scorers, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
