"""MIT-BIH sliding-window ECG autoencoder (lead MLII, 250 Hz, 2 s windows every 8 samples), inter-patient.

    python -m tools.train.ecg_window --mitdb ../shared/datasets/ECG/mitdb_tpcp_subset --out models/ecg-window
    python -m tools.train.ecg_window --mitdb ... --select 128,32 256,32 256,64,16   # validation only

What the gateway does to a window is what the model was trained on: `window` consecutive raw samples of a
250 Hz ECG in mV, divided by the card's scale (mean 0); nothing else. Baseline wander is handled inside
the model: it restores each window's least-squares line exactly and learns only the rest
(`TrendFreeDenseAE`, folded into a plain dense chain for ONNX and TFLite), so an offset or a drift
across the window costs nothing in the score. MIT-BIH's 360 Hz signal is resampled to 250 Hz here
(scipy.signal.resample_poly 25/36; tools only).

Inter-patient, as ecg-beat's fold A / fold B: the model trains on the windows of records 100 104 106 114
119 123 with no PVC near them (first four fifths of each record), the architecture and the threshold are
chosen on the last fifth of those records (`--select`; the card threshold is the 0.995 quantile of the
held-out PVC-free windows), and records 102 105 108 116 121 200 are scored once, at the end.
Labels per window: positive when a PVC R peak lies in it; negative when no PVC R peak lies within
`MARGIN_S` of it (a PVC's QRS and T wave reach past its R peak); windows in between are left out.
Reported: per-window ROC-AUC on the test records, false flags per hour at the card threshold on their
negative windows, and the same for two model-free floors: the window's energy off its line, and that
energy over the running median of the stream's past 60 s of window energies (causal, per stream).
MIT-BIH Arrhythmia Database: Moody & Mark 2001, PhysioNet, ODC-By 1.0.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray
from scipy.signal import resample_poly

from tools.train.autoencoder import (
    ModelSpec,
    TrendFreeDenseAE,
    build_artifacts,
    card_documentation,
    digest_arrays,
    train,
    write_card,
)
from tools.train.ecg import FOLD_A, FOLD_B, roc_auc
from tools.train.quantize import onnx_scores
from tools.train.versioning import add_version_option

SOURCE_HZ = 360
RATE_HZ = 250  # resample_poly(up=25, down=36)
WINDOW = 500  # 2 s: two or three beats, enough for a PVC's compensatory pause to show
HOP = 8
TRAIN_STRIDE = 32  # training windows every 32 samples: overlapping windows teach little more
MARGIN_S = 0.4
HELD_OUT = 0.2  # the last fifth of each training record: architecture and threshold
TREND_ORDER = 1
QUANTILE = 0.995
FLOOR_HISTORY_S = 60.0


@dataclass(frozen=True, slots=True)
class Record:
    name: str
    signal: NDArray[np.float64]  # mV at RATE_HZ
    pvc_samples: NDArray[np.int64]  # PVC R peaks, sample index at RATE_HZ


def load_record(root: Path, name: str) -> Record:
    with gzip.open(root / f"{name}_ecg_mlii_360hz.csv.gz", "rt") as f:
        raw = np.loadtxt(f, skiprows=1)
    table = np.genfromtxt(root / f"{name}_beats.csv", delimiter=",", skip_header=1)
    pvc = table[table[:, 1] == 1, 0] * RATE_HZ / SOURCE_HZ
    return Record(name, resample_poly(raw, 25, 36), np.round(pvc).astype(np.int64))


def window_labels(record: Record, ends: NDArray[np.int64]) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """(positive, negative) per window ending before `ends`: a PVC R peak inside; none within MARGIN_S."""
    margin = round(MARGIN_S * RATE_HZ)
    peaks = np.sort(record.pvc_samples)

    def count(lo: NDArray[np.int64], hi: NDArray[np.int64]) -> NDArray[np.int64]:
        return np.searchsorted(peaks, hi, side="left") - np.searchsorted(peaks, lo, side="left")

    inside = count(ends - WINDOW, ends) > 0
    near = count(ends - WINDOW - margin, ends + margin) > 0
    return inside, ~near


def windows_of(signal: NDArray[np.float64], ends: NDArray[np.int64]) -> NDArray[np.float32]:
    """(N, WINDOW, 1) raw windows ending (exclusive) at `ends`."""
    view = sliding_window_view(signal, WINDOW)
    return np.ascontiguousarray(view[ends - WINDOW], np.float32)[:, :, None]


def split_ends(record: Record, stride: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Window ends of the first four fifths (training) and of the last fifth (held out), no sample shared."""
    cut = round(len(record.signal) * (1 - HELD_OUT))
    train_ends = np.arange(WINDOW, cut + 1, stride)
    held_ends = np.arange(cut + WINDOW, len(record.signal) + 1, HOP)
    return train_ends, held_ends


