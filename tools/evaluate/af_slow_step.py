"""An asymmetric rate step for the af score (AF offsets seen earlier), leave one subject out on CPSC-2021.

    python -m tools.evaluate.af_slow_step --config tools/evaluate/configs/cpsc.toml --out eval/af-slow-step

The af detector (agent/detectors/af.py) cuts its context at the newest rate step larger than `rate_step`
in log ratio, in either direction. AF at ~0.45 s turning into sinus at ~0.75 s is a log ratio of about
0.5, and the medians of 3 lag across the pause, so many beats after an AF offset are still scored with
the AF beats in their context (tools/evaluate/af_offset.py's diagnosis). Variants, past RR only:

- "asymmetric step": a slowing step is detected at a lower log ratio `s_slow` than a speeding one
  (`rate_step`); s_slow in SLOW_STEPS, capped at rate_step, fitted in each fold with γ, rate_step and
  the threshold. The fallback and the veto are the shipped ones.
- "+ cut after the pause": also, at a slowing step the cut is placed after the longest of the 6
  intervals that define the step (the pause that ends AF belongs to neither rhythm).

Protocol (pre-registered, as af_offset and af_bigeminy): γ × rate step over af_fit's grid, s_slow, and the
threshold over af_hysteresis' fixed grid, chosen by Youden on five subjects, the sixth scored; baseline =
the shipped rule chosen the same way. MIT-BIH (no AF) at the fit on all six.

Result on the CPSC-2021 sample (2026-11-30): not adopted. Baseline Se 0.941 / Sp 0.961; asymmetric step
0.939 / 0.963; + cut after the pause 0.942 / 0.962 (MIT-BIH unchanged, 0.911): within the ±0.01 that the
threshold choice alone moves. docs/benchmarks.md has the tables.
"""

from __future__ import annotations

import numpy as np

from agent.config.schema import AgentConfig
from agent.detectors.af import RATE_STEP_BEATS, AtrialFibrillationDetector
from agent.detectors.robust import nan_median
from tools.evaluate.af_hysteresis import (
    ENTER_GRID,
    ERROR_CLASSES,
    Details,
    Grid,
    Rules,
    Setting,
    choose,
    details,
    se_sp,
    subjects,
)
from tools.evaluate.af_offset import SETTINGS, Scorer, arguments, build, load, mitdb_specificity, shipped
from tools.evaluate.datasets import BoolArray, FloatArray, Series
from tools.evaluate.metrics import PointMetrics
from tools.evaluate.report import table, write_report

SLOW_STEPS = (0.3, 0.4)  # log ratio at which a slowing step is seen (capped at rate_step)


def asymmetric_cut(
    rr: FloatArray, step: float, slow: float, after_pause: bool
) -> tuple[FloatArray, BoolArray]:
    """(`rr` with the beats before each row's newest step blanked, rows whose newest step slows).

    A step at beat j: the median of beats j .. j+2 over the median of beats j-3 .. j-1 above
    exp(min(slow, step)) (slowing) or below exp(-step) (speeding). With `slow >= step` this is exactly
    agent.detectors.af._after_rate_step. `after_pause`: at a slowing step the kept beats start after the
    longest of the intervals j-3 .. j+2."""
    n, (s, w) = RATE_STEP_BEATS, rr.shape
    none = np.zeros(s, dtype=bool)
    if w < 2 * n or step <= 0:
        return rr, none
    level, _ = nan_median(np.lib.stride_tricks.sliding_window_view(rr, n, axis=1), axis=2)
    with np.errstate(all="ignore"):  # all-NaN windows: no step there
        change = np.nan_to_num(np.log(level[:, n:] / level[:, : w - 2 * n + 1]), nan=0.0)
    stepped = (change > min(slow, step)) | (change < -step)  # column c: a step at beat c + n
    newest = stepped.shape[1] - 1 - np.argmax(stepped[:, ::-1], axis=1)
    found = stepped.any(axis=1)
    rows = np.arange(s)
    slowing = found & (change[rows, newest] > 0)
    first = np.where(found, newest + n, 0)
    if after_pause:
        span = rr[rows[:, None], newest[:, None] + np.arange(2 * n)[None, :]]
        pause = newest + np.argmax(np.nan_to_num(span, nan=-np.inf), axis=1)
        first = np.where(slowing, pause + 1, first)
    return np.where(np.arange(w)[None, :] >= first[:, None], rr, np.nan), slowing


def asymmetric_scores(
    detector: AtrialFibrillationDetector, rr_contexts: FloatArray, slow: float, after_pause: bool
) -> FloatArray:
    """The detector's score (its fallback and veto unchanged) with the context cut by `asymmetric_cut`."""
    ok = (rr_contexts >= detector.min_rr_s) & (rr_contexts <= detector.max_rr_s)
    rr = np.where(ok, rr_contexts, np.nan)
    whole = detector._measure(rr)
    if detector.rate_step <= 0:
        return whole.score
    cut, _ = asymmetric_cut(rr, detector.rate_step, slow, after_pause)
    after = detector._measure(cut)
    use = ~np.isnan(after.score) & ~whole.patterned
    return np.where(use, after.score, whole.score)


def scorer(slow: float, after_pause: bool) -> Scorer:
    def score(detector: AtrialFibrillationDetector, rr_contexts: FloatArray) -> FloatArray:
        return asymmetric_scores(detector, rr_contexts, slow, after_pause)

    return score


def single_threshold() -> Rules:
    k = ENTER_GRID.size
    return Rules(ENTER_GRID.copy(), np.ones(k), np.ones(k, dtype=np.int64), np.zeros(k, dtype=bool))


Fit = tuple[int, Setting, int]  # (grid index, (γ, rate_step), threshold index)


