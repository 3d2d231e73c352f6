"""A learned combination of past-only RR features for AF, fitted leave-one-subject-out on CPSC-2021.

    python -m tools.evaluate.af_combine --config tools/evaluate/configs/cpsc.toml --out eval/af-combine

Each beat gets the features of tools/evaluate/af_features.py, measured by the config's af detector on
the beat's past-only context, and the median score of its newest 4 beats. For each variant and each of
the six subjects, the features are standardised and the model (logistic regression, or shallow boosted
trees in plain numpy) fitted on the other five subjects' beats, the threshold on its output chosen
there too (Youden, as af_fit; and, second rule, the lowest threshold with specificity >= 0.97 on those
five), then the held-out subject is scored. Pooled held-out Se / Sp / PPV and the ROC-AUC of the
held-out margins (output minus the fold's threshold) are the result. Most variants keep the detector's
no-verdict beats (first beats, bigeminal rhythm) as "not AF" and fit on the other beats; the "every
beat" ones score those too.

Not clean: the detector's rate step (0.5) and, in the `log_score` feature, rate exponent (2) are the
config's, fitted on all six subjects; the feature list and the variants were chosen while looking at
held-out results. The MIT-BIH subset (no AF) is the external check: each variant fitted on all six
subjects, threshold by Youden there, every MIT-BIH beat it flags is a false positive.

Result on the CPSC-2021 sample (2026-11-29): no variant beat the detector's own score held out (both
Se and Sp at least as good, one better by more than 0.01), and the richer ones lost MIT-BIH specificity;
the af detector has no learned mode. docs/benchmarks.md has the table.

`--check` first replays every record (CPSC and MIT-BIH) through the pipeline and stops unless the
offline score equals the pipeline's on every beat.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.config.loader import load_config
from agent.config.schema import AgentConfig
from agent.detectors.af import AtrialFibrillationDetector
from tools.evaluate.af_features import RECENT, contexts, features, with_recent
from tools.evaluate.af_models import Model, boosted_trees, logistic
from tools.evaluate.datasets import BoolArray, FloatArray, Series, load_cpsc, load_mitdb
from tools.evaluate.metrics import PointMetrics, roc_auc
from tools.evaluate.replay import replay
from tools.evaluate.report import table, write_report
from tools.evaluate.runs import _youden_threshold

TARGET_SPECIFICITY = 0.97  # the goal, as the second threshold rule
Features = dict[str, FloatArray]

BASE = ("log_irregularity", "log_trend")
ALL = (
    "log_irregularity",
    "log_trend",
    "log_whole_irregularity",
    "log_lag2",
    "log_clean_lag2",
    "log_lag2_over_lag1",
    "log_mean_diff",
    "two_level",
    "ectopic_pairs",
    "turning_points",
    "cut",
    "beats_after_step",
    "differences",
)


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    kind: str  # "threshold" (the detector's score alone), "logistic", "trees"
    features: tuple[str, ...]
    verdicts_only: bool = True  # no-verdict beats stay "not AF" and are left out of the fit
    depth: int = 2


VARIANTS = (
    Variant("detector score, threshold only (baseline)", "threshold", ("log_score",)),
    Variant("LR: log irregularity + log trend", "logistic", BASE),
    Variant("LR: + lag-2 irregularity (raw RR)", "logistic", (*BASE, "log_lag2")),
    Variant("LR: + lag-2 irregularity (clean series)", "logistic", (*BASE, "log_clean_lag2")),
    Variant("LR: + lag-2 / lag-1 ratio", "logistic", (*BASE, "log_lag2_over_lag1")),
    Variant("LR: + turning points", "logistic", (*BASE, "turning_points")),
    Variant("LR: + whole-context irregularity", "logistic", (*BASE, "log_whole_irregularity")),
    Variant("LR: all 13 features", "logistic", ALL),
    Variant("median score of the newest 4 beats, threshold only", "threshold", (RECENT,)),
    Variant("LR: score + median score of the newest 4 beats", "logistic", ("log_score", RECENT)),
    Variant("LR: log irregularity + log trend, every beat", "logistic", (*BASE, "no_verdict"), False),
    Variant("LR: + lag-2 (raw), every beat", "logistic", (*BASE, "log_lag2", "no_verdict"), False),
    Variant("boosted trees depth 2 (60 rounds): score + all 13", "trees", ("log_score", *ALL)),
    Variant("boosted trees depth 3 (60 rounds): score + all 13", "trees", ("log_score", *ALL), depth=3),
)


@dataclass(frozen=True, slots=True)
class Fitted:
    model: Callable[[Features], FloatArray]  # logit per beat; -inf where verdicts_only hides a beat
    youden: float
    at_target: float


def af_detector(config: AgentConfig) -> AtrialFibrillationDetector:
    (spec,) = [d for d in config.detectors if d.type == "af"]
    return AtrialFibrillationDetector.from_config(spec, spec.rate_hz)


def record_features(config: AgentConfig, series: list[Series]) -> list[Features]:
    out = []
    for s in series:
        detector = af_detector(config)  # fresh per record, like a replay's fresh pipeline
        out.append(with_recent(features(detector, contexts(s.values[:, 0], detector.context_beats))))
    return out


def fit(variant: Variant, feats: list[Features], labels: list[BoolArray]) -> Fitted:
    """The variant's model and thresholds fitted on the given records' beats only."""
    x = _matrix(variant, feats)
    y = np.concatenate(labels)
    verdict = np.concatenate([f["no_verdict"] == 0 for f in feats])
    rows = verdict if variant.verdicts_only else np.ones(len(y), dtype=bool)
    model: Model | None = None
    if variant.kind == "logistic":
        model = logistic(x[rows], y[rows])
    elif variant.kind == "trees":
        model = boosted_trees(x[rows], y[rows], depth=variant.depth)
    elif variant.kind != "threshold":
        raise ValueError(f"unknown kind {variant.kind!r}")

    def predict(f: Features) -> FloatArray:
        m = _matrix(variant, [f])
        z = m[:, 0] if model is None else model(m)
        return np.where(f["no_verdict"] > 0, -np.inf, z) if variant.verdicts_only else z

    z = np.concatenate([predict(f) for f in feats])
    negatives = np.sort(z[~y])
    at_target = float(negatives[int(np.ceil(TARGET_SPECIFICITY * len(negatives))) - 1])
    return Fitted(predict, _youden_threshold(z, y), at_target)


def _matrix(variant: Variant, feats: list[Features]) -> FloatArray:
    return np.column_stack([np.concatenate([f[n] for f in feats]) for n in variant.features])


@dataclass(frozen=True, slots=True)
class Held:
    rows: list[tuple[object, ...]]  # per held-out subject
    youden: PointMetrics
    at_target: PointMetrics
    auc: float


def leave_one_subject_out(variant: Variant, series: list[Series], feats: list[Features]) -> Held:
    groups = sorted({s.group for s in series}, key=int)
    rows: list[tuple[object, ...]] = []
    youden, at_target = PointMetrics(0, 0, 0, 0), PointMetrics(0, 0, 0, 0)
    margins, truths = [], []
    for g in groups:
        train = [i for i, s in enumerate(series) if s.group != g]
        held = [i for i, s in enumerate(series) if s.group == g]
        fitted = fit(variant, [feats[i] for i in train], [series[i].labels for i in train])
        z = np.concatenate([fitted.model(feats[i]) for i in held])
        truth = np.concatenate([series[i].labels for i in held])
        m = PointMetrics.of(z > fitted.youden, truth)
        youden += m
        at_target += PointMetrics.of(z > fitted.at_target, truth)
        margins.append(z - fitted.youden)
        truths.append(truth)
        rows.append((g, int(truth.sum()), int((~truth).sum()), m.sensitivity, m.specificity, m.fn, m.fp))
    auc = roc_auc(np.concatenate(margins), np.concatenate(truths))
    return Held(rows, youden, at_target, auc)


def external(
    variant: Variant,
    series: list[Series],
    feats: list[Features],
    mit: list[Series],
    mit_feats: list[Features],
) -> tuple[float, str]:
    """MIT-BIH specificity of the variant fitted on all CPSC subjects, and the flagged share per record."""
    fitted = fit(variant, feats, [s.labels for s in series])
    flagged = [fitted.model(f) > fitted.youden for f in mit_feats]
    total = sum(int(f.size) for f in flagged)
    false = sum(int(f.sum()) for f in flagged)
    shares = ", ".join(f"{s.name} {f.mean():.3f}" for s, f in zip(mit, flagged, strict=True))
    return 1.0 - false / total, shares


def check(config: AgentConfig, series: list[Series], feats: list[Features]) -> list[str]:
    """Records whose offline score differs from the pipeline's on any beat (NaN must match NaN)."""
    differ = []
    for s, f in zip(series, feats, strict=True):
        (piped,) = replay(config, s).scores.values()
        if not np.array_equal(piped, f["score"], equal_nan=True):
            differ.append(s.name)
    return differ


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.evaluate.af_combine", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--config", type=Path, required=True, help="agent TOML with one af detector")
    parser.add_argument("--data", type=Path, default=None, help="CPSC-2021 folder (default: shared)")
    parser.add_argument("--mitdb-data", type=Path, default=None, help="MIT-BIH subset folder")
    parser.add_argument("--out", type=Path, default=Path("eval-af-combine"), help="report folder")
    parser.add_argument("--check", action="store_true", help="first compare with pipeline replays")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    series = load_cpsc(args.data)
    mit = [dataclasses.replace(s, extra={}) for s in load_mitdb(args.mitdb_data)]
    feats, mit_feats = record_features(config, series), record_features(config, mit)
    lines = [
        f"# af: learned combinations of past-only RR features, leave one subject out — `{args.config}`",
        "",
    ]
    if args.check:
        differ = check(config, series + mit, feats + mit_feats)
        if differ:
            print(f"offline score differs from the pipeline's on {differ}")
            return 1
        beats = sum(len(s.times) for s in series + mit)
        lines += [
            f"Offline score equal to the pipeline's on all {len(series + mit)} records ({beats} beats).",
            "",
        ]
    summary, folds = [], []
    for variant in VARIANTS:
        held = leave_one_subject_out(variant, series, feats)
        mit_sp, shares = external(variant, series, feats, mit, mit_feats)
        y, t = held.youden, held.at_target
        summary.append(
            (
                variant.name,
                y.sensitivity,
                y.specificity,
                y.ppv,
                y.fn,
                y.fp,
                held.auc,
                t.sensitivity,
                t.specificity,
                mit_sp,
            )
        )
        folds += [
            f"## {variant.name}",
            "",
            table(FOLD_COLUMNS, held.rows),
            "",
            f"MIT-BIH flagged share: {shares}.",
            "",
        ]
    lines += [table(SUMMARY_COLUMNS, summary), "", *folds]
    write_report(args.out, "\n".join(lines))
    return 0


SUMMARY_COLUMNS = [
    "variant",
    "Se",
    "Sp",
    "PPV",
    "missed AF",
    "false AF",
    "AUC",
    "Se (Sp≥0.97 rule)",
    "Sp (Sp≥0.97 rule)",
    "MIT-BIH Sp",
]
FOLD_COLUMNS = ["held-out subject", "AF beats", "non-AF beats", "Se", "Sp", "missed", "false"]


if __name__ == "__main__":
    raise SystemExit(main())
