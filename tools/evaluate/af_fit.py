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

`--ks` fits the ΔRR-distribution option instead (agent/detectors/af.py rule 9): the rate exponent and step
fixed at the config's, a grid of `ks_scale` x `ks_exponent` (ks_exponent 0: off, the config as it is)
with `ks_beats` = 32; the fold table gains the two columns.

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
# --ks: the ΔRR distribution's reference spread and exponent (0 = off), fixed before the fit.
KS_BEATS = 32
KS_SCALES = (0.30, 0.34, 0.38)
KS_EXPONENTS = (1.0, 1.5, 2.0)
# (rate_exponent, rate_step) or (rate_exponent, rate_step, ks_scale, ks_exponent)
Setting = tuple[float, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Choice:
    setting: Setting
    threshold: float
    youden: float  # Se + Sp on the subjects it was chosen on

    @property
    def exponent(self) -> float:
        return self.setting[0]

    @property
    def step(self) -> float:
        return self.setting[1]


FOLD_COLUMNS = ["held-out subject", "AF beats", "non-AF beats", "rate_exponent", "rate_step", "threshold"]
FOLD_COLUMNS += ["Se", "Sp"]
BEFORE = {
    "ks_beats": 0,
    "verdict_beats": 16,
    "min_differences": 4,
    "two_level_fraction": 0.0,
    "rate_exponent": 0.0,
    "rate_step": 0.0,
    "threshold": 0.04,
}
# The config shipped before rate steps and verdicts from the 3rd beat (its own all-subject fit).
PREVIOUS = {
    "ks_beats": 0,
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


def grid(config: Path, ks: bool) -> list[Setting]:
    """The settings af_fit replays: (exponent, step) pairs, or with `ks` the config's exponent and step
    with every (ks_scale, ks_exponent), ks_exponent 0 standing for the option off."""
    if not ks:
        return [(e, step) for e in EXPONENTS for step in STEPS]
    (af,) = [d for d in load_config(config).detectors if d.type == "af"]
    e, step = float(af.params.get("rate_exponent", 2.0)), float(af.params.get("rate_step", 0.5))
    settings: list[Setting] = [(e, step, KS_SCALES[0], 0.0)]
    return settings + [(e, step, b, k) for b in KS_SCALES for k in KS_EXPONENTS]


def params_of(setting: Setting) -> dict[str, float]:
    out = {"rate_exponent": setting[0], "rate_step": setting[1]}
    if len(setting) > 2:  # off explicitly: the config may have the option on
        on = {"ks_beats": KS_BEATS, "ks_scale": setting[2], "ks_exponent": setting[3]}
        out |= on if setting[3] > 0 else {"ks_beats": 0}
    return out


def scores_by_setting(
    config: Path, series: list[Series], jobs: int, settings: list[Setting] | None = None
) -> dict[Setting, list[FloatArray]]:
    """{setting: per-series af scores} from pipeline replays."""
    settings = grid(config, False) if settings is None else settings
    work = [(params_of(k), s) for k in settings for s in series]
    flat = scores_with_params(config, "af", work, jobs)
    n = len(series)
    return {k: flat[i * n : (i + 1) * n] for i, k in enumerate(settings)}


def choose(scores: dict[Setting, list[FloatArray]], series: list[Series], groups: set[str]) -> Choice:
    """Exponent, step and threshold with the best Youden index over the beats of `groups`."""
    picked = [i for i, s in enumerate(series) if s.group in groups]
    truth = np.concatenate([series[i].labels for i in picked])
    best = Choice((0.0, 0.0), float("nan"), -1.0)
    for setting, per_series in scores.items():
        s = np.concatenate([per_series[i] for i in picked])
        t = _youden_threshold(s, truth)
        m = PointMetrics.of(np.nan_to_num(s, nan=-np.inf) > t, truth)
        j = m.sensitivity + m.specificity
        if j > best.youden:
            best = Choice(setting, t, j)
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


def held_out(
    scores: dict[Setting, list[FloatArray]], series: list[Series], groups: list[str]
) -> tuple[list[tuple[object, ...]], PointMetrics]:
    """Per held-out subject (setting and threshold chosen on the others) rows, and the pooled counts."""
    rows: list[tuple[object, ...]] = []
    total = PointMetrics(0, 0, 0, 0)
    for g in groups:
        fit = choose(scores, series, set(groups) - {g})
        held = [i for i, s in enumerate(series) if s.group == g]
        s = np.concatenate([scores[fit.setting][i] for i in held])
        truth = np.concatenate([series[i].labels for i in held])
        m = PointMetrics.of(np.nan_to_num(s, nan=-np.inf) > fit.threshold, truth)
        total += m
        rows.append((g, int(truth.sum()), int((~truth).sum()), *fit.setting, fit.threshold))
        rows[-1] += (m.sensitivity, m.specificity)
    return rows, total


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
    parser.add_argument("--ks", action="store_true", help="fit the ΔRR-distribution option (ks_*) instead")
    args = parser.parse_args(argv)
    series = load_cpsc(args.data) if args.beats == "annotated" else cpsc_from_ecg(args.data)
    settings = grid(args.config, args.ks)
    scores = scores_by_setting(args.config, series, args.jobs, settings)
    groups = sorted({s.group for s in series}, key=int)
    rows, total = held_out(scores, series, groups)
    shipped = choose(scores, series, set(groups))
    columns = (
        FOLD_COLUMNS if not args.ks else [*FOLD_COLUMNS[:5], "ks_scale", "ks_exponent", *FOLD_COLUMNS[5:]]
    )
    pooled = [("leave-one-subject-out fit", total.sensitivity, total.specificity, total.ppv, total.f1)]
    if args.ks:  # the same protocol with the option off: the comparison that isolates it
        off = {k: v for k, v in scores.items() if k[3] == 0}
        _, without = held_out(off, series, groups)
        pooled.append(("same, ks off", without.sensitivity, without.specificity, without.ppv, without.f1))
    grid_text = (
        f"exponent grid {list(EXPONENTS)}, rate step grid {list(STEPS)}"
        if not args.ks
        else f"rate exponent and step fixed at the config's {settings[0][:2]}, ks_beats {KS_BEATS}, ks_scale "
        f"grid {list(KS_SCALES)}, ks_exponent grid {[0.0, *KS_EXPONENTS]} (0: off)"
    )
    lines = [
        f"# af: rate exponent, rate step and threshold fitted leave-one-subject-out — `{args.config}`",
        "",
        f"Beats: {BEATS_TEXT[args.beats]}.",
        "",
        f"{len(series)} records, {len(groups)} subjects; {grid_text}; each held-out subject is scored with "
        "the setting and threshold chosen (Youden) on the other five.",
        "",
        table(columns, rows),
        "",
        table(["pooled over held-out subjects", "Se", "Sp", "PPV", "F1"], pooled),
        "",
        f"Fit on all {len(groups)} subjects (what a config ships; optimistic on these subjects): "
        f"{params_of(shipped.setting)}, threshold = {shipped.threshold:.4g}.",
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
        if args.ks:
            fitted = {**params_of(shipped.setting), "threshold": shipped.threshold}
            lines.append(
                external_specificity(
                    args.config,
                    args.mitdb_data,
                    args.jobs,
                    fitted,
                    f"the all-subject fit ({fitted})",
                    args.beats,
                )
            )
    write_report(args.out, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
