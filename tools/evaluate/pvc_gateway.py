"""The gateway's `pvc` detector on MIT-BIH, end to end: beats found in the raw ECG, scored by the pipeline.

    python -m tools.evaluate.pvc_gateway --config tools/evaluate/configs/pvc.toml --out eval/pvc-gateway

Each of the 12 MIT-BIH records' MLII ECG is cut into device frames and passed through the daemon's
ECG -> RR stage (`tools.evaluate.beats_from_ecg.mitdb_from_ecg`: `agent.ecg.rr_from_ecg` with the QRS
detector and the beat shapes), so every beat carries the channels the daemon gives it (rr, hr,
qrs_shape); a beat is a PVC when it lies within 150 ms of an annotated PVC. The RR stream is then
replayed through `agent.pipeline.Pipeline` (`tools.evaluate.replay.replay`) with the config's `pvc`
detector, once per weight of `WEIGHTS` (the config's other params unchanged) and once as configured;
every score is one the daemon would compute. Beats without a verdict (the first beats of a record, a
beat without a shape) count as "not PVC", as `roc_auc` reads NaN.

Reported: per-beat ROC-AUC pooled and per record with the weight chosen leave-one-record-out (the
weight with the best pooled AUC on the other 11 records), as `tools/evaluate/pvc.py` chooses it on the
annotated beats; Se / Sp / PPV at the config's fixed threshold; Se / Sp with weight and threshold (Youden)
both chosen on the other records; prematurity alone and shape alone on the same detected beats; the
evaluation-side reference (`tools.evaluate.pvc`, annotated R peaks) beside them; and the choice on all
12 records, which is what a config should ship. About 70-90 s with `--jobs 2` on this shared 2-core x86
VM (the QRS detection and shapes 30 s, then 6 replays of 25,249 beats).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from agent.config.loader import load_config
from agent.inference.beats import prematurity
from tools.evaluate import pvc
from tools.evaluate.beats_from_ecg import MATCH_S, mitdb_from_ecg
from tools.evaluate.datasets import MITDB_FS, T0, FloatArray, Series, load_mitdb
from tools.evaluate.metrics import PointMetrics, roc_auc
from tools.evaluate.replay import scores_with_params
from tools.evaluate.report import table, write_report
from tools.evaluate.runs import _youden_threshold

WEIGHTS = pvc.WEIGHTS  # the reference's grid, fixed in advance


def missed_pvcs(annotated: list[Series], detected: list[Series]) -> list[int]:
    """Per record, the annotated PVCs no detected beat lies within `MATCH_S` of (absent from the AUC)."""
    out = []
    for a, d in zip(annotated, detected, strict=True):
        pvc_t = a.extra["r_peak"][a.labels] / MITDB_FS
        beat_t = d.times - T0
        if not len(beat_t):
            out.append(len(pvc_t))
            continue
        nearest = np.clip(np.searchsorted(beat_t, pvc_t), 1, len(beat_t) - 1)
        gap = np.minimum(np.abs(beat_t[nearest] - pvc_t), np.abs(beat_t[nearest - 1] - pvc_t))
        out.append(int((gap > MATCH_S).sum()))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.evaluate.pvc_gateway", description=__doc__)
    parser.add_argument("--config", type=Path, default=Path("tools/evaluate/configs/pvc.toml"))
    parser.add_argument("--data", type=Path, default=None, help="dataset folder (default: ../shared/...)")
    parser.add_argument("--out", type=Path, default=Path("eval/pvc-gateway"))
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    write_report(args.out, evaluate(args.config, load_mitdb(args.data), args.jobs))
    return 0


def evaluate(config_path: Path, annotated: list[Series], jobs: int) -> str:
    """The report for the records of `load_mitdb` (annotated beats, with their `extra` ECG)."""
    detected = mitdb_from_ecg(annotated, MITDB_FS)
    missed = missed_pvcs(annotated, detected)
    reference = [pvc.beat_parts(s) for s in annotated]  # before the ECG is dropped
    annotated_labels = [s.labels for s in annotated]
    detected = [dataclasses.replace(s, extra={}) for s in detected]  # lighter workers
    settings: list[dict[str, float]] = [{}, *({"weight": w} for w in WEIGHTS)]
    flat = scores_with_params(config_path, "pvc", [(o, s) for o in settings for s in detected], jobs)
    n = len(detected)
    configured = flat[:n]
    by_weight = {w: flat[n * (k + 1) : n * (k + 2)] for k, w in enumerate(WEIGHTS)}
    return _report(config_path, detected, configured, by_weight, missed, reference, annotated_labels)


def _pooled_auc(scores: list[FloatArray], labels: list[np.ndarray], records: list[int]) -> float:
    return roc_auc(np.concatenate([scores[j] for j in records]), np.concatenate([labels[j] for j in records]))


def _report(
    config_path: Path,
    detected: list[Series],
    configured: list[FloatArray],
    by_weight: dict[float, list[FloatArray]],
    missed: list[int],
    reference: list[tuple[FloatArray, FloatArray]],
    annotated_labels: list[np.ndarray],
) -> str:
    labels = [s.labels for s in detected]
    n = len(detected)
    every = list(range(n))
    (pvc_cfg,) = [d for d in load_config(config_path).detectors if d.type == "pvc"]
    # Leave one record out: the weight, then the threshold (Youden) at that weight, on the other 11.
    chosen_w, chosen_t, held_out, held_metrics = [], [], [], []
    for i in every:
        train = [j for j in every if j != i]
        w = max(WEIGHTS, key=lambda w: _pooled_auc(by_weight[w], labels, train))
        t = _youden_threshold(
            np.concatenate([by_weight[w][j] for j in train]), np.concatenate([labels[j] for j in train])
        )
        chosen_w.append(w)
        chosen_t.append(t)
        held_out.append(by_weight[w][i])
        held_metrics.append(PointMetrics.of(np.nan_to_num(by_weight[w][i], nan=-np.inf) > t, labels[i]))
    y = np.concatenate(labels)
    prem = [prematurity(s.values[:, 0]) for s in detected]
    shape = [s.values[:, s.channels.index("qrs_shape")] for s in detected]
    threshold = float(pvc_cfg.params.get("threshold", np.nan))
    fixed = [
        PointMetrics.of(np.nan_to_num(c, nan=-np.inf) > threshold, t)
        for c, t in zip(configured, labels, strict=True)
    ]
    fixed_total = sum(fixed, PointMetrics(0, 0, 0, 0))
    loro_total = sum(held_metrics, PointMetrics(0, 0, 0, 0))
    best_all = max(WEIGHTS, key=lambda w: _pooled_auc(by_weight[w], labels, every))
    youden_all = _youden_threshold(np.concatenate(by_weight[best_all]), y)
    unjudged = [int(np.isnan(c).sum()) for c in configured]
    unjudged_pvc = [int((np.isnan(c) & t).sum()) for c, t in zip(configured, labels, strict=True)]
    # The evaluation-side reference on the annotated R peaks, weight chosen leave-one-record-out.
    ref_held = []
    for i in every:
        train = [j for j in every if j != i]
        ref_y = np.concatenate([annotated_labels[j] for j in train])
        w = max(
            WEIGHTS,
            key=lambda w: roc_auc(np.concatenate([pvc.combined(*reference[j], w) for j in train]), ref_y),
        )
        ref_held.append(pvc.combined(*reference[i], w))
    ref_y_all = np.concatenate(annotated_labels)
    rows = [
        (
            s.name,
            int(t.sum()),
            len(t),
            m_,
            u,
            roc_auc(-p, t),
            roc_auc(sh, t),
            roc_auc(h, t),
            f"{w:g}",
            f"{hm.sensitivity:.3f} / {hm.specificity:.3f}",
            f"{f.sensitivity:.3f} / {f.specificity:.3f}",
        )
        for s, t, m_, u, p, sh, h, w, hm, f in zip(
            detected,
            labels,
            missed,
            unjudged_pvc,
            prem,
            shape,
            held_out,
            chosen_w,
            held_metrics,
            fixed,
            strict=True,
        )
    ]
    pooled = [
        (
            "prematurity alone (RR / mean of the 8 previous RR), detected beats",
            roc_auc(-np.concatenate(prem), y),
        ),
        ("qrs_shape alone, detected beats", roc_auc(np.concatenate(shape), y)),
        *(
            (f"pvc detector, weight {w:g}, detected beats", _pooled_auc(by_weight[w], labels, every))
            for w in WEIGHTS
        ),
        (
            "**pvc detector, weight leave-one-record-out, detected beats**",
            roc_auc(np.concatenate(held_out), y),
        ),
        ("pvc detector as configured, detected beats", roc_auc(np.concatenate(configured), y)),
        (
            "reference (tools/evaluate/pvc.py) on the annotated R peaks, weight leave-one-record-out",
            roc_auc(np.concatenate(ref_held), ref_y_all),
        ),
        (
            "reference prematurity alone, annotated R peaks",
            roc_auc(-np.concatenate([p for p, _ in reference]), ref_y_all),
        ),
    ]
    lines = [
        "# PVC per beat: the gateway's pvc detector on the beats it finds in the raw MIT-BIH ECG",
        "",
        f"{n} records, {y.size} detected beats, {int(y.sum())} of them PVC (within "
        f"{MATCH_S * 1000:.0f} ms of an annotated one); {sum(missed)} annotated PVCs had no detected "
        "beat (not in the AUC). "
        f"{sum(unjudged)} beats had no verdict ({sum(unjudged_pvc)} PVCs), counted as not PVC.",
        "",
        table(["score", "pooled ROC-AUC"], pooled),
        "",
        table(
            [
                "record",
                "PVC",
                "beats",
                "PVC missed by QRS",
                "PVC unjudged",
                "AUC prematurity",
                "AUC qrs_shape",
                "AUC pvc (LORO weight)",
                "weight",
                "Se / Sp, weight + threshold LORO",
                f"Se / Sp at {threshold:g}",
            ],
            rows,
        ),
        "",
        f"At the config's fixed threshold {threshold:g} (weight {pvc_cfg.params.get('weight', 'default')}): "
        f"Se {fixed_total.sensitivity:.3f}, Sp {fixed_total.specificity:.3f}, PPV {fixed_total.ppv:.3f} "
        f"(TP {fixed_total.tp}, FP {fixed_total.fp}, FN {fixed_total.fn}).",
        f"Weight and threshold (Youden) chosen leave-one-record-out: Se {loro_total.sensitivity:.3f}, "
        f"Sp {loro_total.specificity:.3f}, PPV {loro_total.ppv:.3f}; thresholds "
        f"{min(chosen_t):.3f} .. {max(chosen_t):.3f}.",
        f"Chosen on all {n} records (what a config should ship): weight {best_all:g}, "
        f"threshold (Youden) {youden_all:.3f}.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
