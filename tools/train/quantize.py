"""int8 variants of an fp32 ONNX autoencoder, and the measurement that picks the one to ship.

Variants (all via onnx / onnxruntime.quantization):
- "dynamic": `quantize_dynamic`, int8 weights; activations quantized at run time with ONE scale per
  tensor, i.e. per *batch*. On the gateway a batch mixes streams, so one stream's anomaly coarsens the
  quantization of every other stream's window: scores depend on the batch. Measured at batch 1 and 64.
- "static_normal": `quantize_static` QDQ, MinMax calibration on normal windows only: anomalous
  activations are clipped to the normal range.
- "static_tails": QDQ with the first and last Gemm kept fp32 and calibration on normal windows plus
  x4-scaled copies (so hidden ranges include the tails).
- "weights": weight-only int8 (per output channel) + DequantizeLinear, activations fp32: 4x smaller
  weights, batch-independent, scores within rounding of fp32.
`compare` reports, per variant, fp32-vs-int8 Pearson/Spearman score correlation, alarm-flag agreement
at the card threshold, and for "dynamic" the same at batch 64 on shuffled windows (mixed streams).

As a command, for a model trained elsewhere (its fp32 ONNX and the normalisation it was trained with):

    python -m tools.train.quantize --onnx mine.onnx --channels a,b,c --mean 1,5,-2 --scale 0.5,2,1 \
        --data later-normal.csv --rate-hz 1 --out models/mine

writes the fp32 copy, the chosen int8 variant and card.json (threshold: a quantile of the fp32 scores on
`--data`, which must be normal data the model was not trained on); no TFLite (tflite_writer needs the
dense layers' weights from training). The result is loaded as a gateway would before it is reported.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import helper, numpy_helper

from agent.inference.onnx_backend import import_onnxruntime

F32 = NDArray[np.float32]
VARIANTS = ("dynamic", "static_normal", "static_tails", "weights")


def _gemm_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type in ("Gemm", "MatMul", "Conv", "ConvTranspose")]


def weight_only_int8(fp32: Path, out: Path) -> None:
    """Replace each Gemm/Conv/ConvTranspose weight by int8 + per-output-channel scale + DequantizeLinear."""
    model = onnx.load(str(fp32))
    inits = {i.name: i for i in model.graph.initializer}
    new_nodes = []
    for node in _gemm_nodes(model):
        if len(node.input) < 2 or node.input[1] not in inits:
            continue
        if node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            axis = 0 if trans_b else 1  # the output-channel axis of this Gemm's B
        else:
            axis = 1 if node.op_type == "ConvTranspose" else 0  # (in, out, k) vs (out, in, k)
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
        scale = np.maximum(np.abs(moved).max(axis=1), 1e-12) / 127.0
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        name = node.input[1]
        model.graph.initializer.remove(inits[name])
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(q, f"{name}_q"),
                numpy_helper.from_array(scale.astype(np.float32), f"{name}_scale"),
                numpy_helper.from_array(np.zeros(len(scale), np.int8), f"{name}_zp"),
            ]
        )
        new_nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [f"{name}_q", f"{name}_scale", f"{name}_zp"],
                [name],
                axis=axis,
                name=f"{name}_dequant",
            )
        )
    for i, n in enumerate(new_nodes):
        model.graph.node.insert(i, n)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


def quantize(fp32: Path, out: Path, variant: str, calibration: F32) -> None:
    import_onnxruntime()  # telemetry off before the quantizer's sessions start
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if variant == "weights":
        weight_only_int8(fp32, out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre))
        if variant == "dynamic":
            quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8, per_channel=True)
            return

        class Reader(CalibrationDataReader):  # type: ignore[misc]
            def __init__(self, data: F32) -> None:
                self.it = iter(np.array_split(data, max(1, len(data) // 256)))

            def get_next(self) -> dict[str, F32] | None:
                nxt = next(self.it, None)
                return None if nxt is None else {"windows": nxt}

        exclude: list[str] = []
        data = calibration
        if variant == "static_tails":
            gemms = _gemm_nodes(onnx.load(str(pre)))
            exclude = [gemms[0].name, gemms[-1].name]
            data = np.concatenate([calibration, 4.0 * calibration]).astype(np.float32)
        quantize_static(
            str(pre),
            str(out),
            Reader(data),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
        )


def onnx_scores(path: Path, x: F32, batch: int = 4096) -> NDArray[np.float64]:
    ort = import_onnxruntime()

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    parts = [sess.run(None, {"windows": x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    recon = np.concatenate(parts)
    return np.asarray(((recon.astype(np.float64) - x) ** 2).mean(axis=(1, 2)))


def agreement(ref: NDArray[np.float64], other: NDArray[np.float64], threshold: float) -> dict[str, float]:
    """Pearson/Spearman correlation, flag agreement at `threshold`, relative error overall and at the top."""

    def ranks(a: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.argsort(np.argsort(a)).astype(np.float64)

    flags_ref, flags = ref > threshold, other > threshold
    top = ref >= np.quantile(ref, 0.99)
    return {
        "pearson": float(np.corrcoef(ref, other)[0, 1]),
        "spearman": float(np.corrcoef(ranks(ref), ranks(other))[0, 1]),
        "flag_agreement": float(np.mean(flags_ref == flags)),
        "flags_fp32": int(flags_ref.sum()),
        "flags_int8": int(flags.sum()),
        "median_rel_error": float(np.median(np.abs(other - ref) / np.maximum(ref, 1e-12))),
        # < 1: the most anomalous windows score lower in int8 than in fp32 (saturation / clipping)
        "top1pct_score_ratio": float(np.median(other[top] / ref[top])),
    }


def calibration_sample(x: F32, n: int = 2048) -> F32:
    rng = np.random.default_rng(0)
    return x[rng.choice(len(x), min(len(x), n), replace=False)]


def compare(fp32: Path, calib_x: F32, test_x: F32, threshold: float) -> dict[str, Any]:
    """Every variant against fp32 on `test_x` (which should include anomalous windows)."""
    calib = calibration_sample(calib_x)
    rng = np.random.default_rng(0)
    shuffled = test_x[rng.permutation(len(test_x))]
    ref = onnx_scores(fp32, test_x, batch=1)
    ref_shuffled = onnx_scores(fp32, shuffled, batch=64)
    result: dict[str, Any] = {"test_windows": len(test_x), "threshold": threshold}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in VARIANTS:
            path = Path(tmp) / f"{variant}.onnx"
            quantize(fp32, path, variant, calib)
            b1 = agreement(ref, onnx_scores(path, test_x, batch=1), threshold)
            b64 = agreement(ref_shuffled, onnx_scores(path, shuffled, batch=64), threshold)
            result[variant] = {"batch_1": b1, "batch_64_mixed": b64, "bytes": path.stat().st_size}
            print(
                f"int8 {variant:13s} batch 1: pearson {b1['pearson']:.4f} spearman {b1['spearman']:.4f} "
                f"flags agree {100 * b1['flag_agreement']:.2f} % top-1% ratio {b1['top1pct_score_ratio']:.3f}"
                f" | batch 64 mixed: flags agree "
                f"{100 * b64['flag_agreement']:.2f} %, spearman {b64['spearman']:.4f}"
            )
    return result


def choose(result: dict[str, Any]) -> str:
    """The variant whose flags agree best with fp32 in the worse of its two batch settings; on a tie the
    batch-independent, least-clipping variants come first (max keeps the first of equal keys)."""
    return max(
        ("weights", "static_tails", "static_normal", "dynamic"),
        key=lambda v: min(
            result[v]["batch_1"]["flag_agreement"], result[v]["batch_64_mixed"]["flag_agreement"]
        ),
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m tools.train.quantize`: a model trained elsewhere -> int8 ONNX + card (module docstring
    of tools/train/autoencoder.py for the steps; here without training and without TFLite)."""
    import argparse
    import shutil

    from agent.errors import ModelError
    from agent.inference import load_model
    from tools.train.autoencoder import (
        DataError,
        card_documentation,
        digest_arrays,
        make_windows,
        read_columns,
        runtime_versions,
        sha256_file,
        write_card,
    )
    from tools.train.versioning import add_version_option

    p = argparse.ArgumentParser(
        prog="python -m tools.train.quantize",
        description="An fp32 ONNX autoencoder trained elsewhere -> int8 ONNX + card.json, threshold from"
        " normal data it was not trained on",
    )
    p.add_argument("--onnx", type=Path, required=True, help="fp32 ONNX: input (batch, window, channels)")
    p.add_argument("--channels", required=True, help="comma-separated column names, in model order")
    p.add_argument("--mean", required=True, help="the normalisation the model was trained with: per channel")
    p.add_argument("--scale", required=True, help="per channel; the model sees (x - mean) / scale")
    p.add_argument(
        "--data",
        type=Path,
        nargs="+",
        required=True,
        help="CSV files of normal data the model was NOT trained on",
    )
    p.add_argument("--delimiter", default=",", help="field separator (SKAB: ';')")
    p.add_argument("--rate-hz", type=float, required=True, help="samples per second of the data (card input)")
    p.add_argument("--hop", type=int, default=1)
    p.add_argument("--quantile", type=float, default=0.995, help="threshold: this quantile of the scores")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--name", default="")
    p.add_argument("--licence", default="")
    p.add_argument("--intended-use", default="")
    p.add_argument("--limit", action="append", default=[], help="a known limit (card limits; repeatable)")
    add_version_option(p)
    args = p.parse_args(argv)
    channels = tuple(args.channels.split(","))
    try:
        mean = [float(v) for v in args.mean.split(",")]
        scale = [float(v) for v in args.scale.split(",")]
    except ValueError as exc:
        p.error(f"--mean/--scale: {exc}")
    if len(mean) != len(channels) or len(scale) != len(channels):
        p.error(f"--mean and --scale need {len(channels)} values each (one per channel)")
    if not all(np.isfinite(mean)) or not all(np.isfinite(v) and v > 0 for v in scale):
        p.error("--mean must be finite and --scale finite and > 0")
    if not 0 < args.rate_hz < float("inf") or not 0.5 < args.quantile < 1:
        p.error("--rate-hz must be > 0 and --quantile in (0.5, 1)")
    ort = import_onnxruntime()
    try:
        inputs = ort.InferenceSession(str(args.onnx), providers=["CPUExecutionProvider"]).get_inputs()
    except Exception as exc:  # onnxruntime's own error types
        p.error(f"{args.onnx}: cannot be loaded by onnxruntime ({exc})")
    shape = list(inputs[0].shape) if len(inputs) == 1 else []
    if len(shape) != 3 or not isinstance(shape[1], int) or shape[2] != len(channels):
        p.error(f"{args.onnx}: input {shape} is not (batch, window, {len(channels)} channels)")
    window: int = shape[1]
    try:
        series = [read_columns(path, channels, args.delimiter) for path in args.data]
        for path, rows in zip(args.data, series, strict=True):
            if len(rows) < window:
                raise DataError(f"{path}: {len(rows)} data rows, fewer than the window ({window})")
    except DataError as exc:
        p.error(str(exc))
    val_x = np.concatenate([make_windows((s - np.asarray(mean)) / np.asarray(scale), window) for s in series])
    name = args.name or args.out.name
    files = {"onnx_fp32": f"{name}.fp32.onnx", "onnx_int8": f"{name}.int8.onnx"}
    args.out.mkdir(parents=True, exist_ok=True)
    fp32 = args.out / files["onnx_fp32"]
    shutil.copyfile(args.onnx, fp32)
    threshold = float(np.quantile(onnx_scores(fp32, val_x), args.quantile))
    # No labelled anomalies: probe the int8 variants with the normal windows plus scaled copies.
    test_x = np.concatenate([val_x, val_x * 3.0]).astype(np.float32)
    quant = compare(fp32, val_x, test_x, threshold)
    chosen = choose(quant)
    print(f"shipping int8 variant '{chosen}' (best worst-case flag agreement with fp32)")
    quantize(fp32, args.out / files["onnx_int8"], chosen, calibration_sample(val_x))
    card: dict[str, Any] = {
        "name": name,
        "version": args.version,
        "architecture": f"imported ONNX ({args.onnx.name}), trained elsewhere",
        "window": window,
        "hop": args.hop,
        "channels": list(channels),
        "normalisation": {"mean": mean, "scale": scale},
        "threshold": threshold,
        "threshold_rule": (
            f"{args.quantile} quantile of fp32 scores on {len(val_x)} normal windows of"
            f" {', '.join(p.name for p in args.data)}, given to tools.train.quantize as data the model was"
            " not trained on"
        ),
        "training_data": {
            "sha256": digest_arrays(*series),
            "description": "threshold data only (training happened elsewhere): "
            + ", ".join(p.name for p in args.data),
            "val_windows": len(val_x),
        },
        "quantization": {"shipped": chosen, "comparison_on_test_windows": quant},
        "metrics": {},
        "artifacts": {
            k: {"file": f, "sha256": sha256_file(args.out / f), "bytes": (args.out / f).stat().st_size}
            for k, f in files.items()
        },
        "runtimes": runtime_versions(),
        **card_documentation(
            input_kind="stream",
            rate_hz=args.rate_hz,
            licence=args.licence,
            intended_use=args.intended_use,
            limits=["trained outside these tools; no TFLite artifact", *args.limit],
            tool="tools.train.quantize",
            argv=argv,
        ),
    }
    write_card(args.out, card)
    try:
        for precision in ("fp32", "int8"):
            load_model(args.out, backend="onnx", precision=precision)  # what a gateway checks at start
    except ModelError as exc:
        p.exit(1, f"{p.prog}: the written model does not load: {exc}\n")
    print(f'wrote {args.out}/card.json (configure the detector with backend = "onnx")')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