def detrended_energy(x: NDArray[np.float32]) -> NDArray[np.float64]:
    """Mean square of each window off its least-squares line (the floor's statistic; scale-free ranks)."""
    t = np.linspace(-1.0, 1.0, x.shape[1])
    basis = np.linalg.qr(np.vander(t, TREND_ORDER + 1, increasing=True))[0]
    flat = x[:, :, 0].astype(np.float64)
    resid = flat - (flat @ basis) @ basis.T
    return np.asarray((resid**2).mean(axis=1))


def relative_energy(energy: NDArray[np.float64]) -> NDArray[np.float64]:
    """Energy over the median of the stream's previous FLOOR_HISTORY_S of window energies (causal; the
    first minute is judged against what there is)."""
    n = round(FLOOR_HISTORY_S * RATE_HZ / HOP)
    out = np.empty_like(energy)
    step = RATE_HZ // HOP  # the median is refreshed once a second
    for start in range(0, len(energy), step):
        past = energy[max(0, start - n) : start] if start else energy[:1]
        out[start : start + step] = energy[start : start + step] / np.median(past)
    return out


def score_record(
    path: Path | None, model: torch.nn.Module | None, record: Record, ends: NDArray[np.int64], scale: float
) -> dict[str, NDArray[Any]]:
    """AE scores (ONNX file at `path`, else the torch `model`), floors and labels of `record`'s windows."""
    x = windows_of(record.signal, ends)
    z = x / np.float32(scale)
    if path is not None:
        ae = onnx_scores(path, z)
    else:
        assert model is not None
        with torch.no_grad():
            ae = np.concatenate(
                [
                    ((model(torch.from_numpy(z[i : i + 4096])) - torch.from_numpy(z[i : i + 4096])) ** 2)
                    .mean(dim=(1, 2))
                    .double()
                    .numpy()
                    for i in range(0, len(z), 4096)
                ]
            )
    energy = detrended_energy(x)
    pos, neg = window_labels(record, ends)
    return {"ae": ae, "energy": energy, "energy_ratio": relative_energy(energy), "pos": pos, "neg": neg}


def detection(
    scored: Sequence[dict[str, NDArray[Any]]], thresholds: dict[str, float], names: Sequence[str]
) -> dict[str, Any]:
    """Pooled per-window ROC-AUC (positive vs negative windows), false flags per hour of negative windows
    (every flagged window, and every start of a run of them: what an alarm with a minimum duration sees
    at most), and each record's share of flagged negative windows."""
    pooled = {k: np.concatenate([s[k] for s in scored]) for k in scored[0]}
    keep = pooled["pos"] | pooled["neg"]
    labels = pooled["pos"][keep]
    hours = int(pooled["neg"].sum()) * HOP / RATE_HZ / 3600
    out: dict[str, Any] = {
        "windows": {"positive": int(pooled["pos"].sum()), "negative": int(pooled["neg"].sum())},
        "negative_hours": hours,
    }
    for k in ("ae", "energy", "energy_ratio"):
        flags = int((pooled[k][pooled["neg"]] > thresholds[k]).sum())
        starts = 0
        for s in scored:  # runs of flagged negative windows, within each record
            false = (s[k] > thresholds[k]) & s["neg"]
            starts += int(false[0]) + int((false[1:] & ~false[:-1]).sum())
        out[k] = {
            "roc_auc": roc_auc(pooled[k][keep], labels),
            "threshold": thresholds[k],
            "false_flags_per_hour": flags / hours,
            "false_flag_runs_per_hour": starts / hours,
            "positive_windows_flagged": float((pooled[k][pooled["pos"]] > thresholds[k]).mean()),
            "negative_windows_flagged_by_record": {
                name: float((s[k][s["neg"]] > thresholds[k]).mean())
                for name, s in zip(names, scored, strict=True)
            },
        }
    return out


