"""How the af score's free parameters are chosen, and D as its own gate: leave one subject out on CPSC-2021.

    python -m tools.evaluate.af_boost --config tools/evaluate/configs/cpsc.toml --out eval/af-boost

Per beat, on its past-only context (the offline replica of af_ks_variants): S, the af detector's rules
score with the ΔRR term off, and D, the KS distance of the newest 32 in-range intervals' ΔRR / mean RR
from Normal(0, σ) (rule 9 of agent/detectors/af.py). Two rule families:

- product (the shipped rule 9): AF iff S / max(D, 0.001) ** k > threshold, σ x k x threshold fitted;
- and (Tateno & Glass' distance as a gate of its own): AF iff S > t_S and D < t_D, σ x t_D x t_S fitted.

Three ways to choose them on the five training subjects of each fold (the sixth scored, counts pooled):

- youden: pooled Se + Sp (af_fit's rule; with the product family it is af_fit --ks, 131 missed / 96 false);
- balanced: mean per-subject Se (subjects with AF) + mean per-subject Sp (subjects with non-AF beats):
  pooled Youden is dominated by the largest subjects (84's AF, 21's sinus), which are the easiest;
- goal: the fewest FN / (0.05 P) + FP / (0.03 N), equal cost at issue 5's allowances (Se 95 %, Sp 97 %).

Variants A-D (product/balanced, product/goal, and/youden, and/goal) and the adoption rule were written down
before the first run; E (af_ks_variants' bigeminy gate, rule 10 of the detector, under the goal criterion)
and F (product + af_hysteresis' rhythm state, goal) after A-D had failed, before their run. γ 2 and rate
step 0.5 are the config's. MIT-BIH (no AF) at each variant's fit on all six subjects. The scores ignore the
config's own ks_* settings (each variant sets its own).

Result (2026-12-01): A-D and F fail; E meets issue 5's goal held out, narrowly (102 missed / 84 false of
2,396 / 2,897: Se 0.957, Sp 0.971; 86 false allowed) and is in configs/cpsc.toml (its all-six fit: σ 0.34,
k 1.5, gate 0.15, threshold 0.6856). docs/benchmarks.md has the tables.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from agent.detectors.af import KS_FLOOR
from agent.detectors.rr_distribution import af_distance
from tools.evaluate.af_features import contexts
from tools.evaluate.af_hysteresis import BELOW_BEATS, RATIOS, Rules, rhythm_state
from tools.evaluate.af_ks_variants import (
    BIGEMINY_GATES,
    KS_BEATS,
    KS_EXPONENTS,
    KS_SCALES,
    error_groups,
    variant,
)
from tools.evaluate.datasets import BoolArray, FloatArray, Series, load_cpsc, load_mitdb
from tools.evaluate.metrics import PointMetrics
from tools.evaluate.report import table, write_report

GATES = tuple(round(0.10 + 0.02 * i, 2) for i in range(21))  # t_D grid of the and rule, fixed beforehand
QUANTILES = np.linspace(0.01, 0.99, 197)  # threshold candidates, as runs._youden_threshold
GOAL_SE, GOAL_SP = 0.95, 0.97

Setting = tuple[float, ...]  # product: (σ, k; 0 = S alone); and: (σ, t_D); lifted: (σ, k, gate)


@dataclasses.dataclass(frozen=True, slots=True)
class Beats:
    """One record's per-beat S, D per σ and truth."""

    name: str
    group: str
    truth: BoolArray
    s: FloatArray
    d: dict[float, FloatArray]
    lifted: FloatArray  # S with the bigeminal suppression lifted (af_ks_variants' idea 1)


