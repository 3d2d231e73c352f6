"""AF from the shape of the ΔRR distribution (Tateno & Glass 2001) and from Lorenz-plot occupancy (Sarkar
et al. 2008), over the af detector's short past-only contexts, leave one subject out on CPSC-2021.

    python -m tools.evaluate.af_density --config tools/evaluate/configs/cpsc.toml --out eval/af-density

Tateno & Glass compare a window's ΔRR histogram with reference AF ΔRR densities conditioned on the mean RR
(a Kolmogorov-Smirnov distance; small = AF-like). Here the references are learned per fold on the five
training subjects' beats whose whole context is AF, binned by the context's RR level (50 ms bins, a bin
with too few values borrows its neighbours'), and the distance is measured on 16- or 32-beat contexts (the
paroxysms are short; the paper used 100 beats). Two measurements: the raw ΔRR in seconds conditioned on the
mean RR (the paper's), and the detector's own cleaned series (after its rate-step cut and ectopic-pair
removal, ΔRR / trend) conditioned on the trend.

Sarkar's AF Evidence counts the occupied 40-ms bins of the Lorenz plot (ΔRR_i against ΔRR_i-1) outside the
origin bin, minus the points in the origin bin, minus twice the ectopic evidence. With 16 beats there are at
most 14 points, so it is a coarse count; the ectopic evidence here is the detector's ectopic pairs (the
paper's PAC segments serve the same purpose), and a cleaned variant counts on the detector's series.

Each measure is scored alone (threshold by Youden on the training subjects) and with the detector's score
(logistic regression over the two logs, tools/evaluate/af_models.py, on the training subjects' beats that
have a detector verdict; other beats stay "not AF"). The baseline is the detector's score with its
threshold re-chosen per fold the same way. The MIT-BIH subset (no AF) is the external check: each variant
fitted on all six subjects, every MIT-BIH beat it flags is a false positive.
"""

from __future__ import annotations

import argparse
import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.config.loader import load_config
from agent.detectors.af import AtrialFibrillationDetector, _after_rate_step, ectopic_pairs
from agent.detectors.robust import nan_median
from agent.detectors.rr_distribution import normal_cdf
from tools.evaluate.af_combine import af_detector
from tools.evaluate.af_features import contexts
from tools.evaluate.af_models import logistic
from tools.evaluate.datasets import BoolArray, FloatArray, Series, load_cpsc, load_mitdb
from tools.evaluate.metrics import PointMetrics, roc_auc
from tools.evaluate.report import table, write_report
from tools.evaluate.runs import _youden_threshold

LEVEL_BIN_S = 0.05  # Tateno & Glass's mean-RR bins
LEVEL_RANGE_S = (0.3, 1.5)
MIN_REFERENCE = 400  # values a bin's reference needs; fewer: the neighbouring bins' values are added
LORENZ_BIN_S = 0.04  # Sarkar's 40-ms bins
LORENZ_BIN_RATIO = 0.05  # the same on ΔRR / trend (40 ms at 0.8 s)
FLOOR = 1e-3


# -- the measures (pure functions of the contexts) ----------------------------------------------------------