def fit(grids: list[Grid], groups: set[str]) -> Fit:
    """The grid (s_slow), setting and threshold with the best Youden index on the records of `groups`;
    ties keep the first grid."""
    family = np.ones(grids[0].rules.enter.size, dtype=bool)
    best: tuple[float, Fit] = (-np.inf, (0, SETTINGS[0], 0))
    for k, grid in enumerate(grids):
        setting, i = choose(grid, family, SETTINGS, groups, "youden")
        rows = np.array([s.group in groups for s in grid.series])
        se, sp = se_sp(grid.counts[setting][rows].sum(axis=0))
        if se[i] + sp[i] > best[0]:
            best = (float(se[i] + sp[i]), (k, setting, i))
    return best[1]


def leave_one_subject_out(grids: list[Grid]) -> tuple[PointMetrics, list[tuple[str, Fit, PointMetrics]]]:
    groups = subjects(grids[0].series)
    total, folds = PointMetrics(0, 0, 0, 0), []
    for g in groups:
        k, setting, i = fit(grids, set(groups) - {g})
        rows = np.array([s.group == g for s in grids[k].series])
        tp, fp, tn, fn = (int(v) for v in grids[k].counts[setting][rows][:, :, i].sum(axis=0))
        m = PointMetrics(tp, fp, tn, fn)
        total += m
        folds.append((g, (k, setting, i), m))
    return total, folds


def fold_details(grids: list[Grid], folds: list[tuple[str, Fit, PointMetrics]]) -> Details:
    classes, delays, tails = {}, [], []
    for g, (k, setting, i), m in folds:
        d = details(grids[k], [(g, setting, i, m)])
        classes.update(d.classes)
        delays += d.delays
        tails += d.tails
    return Details(classes, delays, tails)


def row(
    name: str,
    config: AgentConfig,
    grids: list[Grid],
    slows: tuple[float, ...],
    scorers: list[Scorer],
    mit: list[Series],
) -> tuple[tuple[object, ...], tuple[object, ...], list[str]]:
    """(summary row, error-class row, per-fold lines) of one variant fitted over `grids` (one per s_slow)."""
    y, folds = leave_one_subject_out(grids)
    d = fold_details(grids, folds)
    found = [x for x in d.delays if x is not None]
    delay = (
        f"median {np.median([b for b, _ in found]):.0f} ({np.median([s for _, s in found]):.1f} s), "
        f"max {max(b for b, _ in found)}, missed {len(d.delays) - len(found)}"
    )
    k, setting, i = fit(grids, set(subjects(grids[0].series)))
    mit_sp, shares = mitdb_specificity(config, grids[k], setting, i, mit, scorers[k])
    total = sum(d.classes.values(), np.zeros(len(ERROR_CLASSES), dtype=np.int64))
    lines = [
        f"## {name}",
        "",
        table(
            ["held-out subject", "s_slow", "γ", "step", "threshold", "Se", "Sp", "missed", "false"],
            [
                (
                    g,
                    slows[kk],
                    st[0],
                    st[1],
                    grids[kk].rules.enter[ii],
                    m.sensitivity,
                    m.specificity,
                    m.fn,
                    m.fp,
                )
                for g, (kk, st, ii), m in folds
            ],
        ),
        "",
        f"All six: s_slow {slows[k]:g}, γ {setting[0]:g}, step {setting[1]:g}, threshold "
        f"{grids[k].rules.enter[i]:.3f}. MIT-BIH flagged share: {shares}.",
        "",
    ]
    summary = (name, y.sensitivity, y.specificity, y.ppv, y.fn, y.fp, mit_sp, delay, sum(d.tails))
    return summary, (name, *(int(v) for v in total)), lines


SUMMARY_COLUMNS = ["variant", "Se", "Sp", "PPV", "missed AF", "false AF", "MIT-BIH Sp", "onset delay (beats)"]
SUMMARY_COLUMNS += ["false beats in the 20 after offsets"]


def main(argv: list[str] | None = None) -> int:
    args = arguments(
        "python -m tools.evaluate.af_slow_step", __doc__.split("\n\n")[0], "eval-af-slow-step", argv
    )
    config, series, mit = load(args)
    rules = single_threshold()
    variants: list[tuple[str, tuple[float, ...], list[Scorer]]] = [
        ("shipped rule (baseline)", (np.inf,), [shipped]),  # s_slow inf: slowing steps at rate_step
        ("asymmetric step (s_slow fitted)", SLOW_STEPS, [scorer(x, False) for x in SLOW_STEPS]),
        (
            "asymmetric step + cut after the pause (s_slow fitted)",
            SLOW_STEPS,
            [scorer(x, True) for x in SLOW_STEPS],
        ),
    ]
    summary, classes, per_fold = [], [], []
    for name, slows, scorers in variants:
        grids = [build(config, series, sc, rules) for sc in scorers]
        s, c, lines = row(name, config, grids, slows, scorers, mit)
        summary.append(s)
        classes.append(c)
        per_fold += lines
    text = [
        f"# af: an asymmetric rate step, leave one subject out — `{args.config}`",
        "",
        f"{len(series)} records, {len(subjects(series))} subjects; γ × step grid of af_fit, s_slow "
        f"{list(SLOW_STEPS)}, threshold {ENTER_GRID[0]:g}-{ENTER_GRID[-1]:g} ({ENTER_GRID.size} log steps); "
        "Youden on the five training subjects; MIT-BIH at the fit on all six.",
        "",
        table(
            SUMMARY_COLUMNS,
            summary,
        ),
        "",
        "Missed / false beats by class (held-out folds):",
        "",
        table(["variant", *ERROR_CLASSES], classes),
        "",
        *per_fold,
    ]
    write_report(args.out, "\n".join(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