def measure(config: Path, series: list[Series]) -> list[Beats]:
    out = []
    for x in series:
        detector = variant(config, (KS_SCALES[0], 0.0, 0.0, 0))  # the config's rules, ks off
        rr = x.values[:, 0]
        s, _ = detector.irregularity(contexts(rr, detector.context_beats))
        window = contexts(rr, KS_BEATS)
        wide = np.where((window >= detector.min_rr_s) & (window <= detector.max_rr_s), window, np.nan)
        d = {b: np.nan_to_num(af_distance(wide, b), nan=1.0) for b in KS_SCALES}  # as rule 9: too few = 1
        lifted, _, _ = detector._rules(wide[:, -detector.score_beats :], suppress_bigeminy=False)
        out.append(Beats(x.name, x.group, x.labels.astype(bool), s, d, lifted))
    return out


def product_score(b: Beats, setting: Setting) -> FloatArray:
    sigma, k = setting
    if k == 0:
        return b.s
    score: FloatArray = b.s / np.maximum(b.d[sigma], KS_FLOOR) ** k
    return score


def lifted_score(b: Beats, setting: Setting) -> FloatArray:
    """product_score with the bigeminal suppression lifted where D < gate (setting: σ, k, gate)."""
    sigma, k, gate = setting
    s = np.where(np.isnan(b.s) & (b.d[sigma] < gate), b.lifted, b.s) if gate > 0 else b.s
    score: FloatArray = s / np.maximum(b.d[sigma], KS_FLOOR) ** k if k > 0 else s
    return score


def and_score(b: Beats, setting: Setting) -> FloatArray:
    """S where D < t_D, else -inf (never AF); NaN (no verdict) stays NaN."""
    sigma, gate = setting
    score: FloatArray = np.where(b.d[sigma] < gate, b.s, np.where(np.isnan(b.s), np.nan, -np.inf))
    return score


Family = tuple[Callable[[Beats, Setting], FloatArray], list[Setting]]
FAMILIES: dict[str, Family] = {
    "product": (product_score, [(KS_SCALES[0], 0.0), *((b, k) for b in KS_SCALES for k in KS_EXPONENTS)]),
    "and": (and_score, [*((b, g) for b in KS_SCALES for g in GATES)]),
    "lifted": (
        lifted_score,
        [
            (KS_SCALES[0], 0.0, 0.0),
            *((b, k, g) for b in KS_SCALES for k in KS_EXPONENTS for g in BIGEMINY_GATES),
        ],
    ),
}


Counts = tuple[FloatArray, FloatArray, int, int]  # one subject's (tp, fp) per candidate, P, N


def criterion(name: str, counts: list[Counts]) -> FloatArray:
    """(C,) value of each candidate from the training subjects' counts, higher = better."""
    tp = np.sum([c[0] for c in counts], axis=0)
    fp = np.sum([c[1] for c in counts], axis=0)
    p, n = sum(c[2] for c in counts), sum(c[3] for c in counts)
    if name == "youden":
        out: FloatArray = tp / p + (n - fp) / n
        return out
    if name == "goal":
        out = -((p - tp) / ((1 - GOAL_SE) * p) + fp / ((1 - GOAL_SP) * n))
    else:  # balanced
        se = np.mean([c[0] / c[2] for c in counts if c[2]], axis=0)
        sp = np.mean([1 - c[1] / c[3] for c in counts if c[3]], axis=0)
        out = se + sp
    return out


def subject_counts(flagged: BoolArray, truth: BoolArray, subject: np.ndarray) -> list[Counts]:
    """Per subject (tp, fp) of each row of the (C, N) verdicts, with its P and N."""
    out = []
    for g in np.unique(subject):
        t, f = truth[subject == g], flagged[:, subject == g]
        out.append(((f & t).sum(axis=1), (f & ~t).sum(axis=1), int(t.sum()), int((~t).sum())))
    return out


def choose(beats: list[Beats], family: Family, how: str) -> tuple[Setting, float]:
    """The setting and threshold with the best `how` on `beats` (ties: the first, as af_fit)."""
    score_of, settings = family
    truth = np.concatenate([b.truth for b in beats])
    subject = np.concatenate([np.full(b.truth.size, b.group) for b in beats])
    best: tuple[Setting, float, float] = (settings[0], float("nan"), -np.inf)
    for setting in settings:
        s = np.nan_to_num(np.concatenate([score_of(b, setting) for b in beats]), nan=-np.inf)
        finite = s[np.isfinite(s)]
        if not finite.size:
            continue
        candidates = np.unique(np.quantile(finite, QUANTILES))
        value = criterion(how, subject_counts(s[None, :] > candidates[:, None], truth, subject))
        i = int(np.argmax(value))
        if value[i] > best[2]:
            best = (setting, float(candidates[i]), float(value[i]))
    return best[0], best[1]