def chosen_series(detector: AtrialFibrillationDetector, rr: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(cleaned RR ratios (T, W), trend (T,)) of (T, W) contexts, as the detector's score measures them:
    after its newest rate step when it uses the cut, ectopic pairs blanked, intervals over the trend."""
    rr = np.where((rr >= detector.min_rr_s) & (rr <= detector.max_rr_s), rr, np.nan)
    if detector.rate_step > 0:
        cut = _after_rate_step(rr, detector.rate_step)
        use = ~np.isnan(detector._measure(cut).score) & ~detector._measure(rr).patterned
        rr = np.where(use[:, None], cut, rr)
    trend, _ = nan_median(rr)
    ratio = rr / trend[:, None]
    _, ectopic = ectopic_pairs(ratio, detector.ectopic_prematurity)
    return np.where(ectopic, np.nan, ratio), trend


@dataclass(frozen=True, slots=True)
class Reference:
    """Reference AF ΔRR samples, one sorted array per RR-level bin."""

    edges: FloatArray  # bin edges of the conditioning RR level (s)
    samples: list[FloatArray]

    def bin_of(self, level: FloatArray) -> np.ndarray:
        index = np.searchsorted(self.edges, np.nan_to_num(level, nan=0.8), side="right") - 1
        return np.clip(index, 0, len(self.edges) - 2)


def fit_reference(deltas: FloatArray, level: FloatArray, min_values: int = MIN_REFERENCE) -> Reference:
    """Reference from (N, K) ΔRR rows of AF contexts (NaN gaps) and each row's RR level (N,).

    A bin with fewer than `min_values` values grows symmetrically over its neighbours until it has them."""
    edges = np.arange(LEVEL_RANGE_S[0], LEVEL_RANGE_S[1] + LEVEL_BIN_S / 2, LEVEL_BIN_S)
    n_bins = len(edges) - 1
    ref = Reference(edges, [])
    rows = ref.bin_of(level)
    per_bin = [deltas[rows == b].ravel() for b in range(n_bins)]
    per_bin = [v[~np.isnan(v)] for v in per_bin]
    samples = []
    for b in range(n_bins):
        grow = 0
        values = per_bin[b]
        while values.size < min_values and grow < n_bins:
            grow += 1
            parts = per_bin[max(b - grow, 0) : b + grow + 1]
            values = np.concatenate(parts)
        samples.append(np.sort(values))
    return Reference(edges, samples)


def ks_distance(
    deltas: FloatArray, level: FloatArray, reference: Reference, min_values: int = 2
) -> FloatArray:
    """Kolmogorov-Smirnov distance of each (T, K) row's ΔRR values (NaN ignored) from the reference of its
    RR level; NaN where a row has fewer than `min_values` values."""
    out = np.full(len(deltas), np.nan)
    bins = reference.bin_of(level)
    ordered = np.sort(deltas, axis=1)  # NaN last
    n = (~np.isnan(ordered)).sum(axis=1)
    for b in np.unique(bins):
        rows = np.flatnonzero((bins == b) & (n >= min_values))
        ref = reference.samples[b]
        if rows.size == 0 or ref.size == 0:
            continue
        x = ordered[rows]
        m = n[rows][:, None]
        i = np.arange(1, x.shape[1] + 1)[None, :]
        filled = np.nan_to_num(x, nan=np.inf)
        right = np.searchsorted(ref, filled, side="right") / ref.size
        left = np.searchsorted(ref, filled, side="left") / ref.size
        gap = np.maximum(i / m - right, left - (i - 1) / m)
        out[rows] = np.where(i <= m, gap, -np.inf).max(axis=1)
    return out


def laplace_cdf(x: FloatArray) -> FloatArray:
    """Standard Laplace CDF (±inf allowed)."""
    with np.errstate(over="ignore"):
        out: FloatArray = np.where(
            x < 0, 0.5 * np.exp(np.minimum(x, 0.0)), 1.0 - 0.5 * np.exp(-np.maximum(x, 0.0))
        )
    return out


def parametric_distance(
    x: FloatArray, cdf: Callable[[FloatArray], FloatArray], min_values: int = 2
) -> FloatArray:
    """KS distance of each (T, K) row of values (NaN ignored) from a fixed CDF; NaN below `min_values`."""
    ordered = np.sort(x, axis=1)
    n = (~np.isnan(ordered)).sum(axis=1)[:, None]
    i = np.arange(1, ordered.shape[1] + 1)[None, :]
    f = cdf(np.nan_to_num(ordered, nan=np.inf))
    size = np.maximum(n, 1)
    gap = np.where(i <= n, np.maximum(i / size - f, f - (i - 1) / size), -np.inf)
    out: FloatArray = np.where(n[:, 0] >= min_values, gap.max(axis=1, initial=-np.inf), np.nan)
    return out


def lorenz_evidence(deltas: FloatArray, bin_width: float, ectopic: FloatArray | None = None) -> FloatArray:
    """Sarkar's AF Evidence of each (T, K) row of ΔRR (NaN gaps): occupied Lorenz-plot bins (ΔRR_i against
    ΔRR_i-1, `bin_width` squares, the origin bin centred on 0) outside the origin, minus the points in the
    origin bin, minus twice `ectopic` (T,) when given. NaN with no point."""
    x, y = deltas[:, :-1], deltas[:, 1:]
    valid = ~np.isnan(x) & ~np.isnan(y)
    bx = np.round(np.nan_to_num(x) / bin_width).astype(np.int64)
    by = np.round(np.nan_to_num(y) / bin_width).astype(np.int64)
    origin = valid & (bx == 0) & (by == 0)
    code = np.where(valid & ~origin, (bx + 1000) * 4096 + (by + 1000), -1)
    ordered = np.sort(code, axis=1)
    distinct = (ordered[:, 1:] != ordered[:, :-1]) & (ordered[:, 1:] >= 0)
    occupied = distinct.sum(axis=1) + (ordered[:, 0] >= 0)
    evidence = (occupied - origin.sum(axis=1)).astype(float)
    if ectopic is not None:
        evidence -= 2.0 * ectopic
    return np.where(valid.any(axis=1), evidence, np.nan)


# -- per-record measurements and the leave-one-subject-out loop ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    score: FloatArray  # the detector's (NaN: no verdict)
    labels: BoolArray
    pure: BoolArray  # every beat of the 32-beat context is AF (reference material)
    raw: dict[int, tuple[FloatArray, FloatArray]]  # width -> (ΔRR s, mean RR)
    clean: dict[int, tuple[FloatArray, FloatArray]]  # width -> (Δ ratio, trend)
    lorenz: dict[str, FloatArray]


WIDTHS = (16, 24, 32)


def measure(detector: AtrialFibrillationDetector, s: Series) -> Record:
    rr_all = s.values[:, 0]
    score, _ = detector.irregularity(contexts(rr_all, detector.context_beats))
    raw, clean = {}, {}
    for w in WIDTHS:
        rr = contexts(rr_all, w)
        in_range = np.where((rr >= detector.min_rr_s) & (rr <= detector.max_rr_s), rr, np.nan)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(in_range, axis=1)
        raw[w] = (np.diff(in_range, axis=1), mean)
        ratio, trend = chosen_series(detector, rr)
        clean[w] = (np.diff(ratio, axis=1), trend)
    rr16 = contexts(rr_all, 16)
    in16 = np.where((rr16 >= detector.min_rr_s) & (rr16 <= detector.max_rr_s), rr16, np.nan)
    trend16, _ = nan_median(in16)
    pair, _ = ectopic_pairs(in16 / trend16[:, None], detector.ectopic_prematurity)
    labels = s.labels.astype(bool)
    pure = contexts(labels.astype(float), 32).min(axis=1) == 1.0
    lorenz = {
        "raw": lorenz_evidence(np.diff(in16, axis=1), LORENZ_BIN_S, pair.sum(axis=1).astype(float)),
        "clean": lorenz_evidence(clean[16][0], LORENZ_BIN_RATIO),
    }
    return Record(score, labels, np.nan_to_num(pure, nan=0.0).astype(bool), raw, clean, lorenz)


def _log_score(r: Record) -> FloatArray:
    return np.log(np.maximum(np.nan_to_num(r.score, nan=FLOOR / 10), FLOOR / 10))


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    # "score"; "ks-raw", "ks-clean" (binned references); "ks-normal", "ks-laplace" (ΔRR / mean RR against
    # a one-parameter family, its scale fitted on the training AF); "lorenz-raw", "lorenz-clean"
    kind: str
    width: int = 16
    combined: str = ""  # "": alone; "lr": logistic with the detector's log score; "product": see below


# "product": log score - k * log KS distance, k from this grid and the threshold chosen together (Youden) on
# the training subjects: what a detector can compute as score / D ** k (agent/detectors/af.py rule 9).
PRODUCT_EXPONENTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


VARIANTS = (
    Variant("detector score, threshold per fold (baseline)", "score"),
    Variant("Tateno KS, raw ΔRR given mean RR, 16 beats, alone", "ks-raw", 16),
    Variant("Tateno KS, raw ΔRR given mean RR, 32 beats, alone", "ks-raw", 32),
    Variant("Tateno KS, clean ΔRR/trend given trend, 16 beats, alone", "ks-clean", 16),
    Variant("Tateno KS, clean ΔRR/trend given trend, 32 beats, alone", "ks-clean", 32),
    Variant("LR: detector score + KS raw 16", "ks-raw", 16, "lr"),
    Variant("LR: detector score + KS raw 32", "ks-raw", 32, "lr"),
    Variant("LR: detector score + KS clean 16", "ks-clean", 16, "lr"),
    Variant("LR: detector score + KS clean 32", "ks-clean", 32, "lr"),
    *(
        Variant(f"score / D^k, D from ΔRR/mean RR vs {family} ({w} beats)", f"ks-{family}", w, "product")
        for family in ("normal", "laplace")
        for w in WIDTHS
    ),
    Variant("LR: detector score + KS normal 32", "ks-normal", 32, "lr"),
    Variant("Sarkar AF Evidence, raw 40 ms, 16 beats, alone", "lorenz-raw"),
    Variant("Sarkar AF Evidence, clean ΔRR/trend 0.05, 16 beats, alone", "lorenz-clean"),
    Variant("LR: detector score + AF Evidence raw", "lorenz-raw", 16, "lr"),
    Variant("LR: detector score + AF Evidence clean", "lorenz-clean", 16, "lr"),
)
FAMILIES: dict[str, Callable[[FloatArray], FloatArray]] = {"normal": normal_cdf, "laplace": laplace_cdf}


def _scaled(r: Record, width: int) -> FloatArray:
    deltas, mean = r.raw[width]
    return deltas / mean[:, None]


def _reference(variant: Variant, records: list[Record]) -> Reference | float | None:
    """The binned reference, or a family's scale (normal: SD; Laplace: mean |x|), from the training AF."""
    if not variant.kind.startswith("ks"):
        return None
    family = variant.kind.removeprefix("ks-")
    if family in FAMILIES:
        x = np.concatenate([_scaled(r, variant.width)[r.pure] for r in records]).ravel()
        x = x[~np.isnan(x)]
        return float(np.std(x) if family == "normal" else np.mean(np.abs(x)))
    source = "raw" if variant.kind == "ks-raw" else "clean"
    parts = [getattr(r, source)[variant.width] for r in records]
    pure = np.concatenate([r.pure for r in records])
    deltas = np.concatenate([p[0] for p in parts])[pure]
    level = np.concatenate([p[1] for p in parts])[pure]
    return fit_reference(deltas, level)


