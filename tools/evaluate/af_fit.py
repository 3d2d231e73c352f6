"""Fit the af detector's rate weighting, rate step and threshold on the CPSC-2021 sample, leave one
subject out.

    python -m tools.evaluate.af_fit --config tools/evaluate/configs/cpsc.toml --out eval/af-fit

The af score is the RR irregularity times (0.8 s / RR trend) ** `rate_exponent`, measured after the
newest rate step larger than `rate_step` (0: off; agent/detectors/af.py). For every (exponent, step) pair
of a fixed grid the whole sample is replayed through the pipeline with those two params (the config's
other params unchanged), so every score is one the daemon would compute. Then, for each of the six
subjects, the pair and threshold with the best Youden index (Se + Sp) on the other five subjects' beats
are chosen and applied to the held-out subject; the pooled counts over the six held-out subjects are the
headline. The same choice made on all six subjects is what a config should ship
(printed at the end); its scores on those subjects are optimistic and are not reported as a result.

`--mitdb` adds an external check on data never used for fitting: the MIT-BIH subset has no AF (sinus
rhythm with PVCs, a paced record, sinus arrhythmia), so every beat the config's af detector flags there
is a false positive; reported for the config as given and for the earlier detector's settings.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from agent.config.loader import load_config
from tools.evaluate.beats_from_ecg import cpsc_from_ecg, mitdb_from_ecg
from tools.evaluate.datasets import MITDB_FS, FloatArray, Series, load_cpsc, load_mitdb
from tools.evaluate.metrics import PointMetrics
from tools.evaluate.replay import scores_with_params
from tools.evaluate.report import table, write_report
from tools.evaluate.runs import _youden_threshold

EXPONENTS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)  # fixed in advance, not searched further
# Log-ratio rate steps, 0 = off. Fixed after exploring 0.25-0.7 on all six subjects (docs/benchmarks.md).
STEPS = (0.0, 0.4, 0.5, 0.6, 0.7)
Setting = tuple[float, float]  # (rate_exponent, rate_step)


@dataclasses.dataclass(frozen=True, slots=True)
class Choice:
    exponent: float
    step: float
    threshold: float
    youden: float  # Se + Sp on the subjects it was chosen on


FOLD_COLUMNS = ["held-out subject", "AF beats", "non-AF beats", "rate_exponent", "rate_step", "threshold"]
FOLD_COLUMNS += ["Se", "Sp"]
BEFORE = {
    "verdict_beats": 16,
    "min_differences": 4,
    "two_level_fraction": 0.0,
    "rate_exponent": 0.0,
    "rate_step": 0.0,
    "threshold": 0.04,
}
# The config shipped before rate steps and verdicts from the 3rd beat (its own all-subject fit).
PREVIOUS = {
    "verdict_beats": 9,
    "min_differences": 4,
    "rate_exponent": 2.0,
    "rate_step": 0.0,
    "threshold": 0.06,
}


BEATS_TEXT = {
    "annotated": "the annotated R peaks (a perfect beat detector)",
    "ecg": "found by the gateway in the raw ECG (lead 0 / MLII, 73-sample frames, agent.ecg.qrs)",
}


def scores_by_setting(config: Path, series: list[Series], jobs: int) -> dict[Setting, list[FloatArray]]:
    """{(exponent, step): per-series af scores} from pipeline replays."""
    settings = [(e, step) for e in EXPONENTS for step in STEPS]
    work = [({"rate_exponent": e, "rate_step": step}, s) for e, step in settings for s in series]
    flat = scores_with_params(config, "af", work, jobs)
    n = len(series)
    return {k: flat[i * n : (i + 1) * n] for i, k in enumerate(settings)}


def choose(scores: dict[Setting, list[FloatArray]], series: list[Series], groups: set[str]) -> Choice:
    """Exponent, step and threshold with the best Youden index over the beats of `groups`."""
    picked = [i for i, s in enumerate(series) if s.group in groups]
    truth = np.concatenate([series[i].labels for i in picked])
    best = Choice(0.0, 0.0, float("nan"), -1.0)
    for (exponent, step), per_series in scores.items():
        s = np.concatenate([per_series[i] for i in picked])
        t = _youden_threshold(s, truth)
        m = PointMetrics.of(np.nan_to_num(s, nan=-np.inf) > t, truth)
        j = m.sensitivity + m.specificity
        if j > best.youden:
            best = Choice(exponent, step, t, j)
    return best


def external_specificity(
    config: Path,
    data: Path | None,
    jobs: int,
    overrides: dict[str, float],
    label: str,
    beats: str = "annotated",
) -> str:
    """Per-record share of MIT-BIH beats flagged as AF (all are non-AF) and the pooled specificity."""
    series = load_mitdb(data)
    if beats == "ecg":
        series = mitdb_from_ecg(series, MITDB_FS)
    series = [dataclasses.replace(s, extra={}) for s in series]  # the ECG is not needed: lighter workers
    (af,) = [d for d in load_config(config).detectors if d.type == "af"]
    threshold = float(overrides.get("threshold", af.params.get("threshold", 0.04)))
    scores = scores_with_params(config, "af", [(overrides, s) for s in series], jobs)
    flagged = [np.nan_to_num(s, nan=-np.inf) > threshold for s in scores]
    total = sum(int(f.size) for f in flagged)
    false = sum(int(f.sum()) for f in flagged)
    shares = ", ".join(f"{s.name} {f.mean():.3f}" for s, f in zip(series, flagged, strict=True))
    return (
        f"- {label}: specificity {1 - false / total:.3f} ({false} of {total} beats flagged); "
        f"flagged share per record: {shares}."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.evaluate.af_fit", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--config", type=Path, required=True, help="agent TOML with one af detector")
    parser.add_argument("--data", type=Path, default=None, help="CPSC-2021 folder (default: shared)")
    parser.add_argument("--out", type=Path, default=Path("eval-af-fit"), help="report folder")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--mitdb", action="store_true", help="also: false positives on the MIT-BIH subset")
    parser.add_argument("--mitdb-data", type=Path, default=None, help="MIT-BIH subset folder")
    parser.add_argument(
        "--beats",
        choices=("annotated", "ecg"),
        default="annotated",
        help="RR of the annotated beats, or of the beats the gateway finds in the raw ECG "
        "(tools/evaluate/beats_from_ecg.py)",
    )
    args = parser.parse_args(argv)
    series = load_cpsc(args.data) if args.beats == "annotated" else cpsc_from_ecg(args.data)
    scores = scores_by_setting(args.config, series, args.jobs)
    groups = sorted({s.group for s in series}, key=int)
    rows, total = [], PointMetrics(0, 0, 0, 0)
    for g in groups:
        fit = choose(scores, series, set(groups) - {g})
        held = [i for i, s in enumerate(series) if s.group == g]
        s = np.concatenate([scores[fit.exponent, fit.step][i] for i in held])
        truth = np.concatenate([series[i].labels for i in held])
        m = PointMetrics.of(np.nan_to_num(s, nan=-np.inf) > fit.threshold, truth)
        total += m
        rows.append(
            (
                g,
                int(truth.sum()),
                int((~truth).sum()),
                fit.exponent,
                fit.step,
                fit.threshold,
                m.sensitivity,
                m.specificity,
            )
        )
    shipped = choose(scores, series, set(groups))
    lines = [
        f"# af: rate exponent, rate step and threshold fitted leave-one-subject-out — `{args.config}`",
        "",
        f"Beats: {BEATS_TEXT[args.beats]}.",
        "",
        f"{len(series)} records, {len(groups)} subjects; exponent grid {list(EXPONENTS)}, rate step grid "
        f"{list(STEPS)}; each held-out subject is scored with the exponent, step and threshold chosen "
        "(Youden) on the other five.",
        "",
        table(
            FOLD_COLUMNS,
            rows,
        ),
        "",
        table(
            ["pooled over held-out subjects", "Se", "Sp", "PPV", "F1"],
            [("leave-one-subject-out fit", total.sensitivity, total.specificity, total.ppv, total.f1)],
        ),
        "",
        f"Fit on all {len(groups)} subjects (what a config ships; optimistic on these subjects): "
        f"rate_exponent = {shipped.exponent:g}, rate_step = {shipped.step:g}, "
        f"threshold = {shipped.threshold:.4g}.",
    ]
    if args.mitdb:
        lines += [
            "",
            "External check, MIT-BIH subset (12 records, no AF: every flagged beat is a false positive):",
            "",
            external_specificity(
                args.config, args.mitdb_data, args.jobs, {}, f"`{args.config}` as given", args.beats
            ),
            external_specificity(
                args.config,
                args.mitdb_data,
                args.jobs,
                PREVIOUS,
                f"the previous config ({PREVIOUS})",
                args.beats,
            ),
            external_specificity(
                args.config,
                args.mitdb_data,
                args.jobs,
                BEFORE,
                f"the earlier detector ({BEFORE})",
                args.beats,
            ),
        ]
    write_report(args.out, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