ENTER_GRID = np.geomspace(0.05, 5.0, 240)  # fixed T grid of the rhythm state (the product scores' range)


def state_rules() -> Rules:
    rows = [(r, m, t) for r in RATIOS for m in BELOW_BEATS for t in ENTER_GRID]
    ratio, below, enter = (np.array(c) for c in zip(*rows, strict=True))
    return Rules(enter.astype(float), ratio.astype(float), below.astype(np.int64), np.zeros(enter.size, bool))


def choose_states(
    beats: list[Beats], how: str, fits: dict[str, set[str]]
) -> dict[str, tuple[Setting, Rules]]:
    """Per fit (training subjects), the product setting and rhythm-state rule (T, ratio, m) with the best
    `how`; each record starts in "not AF", no-verdict beats count as below the exit threshold."""
    rules = state_rules()
    best: dict[str, tuple[Setting, int, float]] = dict.fromkeys(fits, ((), -1, -np.inf))
    for setting in FAMILIES["product"][1]:
        per: dict[str, Counts] = {}
        for b in beats:
            v = rhythm_state(product_score(b, setting), rules)
            tp, fp, p, n = (
                v[b.truth].sum(axis=0),
                v[~b.truth].sum(axis=0),
                int(b.truth.sum()),
                int((~b.truth).sum()),
            )
            if b.group in per:
                old = per[b.group]
                tp, fp, p, n = old[0] + tp, old[1] + fp, old[2] + p, old[3] + n
            per[b.group] = (tp, fp, p, n)
        for f, train in fits.items():
            value = criterion(how, [per[g] for g in sorted(train)])
            i = int(np.argmax(value))
            if value[i] > best[f][2]:
                best[f] = (setting, i, float(value[i]))
    return {f: (setting, rules.pick(i)) for f, (setting, i, _) in best.items()}


def verdict(b: Beats, family: Family, setting: Setting, threshold: float) -> BoolArray:
    out: BoolArray = np.nan_to_num(family[0](b, setting), nan=-np.inf) > threshold
    return out


def onsets(beats: list[Beats], verdicts: dict[str, BoolArray]) -> list[int]:
    """Beats from each paroxysmal onset (an AF run starting inside a record) to its first flagged beat
    inside the run; -1 for an onset never flagged."""
    out = []
    for b in beats:
        edges = np.flatnonzero(np.diff(b.truth.astype(int)) == 1) + 1
        for start in edges:
            end = start + int(np.argmin(b.truth[start:])) if not b.truth[start:].all() else b.truth.size
            hit = np.flatnonzero(verdicts[b.name][start:end])
            out.append(int(hit[0]) if hit.size else -1)
    return out


VARIANTS = {  # (family, how); the baseline first, then A-F in the pre-registered order
    "baseline: product, youden (af_fit --ks)": ("product", "youden"),
    "A: product, balanced": ("product", "balanced"),
    "B: product, goal": ("product", "goal"),
    "C: and, youden": ("and", "youden"),
    "D: and, goal": ("and", "goal"),
    "check: lifted, youden (af_ks_variants' idea 1, 84 / 123)": ("lifted", "youden"),
    "E: lifted, goal": ("lifted", "goal"),
    "F: product + rhythm state, goal": ("state", "goal"),
}
Fitted = tuple[str, Callable[[Beats], BoolArray]]  # a description of the pick, and its verdicts