def floor_thresholds(held: Sequence[dict[str, NDArray[Any]]]) -> dict[str, float]:
    """The floors' thresholds by the card's rule: QUANTILE of the held-out negative windows."""
    return {
        k: float(np.quantile(np.concatenate([s[k][s["neg"]] for s in held]), QUANTILE))
        for k in ("energy", "energy_ratio")
    }


def training_windows(records: Sequence[Record]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """(training, held-out) PVC-free raw windows of the training records."""
    train_x, held_x = [], []
    for r in records:
        tr, ho = split_ends(r, TRAIN_STRIDE)
        train_x.append(windows_of(r.signal, tr[window_labels(r, tr)[1]]))
        held_x.append(windows_of(r.signal, ho[window_labels(r, ho)[1]]))
    return np.concatenate(train_x), np.concatenate(held_x)


def window_scale(x: NDArray[np.float32]) -> float:
    """Spread of the training windows off their lines: the card's normalisation.scale."""
    return float(np.sqrt(detrended_energy(x).mean()))


def select(records: Sequence[Record], candidates: Sequence[str], epochs: int) -> None:
    """Train each candidate on the training part and print its held-out PVC ROC-AUC (fp32, torch)."""
    train_x, held_x = training_windows(records)
    scale = window_scale(train_x)
    x = (train_x / scale).astype(np.float32)
    v = (held_x / scale).astype(np.float32)
    for text in candidates:
        hidden = tuple(int(h) for h in text.split(","))
        torch.manual_seed(0)
        model = TrendFreeDenseAE(WINDOW, 1, hidden, TREND_ORDER)
        train(model, x, v, epochs=epochs, log=lambda *a, **k: None)
        model.eval()
        held = [score_record(None, model, r, split_ends(r, TRAIN_STRIDE)[1], scale) for r in records]
        thresholds = {"ae": float(np.quantile(np.concatenate([s["ae"][s["neg"]] for s in held]), QUANTILE))}
        result = detection(held, thresholds | floor_thresholds(held), [r.name for r in records])
        print(
            f"hidden {text:12s} held-out ROC-AUC AE {result['ae']['roc_auc']:.4f}"
            f" (floors: energy {result['energy']['roc_auc']:.4f},"
            f" energy ratio {result['energy_ratio']['roc_auc']:.4f});"
            f" flagged PVC windows {result['ae']['positive_windows_flagged']:.3f}",
            flush=True,
        )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--mitdb", type=Path, required=True, help="folder with <rec>_ecg_mlii_360hz.csv.gz + <rec>_beats.csv"
    )
    p.add_argument("--out", type=Path, help="model directory to write (not with --select)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--hidden", default="256,16", help="core hidden sizes (the trend adds 4 units to each)")
    p.add_argument("--select", nargs="+", metavar="HIDDEN", help="only compare these on the held-out part")
    add_version_option(p)
    args = p.parse_args(argv)
    fold_a = [load_record(args.mitdb, r) for r in FOLD_A]
    if args.select:
        select(fold_a, args.select, args.epochs)
        return 0
    if args.out is None:
        p.error("--out is required unless --select is given")
    train_x, held_x = training_windows(fold_a)
    scale = window_scale(train_x)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    test = [load_record(args.mitdb, r) for r in FOLD_B]
    # quantization comparison windows: test records' windows every second, PVCs included
    test_x = np.concatenate(
        [windows_of(r.signal, np.arange(WINDOW, len(r.signal) + 1, RATE_HZ)) for r in test]
    )
    spec = ModelSpec(
        "ecg-window",
        args.version,
        ("MLII",),
        WINDOW,
        HOP,
        "dense",
        hidden,
        args.epochs,
        0.0,
        QUANTILE,
        trend_order=TREND_ORDER,
    )
    build_artifacts(
        spec,
        (train_x / scale).astype(np.float32),
        (held_x / scale).astype(np.float32),
        (test_x / scale).astype(np.float32),
        args.out,
        mean=[0.0],
        scale=[scale],
        data_sha256=digest_arrays(train_x),
        data_description=(
            f"MIT-BIH Arrhythmia (ODC-By 1.0) lead MLII resampled to {RATE_HZ} Hz, records"
            f" {', '.join(FOLD_A)}: {WINDOW}-sample raw windows (mV) every {TRAIN_STRIDE} samples of the"
            f" first {1 - HELD_OUT:g} of each record with no PVC R peak within {MARGIN_S} s"
        ),
        validation=(
            f"held-out windows (every {HOP} samples of the last {HELD_OUT:g} of each training record,"
            f" no PVC R peak within {MARGIN_S} s)"
        ),
        documentation=card_documentation(
            input_kind="stream",
            rate_hz=RATE_HZ,
            licence="weights: Apache-2.0 (edge-agent); training data: MIT-BIH Arrhythmia Database, ODC-By"
            " 1.0 (Moody & Mark 2001, PhysioNet)",
            intended_use=(
                "research: a score of how unlike normal ECG (lead MLII) the last 2 s of a raw 250 Hz stream"
                " look, scored every 8 samples; for PVC-like beats and artefacts; no beat detection needed"
            ),
            limits=[
                "not a medical device; not validated for diagnosis",
                f"PVC-free stretches of {len(FOLD_A)} MIT-BIH records only (lead MLII, 360 Hz resampled to"
                f" {RATE_HZ} Hz, mV)",
                "flags noise and artefacts as readily as abnormal beats; other leads and rates are refused",
            ],
            tool="tools.train.ecg_window",
            argv=argv,
        ),
    )
    card = json.loads((args.out / "card.json").read_text(encoding="utf-8"))
    onnx_int8 = args.out / card["artifacts"]["onnx_int8"]["file"]
    held = [score_record(onnx_int8, None, r, split_ends(r, TRAIN_STRIDE)[1], scale) for r in fold_a]
    thresholds = {"ae": float(card["threshold"])} | floor_thresholds(held)
    tested = [
        score_record(onnx_int8, None, r, np.arange(WINDOW, len(r.signal) + 1, HOP), scale) for r in test
    ]
    results: dict[str, Any] = {
        "protocol": (
            "inter-patient: trained on fold A's PVC-free windows (first four fifths), threshold on the last"
            " fifth, tested once on fold B; int8 ONNX; every window (hop 8 at 250 Hz)"
        ),
        "folds": {"train": FOLD_A, "test": FOLD_B},
        "labels": f"positive: a PVC R peak in the window; negative: none within {MARGIN_S} s of it",
        "held_out_fold_A": detection(held, thresholds, FOLD_A),
        "test_fold_B": detection(tested, thresholds, FOLD_B),
    }
    for name in ("held_out_fold_A", "test_fold_B"):
        r = results[name]
        print(
            f"{name:16s} ROC-AUC AE {r['ae']['roc_auc']:.4f}  energy {r['energy']['roc_auc']:.4f}"
            f"  energy ratio {r['energy_ratio']['roc_auc']:.4f};  false flags/h AE"
            f" {r['ae']['false_flags_per_hour']:.0f}  energy {r['energy']['false_flags_per_hour']:.0f}"
            f"  ratio {r['energy_ratio']['false_flags_per_hour']:.0f};  runs/h AE"
            f" {r['ae']['false_flag_runs_per_hour']:.0f}"
        )
        by_record = r["ae"]["negative_windows_flagged_by_record"]
        print(f"{'':16s} share of negative windows flagged by the AE, by record: {by_record}")
    (args.out / "evaluation.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    card["preprocessing"] = {
        "baseline": (
            f"none on the gateway: the model restores each window's least-squares line (order {TREND_ORDER})"
            " exactly, folded into its first layer and two carried units per coefficient in each hidden layer"
        ),
        "source": f"MIT-BIH 360 Hz resampled to {RATE_HZ} Hz (scipy.signal.resample_poly 25/36)",
        "sample_rate_hz": float(RATE_HZ),
    }
    test_fold = results["test_fold_B"]
    card["metrics"] = {
        "mitdb_pvc_window_roc_auc_test": {
            k: test_fold[k]["roc_auc"] for k in ("ae", "energy", "energy_ratio")
        },
        "false_flags_per_hour_test": test_fold["ae"]["false_flags_per_hour"],
        "false_flag_runs_per_hour_test": test_fold["ae"]["false_flag_runs_per_hour"],
    }
    write_card(args.out, card)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
