"""SKAB with an int8 autoencoder on each stream's window-PCA residual: train, then evaluate cross-fitted.

    python -m tools.train.skab_head --skab ../shared/datasets/SKAB/data --out /tmp/pump-residual

`window_pca` removes, per stream, the principal subspace of its first 400 rows' standardised windows and
scores what is left. Here a small dense autoencoder, shared by all streams, is trained on those residuals
(anomaly-free.csv cut into experiment-sized pieces plus the first 400 rows of every experiment, each piece
with its own subspace fitted on its own first 400 rows; no labels) and the detector's score is the
model's reconstruction error of the residual (`AutoencoderDetector(pca_fraction=...)`). The model is in
the loop: the "model reconstructs nothing" row (the residual's energy, which is window_pca's Q with the
autoencoder detector's smoothing) is the control it has to beat.

Operating point (smoothing, threshold quantile and margin) chosen as in tools/train/skab_pca.py: best
pooled F1 at FAR <= 15 % on one half (valve1/, or other/ + valve2/), applied to the other ("cross-fitted"),
and leave one folder out. The grid is searched on whole-experiment scores (one backend call per
experiment); every cross-fitted point is then replayed through `AutoencoderDetector` as 34 live streams
(one row per call) on each backend, and the int8 ONNX replay must score the same F1 as the search did.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agent.detectors.adaptation import adaptation_quantile
from agent.inference.backend import load_model
from agent.inference.detector import AutoencoderDetector
from tools.train.residuals import residual_preprocessing, residual_windows
from tools.train.skab import (
    CALIBRATION_ROWS,
    CHANNELS,
    INTENDED_USE,
    LICENCE,
    LIMITS,
    Experiment,
    experiments,
    read_csv,
    replay,
    training_pieces,
)
from tools.train.skab_pca import FAR_LIMIT, MARGINS, QUANTILES, SMOOTHS, metrics_of, summary
from tools.train.versioning import add_version_option

Scores = list[NDArray[np.float64]]  # per experiment, the raw score of the window ending at each row
BACKENDS = (("onnx", "int8"), ("onnx", "fp32"), ("tflite", "int8"), ("tflite", "fp32"))


def train(args: argparse.Namespace, exps: Sequence[Experiment], free: NDArray[np.float64]) -> None:
    """Train on residual windows; the card's normalisation is anomaly-free.csv's, whose spread times
    --floor is the per-channel scale floor (the detector's min_scale_fraction)."""
    from tools.train.autoencoder import (  # torch: "train" extra only
        ModelSpec,
        build_artifacts,
        card_documentation,
        digest_arrays,
        write_card,
    )

    floor = args.floor * free.std(axis=0)
    pieces = training_pieces(args.skab, exps)
    windows = np.concatenate(
        [residual_windows(p, args.window, args.components, floor, CALIBRATION_ROWS) for p in pieces]
    )
    order = np.random.default_rng(0).permutation(len(windows))
    n_val = len(windows) // 5
    test = np.concatenate(
        [residual_windows(e.values, args.window, args.components, floor, CALIBRATION_ROWS)[::5] for e in exps]
    )
    hidden = tuple(int(h) for h in args.hidden.split(","))
    spec = ModelSpec("pump-residual", args.version, CHANNELS, args.window, 1, "dense", hidden, args.epochs)
    _, card = build_artifacts(
        spec,
        windows[order[n_val:]],
        windows[order[:n_val]],
        test,
        args.out,
        mean=free.mean(axis=0),
        scale=free.std(axis=0),
        data_sha256=digest_arrays(*pieces),
        data_description=(
            "SKAB v0.9 anomaly-free.csv + first 400 rows of each of the 34 experiments; each piece "
            f"standardised by its own first 400 rows and taken off the principal subspace of its windows "
            f"there ({args.components} of {args.window * len(CHANNELS)} directions): use with "
            f"AutoencoderDetector(pca_fraction={args.components / (args.window * len(CHANNELS)):g})"
        ),
        documentation=card_documentation(
            input_kind="stream",
            rate_hz=1.0,
            licence=LICENCE,
            intended_use=INTENDED_USE,
            limits=LIMITS,
            tool="tools.train.skab_head",
            argv=None,  # the command line this process runs
        ),
    )
    # The model's input contract: the detector takes pca_fraction from here and refuses another value.
    card["preprocessing"] = residual_preprocessing(
        args.components / (args.window * len(CHANNELS)), CALIBRATION_ROWS
    )
    write_card(args.out, card)


def model_scores(
    model_dir: Path, exps: Sequence[Experiment], window: int, components: int, floor: Any
) -> tuple[Scores, Scores]:
    """(model's error, residual energy alone) per experiment, as the detector scores them."""
    model = load_model(model_dir, backend="onnx", precision="int8", channels=CHANNELS)
    ae, control = [], []
    for e in exps:
        x = residual_windows(e.values, window, components, floor, CALIBRATION_ROWS)
        err = (model.backend.run(x).astype(np.float64) - x) ** 2
        dims = x.shape[1] * x.shape[2]
        pad = np.full(window - 1, np.nan)
        ae.append(np.concatenate([pad, err.sum(axis=(1, 2)) / dims]))
        control.append(np.concatenate([pad, (x.astype(np.float64) ** 2).sum(axis=(1, 2)) / dims]))
    return ae, control


def decide(
    raw: NDArray[np.float64], window: int, smooth: int, quantile: float, margin: float
) -> NDArray[np.bool_]:
    """Flags for rows >= CALIBRATION_ROWS as AutoencoderDetector decides them: threshold from the
    adaptation windows' smoothed scores; live smoothing starts with the first verdict (row 399)."""
    threshold = margin * adaptation_quantile(raw[window - 1 : CALIBRATION_ROWS], smooth, quantile)
    live = np.convolve(raw[CALIBRATION_ROWS - 1 :], np.ones(smooth) / smooth, mode="valid")
    smoothed = np.concatenate([np.full(smooth - 1, np.nan), live])[1:]  # rows >= CALIBRATION_ROWS
    return np.asarray(np.nan_to_num(smoothed, nan=-np.inf) > threshold)


def choose(raw: Scores, window: int, exps: Sequence[Experiment], idx: Sequence[int]) -> dict[str, Any]:
    """The grid point with the best pooled F1 at FAR <= FAR_LIMIT on experiments `idx`."""
    best: dict[str, Any] = {"f1": -1.0}
    for smooth, quantile, margin in itertools.product(SMOOTHS, QUANTILES, MARGINS):
        m = metrics_of([decide(r, window, smooth, quantile, margin) for r in raw], exps, idx)
        if m["far_percent"] <= FAR_LIMIT and m["f1"] > best["f1"]:
            best = {
                "f1": m["f1"],
                "params": {"smooth_rows": smooth, "threshold_quantile": quantile, "threshold_margin": margin},
            }
    return best


def cross_fit(
    raw: Scores,
    window: int,
    exps: Sequence[Experiment],
    splits: dict[str, list[int]],
    flags_for: Callable[[dict[str, Any]], list[NDArray[np.bool_]]],
) -> dict[str, Any]:
    """Each split's rows decided by the point chosen on all other experiments; pooled over all 34."""
    everything = list(range(len(exps)))
    pooled: dict[int, NDArray[np.bool_]] = {}
    out: dict[str, Any] = {}
    for name, test in splits.items():
        chosen = choose(raw, window, exps, [i for i in everything if i not in test])
        flags = flags_for(chosen["params"])
        pooled.update({i: flags[i] for i in test})
        out[name] = {"params": chosen["params"], **summary(metrics_of(flags, exps, test))}
    out["pooled"] = summary(metrics_of([pooled[i] for i in everything], exps, everything))
    return out


def live_flags(
    model_dir: Path,
    exps: Sequence[Experiment],
    params: dict[str, Any],
    backend: str,
    precision: str,
    pca_fraction: float,
    floor_fraction: float,
) -> list[NDArray[np.bool_]]:
    """Every experiment as one stream of an AutoencoderDetector, one row per call."""
    model = load_model(model_dir, backend=backend, precision=precision, channels=CHANNELS)  # type: ignore[arg-type]
    detector = AutoencoderDetector(
        "pump",
        model,
        hop=1,
        adapt_rows=CALIBRATION_ROWS,
        min_scale_fraction=floor_fraction,
        pca_fraction=pca_fraction,
        **params,
    )
    traces = replay(detector, exps)
    return [np.nan_to_num(t[0, CALIBRATION_ROWS:], nan=-np.inf) > t[1, CALIBRATION_ROWS:] for t in traces]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--skab", type=Path, required=True, help="SKAB data folder (anomaly-free/, valve1/, ...)")
    p.add_argument("--out", type=Path, required=True, help="model folder (card, artifacts, evaluation)")
    p.add_argument("--window", type=int, default=6)
    p.add_argument("--components", type=int, default=24, help="principal directions removed per stream")
    p.add_argument("--hidden", default="16,2")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--floor", type=float, default=0.5, help="scale floor, fraction of anomaly-free spread")
    p.add_argument("--evaluate-only", action="store_true", help="keep the trained model, re-run evaluation")
    add_version_option(p)
    args = p.parse_args(argv)
    exps = experiments(args.skab)
    free, _ = read_csv(args.skab / "anomaly-free" / "anomaly-free.csv")
    floor = args.floor * free.std(axis=0)
    if not args.evaluate_only:
        train(args, exps, free)
    fraction = args.components / (args.window * len(CHANNELS))
    ae, control = model_scores(args.out, exps, args.window, args.components, floor)
    halves = {
        "valve1": [i for i, e in enumerate(exps) if e.name.startswith("valve1/")],
        "other+valve2": [i for i, e in enumerate(exps) if not e.name.startswith("valve1/")],
    }
    folders = {
        f: [i for i, e in enumerate(exps) if e.name.startswith(f + "/")]
        for f in ("other", "valve1", "valve2")
    }

    def searched(raw: Scores) -> Callable[[dict[str, Any]], list[NDArray[np.bool_]]]:
        def flags(params: dict[str, Any]) -> list[NDArray[np.bool_]]:
            point = (params["smooth_rows"], params["threshold_quantile"], params["threshold_margin"])
            return [decide(r, args.window, *point) for r in raw]

        return flags

    def live(backend: str, precision: str) -> Callable[[dict[str, Any]], list[NDArray[np.bool_]]]:
        return lambda params: live_flags(args.out, exps, params, backend, precision, fraction, args.floor)

    results: dict[str, Any] = {
        "protocol": __doc__.split("\n\n")[2].replace("\n", " "),
        "pca_fraction": fraction,
    }
    for backend, precision in BACKENDS:
        results[f"cross_fitted_{backend}_{precision}"] = cross_fit(
            ae, args.window, exps, halves, live(backend, precision)
        )
    search = cross_fit(ae, args.window, exps, halves, searched(ae))
    for name in halves:  # the shortcut must decide as the live detector does
        a, b = search[name], results["cross_fitted_onnx_int8"][name]
        if abs(a["f1"] - b["f1"]) > 1e-9:
            raise SystemExit(
                f"{name}: search F1 {a['f1']} but live replay F1 {b['f1']}: the shortcut drifted"
            )
    results["leave_one_folder_out"] = cross_fit(ae, args.window, exps, folders, searched(ae))
    results["control_cross_fitted"] = cross_fit(control, args.window, exps, halves, searched(control))
    results["control_leave_one_folder_out"] = cross_fit(
        control, args.window, exps, folders, searched(control)
    )
    everything = list(range(len(exps)))
    for key, raw in (("all_34_optimistic", ae), ("control_all_34_optimistic", control)):
        chosen = choose(raw, args.window, exps, everything)
        flags = searched(raw)(chosen["params"])
        results[key] = {"params": chosen["params"], **summary(metrics_of(flags, exps, everything))}
    rows = [
        ("AE on residual, int8 ONNX, cross-fitted", results["cross_fitted_onnx_int8"]["pooled"]),
        *[(f"same, {b} {q}", results[f"cross_fitted_{b}_{q}"]["pooled"]) for b, q in BACKENDS[1:]],
        ("AE on residual, leave one folder out", results["leave_one_folder_out"]["pooled"]),
        *[(f"— of which {f}/", results["leave_one_folder_out"][f]) for f in folders],
        ("AE on residual, chosen on all 34 (optimistic)", results["all_34_optimistic"]),
        ("control (model reconstructs nothing), cross-fitted", results["control_cross_fitted"]["pooled"]),
        ("control, leave one folder out", results["control_leave_one_folder_out"]["pooled"]),
        ("control, chosen on all 34 (optimistic)", results["control_all_34_optimistic"]),
    ]
    print("| detector (causal, pooled over rows >= 400) | F1 | FAR % | MAR % |\n|---|---:|---:|---:|")
    for label, m in rows:
        print(f"| {label} | {m['f1']:.3f} | {m['far_percent']:.1f} | {m['mar_percent']:.1f} |")
    for name in halves:
        print(
            f"chosen on the other half, applied to {name}:",
            json.dumps(results["cross_fitted_onnx_int8"][name]),
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "evaluation.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    write_metrics(args.out, results, args.floor)
    return 0


def write_metrics(out: Path, results: dict[str, Any], floor_fraction: float) -> None:
    """The card's metrics: the held-out figures, and the operating point to configure (chosen on all 34
    experiments, as a deployment would choose it; its own figure on them is optimistic)."""
    from tools.train.autoencoder import write_card  # torch: "train" extra only

    keys = ("f1", "far_percent", "mar_percent")
    card = json.loads((out / "card.json").read_text(encoding="utf-8"))
    card["metrics"] = {
        "skab_causal_onnx_int8_cross_fitted": {
            k: round(results["cross_fitted_onnx_int8"]["pooled"][k], 4) for k in keys
        },
        "skab_causal_onnx_int8_leave_one_folder_out": {
            k: round(results["leave_one_folder_out"]["pooled"][k], 4) for k in keys
        },
        "skab_causal_onnx_int8_all_34_optimistic": {
            k: round(results["all_34_optimistic"][k], 4) for k in keys
        },
        "detector_params": {
            "adapt_rows": CALIBRATION_ROWS,
            "min_scale_fraction": floor_fraction,
            **results["all_34_optimistic"]["params"],
        },
    }
    write_card(out, card)


if __name__ == "__main__":
    raise SystemExit(main())