def fits(cpsc: list[Beats], family_name: str, how: str) -> dict[str, Fitted]:
    """Per held-out subject (and "all": the fit on all six) the picked rule."""
    groups = {b.group for b in cpsc}
    train = {g: groups - {g} for g in groups} | {"all": groups}
    out: dict[str, Fitted] = {}
    if family_name == "state":
        for f, (setting, rule) in choose_states(cpsc, how, train).items():

            def state(b: Beats, setting: Setting = setting, rule: Rules = rule) -> BoolArray:
                out: BoolArray = rhythm_state(product_score(b, setting), rule)[:, 0]
                return out

            out[f] = (f"{setting}, {rule.describe(0).replace(', no verdict below', '')}", state)
        return out
    family = FAMILIES[family_name]
    for f, subjects in train.items():
        setting, threshold = choose([b for b in cpsc if b.group in subjects], family, how)

        def single(b: Beats, setting: Setting = setting, threshold: float = threshold) -> BoolArray:
            return verdict(b, family, setting, threshold)

        out[f] = (f"{setting}, threshold {threshold:.4g}", single)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.evaluate.af_boost", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--config", type=Path, required=True, help="agent TOML with one af detector")
    parser.add_argument("--data", type=Path, default=None, help="CPSC-2021 folder (default: shared)")
    parser.add_argument("--mitdb-data", type=Path, default=None, help="MIT-BIH subset folder")
    parser.add_argument("--out", type=Path, default=Path("eval-af-boost"), help="report folder")
    args = parser.parse_args(argv)
    cpsc = measure(args.config, load_cpsc(args.data))
    mit = measure(args.config, [dataclasses.replace(s, extra={}) for s in load_mitdb(args.mitdb_data)])
    groups = sorted({b.group for b in cpsc}, key=int)
    summary, sections = [], []
    for name, (family_name, how) in VARIANTS.items():
        picked = fits(cpsc, family_name, how)
        verdicts: dict[str, BoolArray] = {}
        picks = []
        for g in groups:
            held = PointMetrics(0, 0, 0, 0)
            for b in cpsc:
                if b.group == g:
                    verdicts[b.name] = picked[g][1](b)
                    held += PointMetrics.of(verdicts[b.name], b.truth)
            picks.append((g, picked[g][0], held.fn, held.fp))
        total = sum((PointMetrics.of(verdicts[b.name], b.truth) for b in cpsc), PointMetrics(0, 0, 0, 0))
        flagged = [picked["all"][1](b) for b in mit]
        mit_sp = 1 - sum(int(f.sum()) for f in flagged) / sum(f.size for f in flagged)
        delays = onsets(cpsc, verdicts)
        found = [d for d in delays if d >= 0]
        delay = f"median {np.median(found):.0f}, max {max(found)}" if found else "n/a"
        summary.append(
            (
                name,
                total.sensitivity,
                total.specificity,
                total.fn,
                total.fp,
                mit_sp,
                f"{len(found)}/{len(delays)}",
                delay,
            )
        )
        no_verdict = {b.name: np.where(np.isnan(b.s), np.nan, 0.0) for b in cpsc}  # the rules' own
        counts = error_groups(
            [Series(b.name, b.group, ("rr",), np.zeros(0), np.zeros((0, 1)), b.truth) for b in cpsc],
            {b.name: (no_verdict[b.name], verdicts[b.name]) for b in cpsc},
        )
        shares = ", ".join(f"{b.name} {f.mean():.3f}" for b, f in zip(mit, flagged, strict=True))
        sections += [
            f"## {name}",
            "",
            table(["held-out subject", "picked on the other five", "missed", "false"], picks),
            "",
            table(["error", "where", "beats"], [(*k, v) for k, v in sorted(counts.items())]),
            "",
            f"Fit on all six subjects: {picked['all'][0]}; MIT-BIH flagged: {shares}.",
            "",
        ]
    header = ["variant", "Se", "Sp", "missed AF", "false AF", "MIT-BIH Sp (all-six fit)", "onsets flagged"]
    lines = [
        f"# af: choosing the score's parameters, and D as a gate, leave one subject out — `{args.config}`",
        "",
        table([*header, "onset delay (beats)"], summary),
        "",
        *sections,
    ]
    write_report(args.out, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