def _measure(variant: Variant, r: Record, ref: Reference | float | None) -> FloatArray:
    """The variant's own measure, higher = more AF-like, NaN = no verdict."""
    if variant.kind == "score":
        return r.score
    if isinstance(ref, float):
        cdf = FAMILIES[variant.kind.removeprefix("ks-")]
        return -parametric_distance(_scaled(r, variant.width) / ref, cdf)
    if ref is not None:
        source = r.raw if variant.kind == "ks-raw" else r.clean
        deltas, level = source[variant.width]
        return -ks_distance(deltas, level, ref)
    return r.lorenz[variant.kind.removeprefix("lorenz-")]


def fit(variant: Variant, records: list[Record]) -> Callable[[Record], FloatArray]:
    """The variant's per-beat decision value fitted on `records`, and its threshold (returned as margin)."""
    ref = _reference(variant, records)
    y = np.concatenate([r.labels for r in records])
    if variant.combined == "product":
        distances = [np.maximum(np.nan_to_num(-_measure(variant, r, ref), nan=1.0), FLOOR) for r in records]
        best = (-1.0, 0.0, 0.0)
        for k in PRODUCT_EXPONENTS:
            z = np.concatenate(
                [
                    np.where(np.isnan(r.score), np.nan, _log_score(r) - k * np.log(d))
                    for r, d in zip(records, distances, strict=True)
                ]
            )
            t = _youden_threshold(z, y)
            m = PointMetrics.of(np.nan_to_num(z, nan=-np.inf) > t, y)
            if m.sensitivity + m.specificity > best[0]:
                best = (m.sensitivity + m.specificity, k, t)
        _, k, t = best

        def product(r: Record) -> FloatArray:
            d = np.maximum(np.nan_to_num(-_measure(variant, r, ref), nan=1.0), FLOOR)
            return np.where(np.isnan(r.score), -np.inf, _log_score(r) - k * np.log(d) - t)

        return product
    if variant.combined == "lr":
        verdict = np.concatenate([~np.isnan(r.score) & ~np.isnan(_measure(variant, r, ref)) for r in records])
        x = np.concatenate([_features(variant, r, ref) for r in records])
        model = logistic(x[verdict], y[verdict])

        def value(r: Record) -> FloatArray:
            ok = ~np.isnan(r.score) & ~np.isnan(_measure(variant, r, ref))
            return np.where(ok, model(_features(variant, r, ref)), -np.inf)
    else:

        def value(r: Record) -> FloatArray:
            return np.nan_to_num(_measure(variant, r, ref), nan=-np.inf)

    z = np.concatenate([value(r) for r in records])
    threshold = _youden_threshold(np.where(np.isfinite(z), z, np.nan), y)
    return lambda r: value(r) - threshold


