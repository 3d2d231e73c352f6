"""MIT-BIH beat autoencoder (lead MLII), trained inter-patient, with PVC ROC-AUC alone and with RR features.

    python -m tools.train.ecg --mitdb ../shared/datasets/ECG/mitdb_tpcp_subset --out models/ecg-beat

Beats: 0.25 s before to 0.40 s after the R peak (so each beat is decided within 400 ms of its R peak),
linearly resampled to 64 points, minus the window median (baseline wander), in mV; the card's scale is
the spread of training beats. Inter-patient: two folds of six records each; a model trained on one
fold's normal beats scores the other fold's beats, and the pooled out-of-fold scores give the ROC-AUC.
The shipped model is fold A's (tested on fold B's records). The RR feature is prematurity: RR_prev over
the mean of the previous 8 RR intervals (past beats only). AE and prematurity are combined without
labels: each becomes its tail probability under the training fold's normal beats, and the two
log tail probabilities are added (Fisher's method) — nothing is fitted to PVC labels.
MIT-BIH Arrhythmia Database: Moody & Mark 2001, PhysioNet, ODC-By 1.0.
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agent.inference.beats import AFTER_S, BEFORE_S, POINTS, RR_HISTORY, beat_windows, prematurity
from tools.train.autoencoder import (
    ModelSpec,
    build_artifacts,
    card_documentation,
    digest_arrays,
    write_card,
)
from tools.train.quantize import onnx_scores
from tools.train.versioning import add_version_option

FS = 360.0
FOLD_A = ("100", "104", "106", "114", "119", "123")
FOLD_B = ("102", "105", "108", "116", "121", "200")


@dataclass(frozen=True, slots=True)
class Beats:
    record: str
    windows: NDArray[np.float32]  # (N, 64, 1) baseline-removed mV
    is_pvc: NDArray[np.bool_]
    prematurity: NDArray[np.float64]  # RR_prev / mean of the previous RR_HISTORY intervals (NaN at start)


def load_record(root: Path, record: str) -> Beats:
    with gzip.open(root / f"{record}_ecg_mlii_360hz.csv.gz", "rt") as f:
        signal = np.loadtxt(f, skiprows=1)
    table = np.genfromtxt(root / f"{record}_beats.csv", delimiter=",", skip_header=1)
    samples, pvc, rr = table[:, 0].astype(np.int64), table[:, 1] == 1, table[:, 2]
    windows, ok = beat_windows(signal, samples, FS)
    prem = prematurity(rr)
    keep = ok & np.isfinite(prem)
    return Beats(record, windows[keep], pvc[keep], prem[keep])


def roc_auc(scores: NDArray[np.float64], labels: NDArray[np.bool_]) -> float:
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    # average ranks over ties
    _, inv, counts = np.unique(scores, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    ranks = (sums / counts)[inv]
    n1 = int(labels.sum())
    n0 = len(labels) - n1
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def tail_logp(reference: NDArray[np.float64], values: NDArray[np.float64]) -> NDArray[np.float64]:
    """-log of the empirical upper tail probability of `values` under `reference` (add-one smoothed)."""
    ref = np.sort(reference)
    above = len(ref) - np.searchsorted(ref, values, side="left")
    return np.asarray(-np.log((above + 1) / (len(ref) + 1)))


def fold_scores(
    model_dir: Path, train: Sequence[Beats], test: Sequence[Beats], scale: float
) -> dict[str, NDArray[Any]]:
    """Out-of-fold AE scores (int8 ONNX), prematurity and the unsupervised combination for `test` beats."""
    path = model_dir / json.loads((model_dir / "card.json").read_text())["artifacts"]["onnx_int8"]["file"]
    normal_train = np.concatenate([b.windows[~b.is_pvc] for b in train]) / scale
    ref_ae = onnx_scores(path, normal_train.astype(np.float32))
    ref_prem = -np.concatenate([b.prematurity[~b.is_pvc] for b in train])  # earlier beat = larger
    x = (np.concatenate([b.windows for b in test]) / scale).astype(np.float32)
    ae = onnx_scores(path, x)
    prem = -np.concatenate([b.prematurity for b in test])
    labels = np.concatenate([b.is_pvc for b in test])
    combined = tail_logp(ref_ae, ae) + tail_logp(ref_prem, prem)
    return {"ae": ae, "prematurity": prem, "combined": combined, "labels": labels}


def train_fold(
    root: Path,
    out: Path,
    train_recs: Sequence[Beats],
    test_recs: Sequence[Beats],
    epochs: int,
    hidden: str,
    version: str,
) -> float:
    normal = np.concatenate([b.windows[~b.is_pvc] for b in train_recs])
    scale = float(normal.std())
    x = (normal / scale).astype(np.float32)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    n_val = len(x) // 5
    test_x = (np.concatenate([b.windows for b in test_recs]) / scale).astype(np.float32)
    spec = ModelSpec(
        "ecg-beat",
        version,
        ("MLII",),
        POINTS,
        1,
        "dense",
        tuple(int(h) for h in hidden.split(",")),
        epochs,
        0.0,
        0.995,
    )
    build_artifacts(
        spec,
        x[order[n_val:]],
        x[order[:n_val]],
        test_x,
        out,
        mean=[0.0],
        scale=[scale],
        data_sha256=digest_arrays(normal),
        data_description=(
            "MIT-BIH Arrhythmia (ODC-By 1.0) lead MLII, normal beats of records "
            f"{', '.join(b.record for b in train_recs)}; beat window {BEFORE_S} s before to {AFTER_S} s"
            f" after R, resampled to {POINTS} points, minus median"
        ),
        documentation=card_documentation(
            input_kind="beats",
            rate_hz=FS,
            licence="weights: Apache-2.0 (edge-agent); training data: MIT-BIH Arrhythmia Database, ODC-By"
            " 1.0 (Moody & Mark 2001, PhysioNet)",
            intended_use=(
                "research: a score of how unlike a normal beat one ECG beat (lead MLII) looks, for PVC-like"
                " beats, best combined with RR prematurity; one beat window per verdict"
            ),
            limits=[
                "not a medical device; not validated for diagnosis",
                f"normal beats of {len(train_recs)} MIT-BIH records only (lead MLII, 360 Hz)",
                "needs beat windows cut around R peaks; the gateway does not detect R peaks",
            ],
            tool="tools.train.ecg",
            argv=None,  # the command line this process runs
        ),
    )
    return scale


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--mitdb", type=Path, required=True, help="folder with <rec>_ecg_mlii_360hz.csv.gz + <rec>_beats.csv"
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--hidden", default="32,8")
    add_version_option(p)
    args = p.parse_args(argv)
    records = {r: load_record(args.mitdb, r) for r in FOLD_A + FOLD_B}
    fold_a, fold_b = [records[r] for r in FOLD_A], [records[r] for r in FOLD_B]
    scale_a = train_fold(args.mitdb, args.out, fold_a, fold_b, args.epochs, args.hidden, args.version)
    s_ab = fold_scores(args.out, fold_a, fold_b, scale_a)  # the shipped model on fold B records
    with tempfile.TemporaryDirectory() as tmp:  # fold B's model only serves the cross-validation figure
        other = Path(tmp)
        scale_b = train_fold(
            args.mitdb, other, fold_b, fold_a, args.epochs, args.hidden, f"{args.version}-foldB"
        )
        s_ba = fold_scores(other, fold_b, fold_a, scale_b)
    pooled = {k: np.concatenate([s_ab[k], s_ba[k]]) for k in s_ab}
    results: dict[str, Any] = {
        "protocol": "inter-patient 2-fold: train on one fold's normal beats, score the other fold; int8 ONNX",
        "folds": {"A": FOLD_A, "B": FOLD_B},
        "beats": {"total": len(pooled["labels"]), "pvc": int(pooled["labels"].sum())},
    }
    for name, s in (
        ("shipped_model_A_on_fold_B", s_ab),
        ("model_B_on_fold_A", s_ba),
        ("pooled_out_of_fold", pooled),
    ):
        results[name] = {k: roc_auc(s[k], s["labels"]) for k in ("ae", "prematurity", "combined")}
        print(
            f"{name:28s} ROC-AUC  AE {results[name]['ae']:.4f}"
            f"  prematurity {results[name]['prematurity']:.4f}"
            f"  combined {results[name]['combined']:.4f}"
        )
    (args.out / "evaluation.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    card = json.loads((args.out / "card.json").read_text(encoding="utf-8"))
    card["preprocessing"] = {
        "beat_window_s": [-BEFORE_S, AFTER_S],
        "points": POINTS,
        "baseline": "window median",
        "sample_rate_hz": FS,
        "rr_history": RR_HISTORY,
    }
    card["metrics"] = {"mitdb_pvc_roc_auc_out_of_fold": results["pooled_out_of_fold"]}
    write_card(args.out, card)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
