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


if __name__ == "__main__":
    # Not a command: it measures and quantizes inside a training run, where the threshold and the
    # normalisation are known. Say so instead of exiting 0 silently.
    raise SystemExit(
        "tools.train.quantize is used by the training tools and has no command of its own: train with"
        " python -m tools.train.autoencoder (it writes the fp32 and int8 ONNX, TFLite and card.json);"
        " a model trained elsewhere has no standalone quantize step yet (docs/models.md, Training)"
    )