def _features(variant: Variant, r: Record, ref: Reference | float | None) -> FloatArray:
    m = _measure(variant, r, ref)
    if variant.kind.startswith("ks"):
        second = np.log(np.maximum(np.nan_to_num(-m, nan=1.0), FLOOR))
    else:
        second = np.nan_to_num(m, nan=0.0)
    return np.column_stack([_log_score(r), second])


def leave_one_subject_out(
    variant: Variant, series: list[Series], records: list[Record]
) -> tuple[PointMetrics, float, list[tuple[object, ...]]]:
    total = PointMetrics(0, 0, 0, 0)
    margins, truths = [], []
    rows: list[tuple[object, ...]] = []
    for g in sorted({s.group for s in series}, key=int):
        train = [r for s, r in zip(series, records, strict=True) if s.group != g]
        held = [r for s, r in zip(series, records, strict=True) if s.group == g]
        margin = fit(variant, train)
        z = np.concatenate([margin(r) for r in held])
        truth = np.concatenate([r.labels for r in held])
        m = PointMetrics.of(z > 0, truth)
        total += m
        margins.append(z)
        truths.append(truth)
        rows.append((g, m.sensitivity, m.specificity, m.fn, m.fp))
    auc = roc_auc(np.concatenate(margins), np.concatenate(truths))
    return total, auc, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.evaluate.af_density", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--config", type=Path, required=True, help="agent TOML with one af detector")
    parser.add_argument("--data", type=Path, default=None, help="CPSC-2021 folder (default: shared)")
    parser.add_argument("--mitdb-data", type=Path, default=None, help="MIT-BIH subset folder")
    parser.add_argument("--out", type=Path, default=Path("eval-af-density"), help="report folder")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    series = load_cpsc(args.data)
    mit = [dataclasses.replace(s, extra={}) for s in load_mitdb(args.mitdb_data)]
    records = [measure(af_detector(config), s) for s in series]
    mit_records = [measure(af_detector(config), s) for s in mit]
    summary, folds = [], []
    for variant in VARIANTS:
        held, auc, rows = leave_one_subject_out(variant, series, records)
        margin = fit(variant, records)
        flagged = [margin(r) > 0 for r in mit_records]
        false = sum(int(f.sum()) for f in flagged)
        total = sum(int(f.size) for f in flagged)
        shares = ", ".join(f"{s.name} {f.mean():.3f}" for s, f in zip(mit, flagged, strict=True))
        summary.append(
            (variant.name, held.sensitivity, held.specificity, held.fn, held.fp, auc, 1 - false / total)
        )
        folds += [
            f"## {variant.name}",
            "",
            table(["held-out subject", "Se", "Sp", "missed", "false"], rows),
            "",
            f"MIT-BIH flagged share: {shares}.",
            "",
        ]
    columns = ["variant", "Se", "Sp", "missed AF", "false AF", "AUC", "MIT-BIH Sp"]
    lines = [
        "# af: ΔRR density (Tateno & Glass), Lorenz evidence (Sarkar), leave one subject out"
        f" — `{args.config}`",
        "",
        table(columns, summary),
        "",
        *folds,
    ]
    write_report(args.out, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
