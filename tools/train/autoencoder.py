"""Train a window autoencoder on normal data and write a deployable model directory, in one command.

    python -m tools.train.autoencoder --data normal.csv --channels a,b,c --window 30 --out models/mine
    python -m tools.train.autoencoder --data run1.csv run2.csv --channels a,b,c --window 6 \
        --pca-fraction 0.5 --adapt-rows 400 --out models/mine-residual     # on each run's window residual

Steps: windows from normal data -> PyTorch (CPU) dense or 1-D conv autoencoder -> ONNX fp32 (opset 17,
dynamic batch) -> ONNX int8 -> TFLite fp32 and int8 written from the same weights (dense only, see
tflite_writer) -> threshold from held-out normal windows -> card.json with sha256 of every artifact.
The int8 choice is measured, not assumed: `quantize.compare` reports fp32-vs-int8 score correlation and
alarm-flag agreement of each int8 variant on test windows that include anomalies, at batch 1 and in mixed
batches of 64, and the variant with the best worst-case flag agreement is shipped (see docs/models.md).
With `--pca-fraction`, each CSV file is one stream's run and the model is trained on what each run's
own principal window subspace (fitted on its first `--adapt-rows` rows) leaves, as
`AutoencoderDetector` feeds it on the gateway (tools/train/residuals.py); the card says so
(`preprocessing.pca_fraction`), and the detector must then adapt on as many rows.
SKAB- and MIT-BIH-specific data preparation lives in tools/train/skab.py, skab_head.py and ecg.py.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray
from torch import nn

from tools.train import quantize
from tools.train.residuals import residual_preprocessing, residual_windows
from tools.train.tflite_writer import DenseLayer, build_dense_autoencoder
from tools.train.versioning import add_version_option

F32 = NDArray[np.float32]
OPSET = 17


class DenseAE(nn.Module):
    """Flatten (W, C) -> hidden layers -> latent -> mirror -> (W, C). ReLU inside, linear output."""

    def __init__(self, window: int, channels: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.window, self.channels = window, channels
        dims = [window * channels, *hidden, *reversed(hidden[:-1]), window * channels]
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x.reshape(x.shape[0], -1))
        return out.reshape(x.shape[0], self.window, self.channels)

    def dense_layers(self) -> list[DenseLayer]:
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        return [
            DenseLayer(m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy(), i < len(linears) - 1)
            for i, m in enumerate(linears)
        ]


class TrendFreeDenseAE(nn.Module):
    """A DenseAE that restores each window's least-squares polynomial trend (per channel, `trend_order`)
    exactly and learns only the rest: out = core(x - Px) + Px, P the projection onto the trend. So a
    baseline offset or drift costs nothing in the score, and the gateway needs no preprocessing for it:
    everything before the first ReLU is linear, and `as_dense` folds the whole model into a plain dense
    chain (P into the first layer; the trend coefficients carried through every hidden layer as pairs of
    units, relu(a) - relu(-a) = a; restored by the last layer) that ONNX, the TFLite writer and the
    gateway run like any DenseAE."""

    trend_basis: torch.Tensor  # (W * C, (order + 1) * C) orthonormal, a buffer

    def __init__(self, window: int, channels: int, hidden: Sequence[int], trend_order: int) -> None:
        super().__init__()
        self.window, self.channels = window, channels
        self.core = DenseAE(window, channels, hidden)
        t = np.linspace(-1.0, 1.0, window)
        basis = np.linalg.qr(np.vander(t, trend_order + 1, increasing=True))[0]  # (W, k) orthonormal
        # flattened (W, C) rows are w * C + c, so the per-channel basis is the Kronecker product
        self.register_buffer("trend_basis", torch.from_numpy(np.kron(basis, np.eye(channels))).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        trend = (flat @ self.trend_basis) @ self.trend_basis.T
        out: torch.Tensor = self.core.net(flat - trend) + trend
        return out.reshape(x.shape[0], self.window, self.channels)

    def as_dense(self) -> DenseAE:
        """The same function as a DenseAE whose hidden layers are 2 x (trend coefficients) units wider."""
        u = self.trend_basis.detach().double()
        m = u.shape[1]
        linears = [layer for layer in self.core.net if isinstance(layer, nn.Linear)]
        hidden = [layer.out_features + 2 * m for layer in linears[:-1]]
        dense = DenseAE(self.window, self.channels, hidden[: (len(hidden) + 1) // 2])
        targets = [layer for layer in dense.net if isinstance(layer, nn.Linear)]
        eye = torch.eye(m, dtype=torch.float64)
        with torch.no_grad():
            for i, (src, dst) in enumerate(zip(linears, targets, strict=True)):
                w, b = src.weight.double(), src.bias.double()
                if i == 0:  # remove the trend, and start carrying its coefficients (+a, -a)
                    w = torch.cat([w @ (torch.eye(u.shape[0], dtype=torch.float64) - u @ u.T), u.T, -u.T])
                    b = torch.cat([b, torch.zeros(2 * m, dtype=torch.float64)])
                elif i < len(linears) - 1:  # pass the carried pairs through unchanged
                    w = torch.block_diag(w, eye, eye)  # type: ignore[no-untyped-call]
                    b = torch.cat([b, torch.zeros(2 * m, dtype=torch.float64)])
                else:  # restore the trend: relu(a) - relu(-a) = a
                    w = torch.cat([w, u, -u], dim=1)
                dst.weight.copy_(w.float())
                dst.bias.copy_(b.float())
        return dense.eval()


class ConvAE(nn.Module):
    """1-D convolutions over time (channels as conv channels), stride 2 down and transposed back up."""

    def __init__(self, window: int, channels: int, hidden: Sequence[int]) -> None:
        super().__init__()
        if window % 4:
            raise ValueError("the conv autoencoder needs a window divisible by 4")
        self.window, self.channels = window, channels
        h1, h2 = hidden[0], hidden[-1]
        self.enc = nn.Sequential(
            nn.Conv1d(channels, h1, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv1d(h1, h2, 5, stride=2, padding=2),
            nn.ReLU(),
        )
        self.dec = nn.Sequential(
            nn.ConvTranspose1d(h2, h1, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose1d(h1, channels, 4, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.dec(self.enc(x.transpose(1, 2)))
        return out.transpose(1, 2)


def make_windows(rows: NDArray[Any], window: int, stride: int = 1) -> F32:
    """(T, C) -> (N, W, C) windows ending at every `stride`-th row."""
    return np.ascontiguousarray(
        sliding_window_view(rows, window, axis=0).transpose(0, 2, 1)[::stride], np.float32
    )


def train(
    model: nn.Module,
    train_x: F32,
    val_x: F32,
    *,
    epochs: int,
    batch: int = 256,
    lr: float = 2e-3,
    noise: float = 0.0,
    seed: int = 0,
    log: Any = print,
) -> list[dict[str, float]]:
    """Adam on MSE; prints one line per epoch (train/val loss, seconds). `noise`: denoising AE input noise."""
    torch.manual_seed(seed)
    torch.set_num_threads(1)  # the machine is shared; small models gain little from more threads
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    x_all, x_val = torch.from_numpy(train_x), torch.from_numpy(val_x)
    history = []
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        t0 = time.monotonic()
        model.train()
        order = torch.randperm(len(x_all), generator=gen)
        total = 0.0
        for start in range(0, len(order), batch):
            xb = x_all[order[start : start + batch]]
            inp = xb + noise * torch.randn_like(xb) if noise else xb
            loss = nn.functional.mse_loss(model(inp), xb)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            total += loss.item() * len(xb)
        sched.step()
        model.eval()
        with torch.no_grad():
            val = float(nn.functional.mse_loss(model(x_val), x_val))
        history.append({"epoch": epoch, "train_loss": total / len(x_all), "val_loss": val})
        seconds = time.monotonic() - t0
        log(f"epoch {epoch:3d}/{epochs}  train {total / len(x_all):.5f}  val {val:.5f}  ({seconds:.1f} s)")
    return history


def export_onnx(model: nn.Module, path: Path, window: int, channels: int) -> None:
    model.eval()
    torch.onnx.export(
        model,
        (torch.zeros(1, window, channels),),
        str(path),
        dynamo=False,
        opset_version=OPSET,
        input_names=["windows"],
        output_names=["reconstruction"],
        dynamic_axes={"windows": {0: "batch"}, "reconstruction": {0: "batch"}},
    )


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def runtime_versions() -> dict[str, str]:
    out = {"opset": str(OPSET), "python": sys.version.split()[0]}
    for dist in ("torch", "onnx", "onnxruntime", "ai-edge-litert", "numpy"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    return out


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    version: str
    channels: tuple[str, ...]
    window: int
    hop: int
    architecture: str  # "dense" or "conv"
    hidden: tuple[int, ...]
    epochs: int
    noise: float = 0.0
    threshold_quantile: float = 0.995
    trend_order: int | None = None  # dense only: restore each window's polynomial trend (TrendFreeDenseAE)


def build_model(spec: ModelSpec) -> nn.Module:
    if spec.trend_order is not None:
        return TrendFreeDenseAE(spec.window, len(spec.channels), spec.hidden, spec.trend_order)
    cls = DenseAE if spec.architecture == "dense" else ConvAE
    return cls(spec.window, len(spec.channels), spec.hidden)


def build_artifacts(
    spec: ModelSpec,
    train_x: F32,
    val_x: F32,
    test_x: F32,
    out: Path,
    *,
    mean: Sequence[float],
    scale: Sequence[float],
    data_sha256: str,
    data_description: str,
    extra_metrics: dict[str, Any] | None = None,
    validation: str = "held-out normal windows",
    documentation: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train, export every artifact into `out`, write card.json; returns the torch model and the card dict.

    `train_x`/`val_x` are normalised normal windows; `test_x` are normalised windows including anomalies,
    used only to measure how faithfully each quantization keeps the fp32 scores. `validation` says in the
    card's threshold_rule where `val_x` came from (the default is the text the shipped models' cards carry).
    `documentation` (`card_documentation`): the card's input, licence, intended use, limits and build.
    """
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)  # weight initialisation: the same data gives the same model
    model = build_model(spec)
    print(
        f"training {spec.architecture} autoencoder {spec.name}: {len(train_x)} windows of {spec.window}x"
        f"{len(spec.channels)}, {sum(p.numel() for p in model.parameters())} parameters"
    )
    history = train(model, train_x, val_x, epochs=spec.epochs, noise=spec.noise)
    if isinstance(model, TrendFreeDenseAE):  # what ships is the equivalent plain dense chain
        model = model.as_dense()
    stem = spec.name
    files = {"onnx_fp32": f"{stem}.fp32.onnx", "onnx_int8": f"{stem}.int8.onnx"}
    export_onnx(model, out / files["onnx_fp32"], spec.window, len(spec.channels))
    val_scores = quantize.onnx_scores(out / files["onnx_fp32"], val_x)
    threshold = float(np.quantile(val_scores, spec.threshold_quantile))
    quant = quantize.compare(out / files["onnx_fp32"], train_x, test_x, threshold)
    chosen = quantize.choose(quant)
    print(f"shipping int8 variant '{chosen}' (best worst-case flag agreement with fp32)")
    quantize.quantize(
        out / files["onnx_fp32"], out / files["onnx_int8"], chosen, quantize.calibration_sample(train_x)
    )
    if isinstance(model, DenseAE):
        for key, int8 in (("tflite_fp32", False), ("tflite_int8", True)):
            files[key] = f"{stem}.{key.split('_')[1]}.tflite"
            (out / files[key]).write_bytes(
                build_dense_autoencoder(model.dense_layers(), spec.window, len(spec.channels), int8=int8)
            )
    card: dict[str, Any] = {
        "name": spec.name,
        "version": spec.version,
        "architecture": spec.architecture,
        "window": spec.window,
        "hop": spec.hop,
        "channels": list(spec.channels),
        "normalisation": {"mean": [float(m) for m in mean], "scale": [float(s) for s in scale]},
        "threshold": threshold,
        "threshold_rule": (f"{spec.threshold_quantile} quantile of fp32 scores on {len(val_x)} {validation}"),
        "training_data": {
            "sha256": data_sha256,
            "description": data_description,
            "train_windows": len(train_x),
            "val_windows": len(val_x),
        },
        "training": {
            "hidden": list(spec.hidden),
            "epochs": spec.epochs,
            "denoise_sigma": spec.noise,
            "final_train_loss": history[-1]["train_loss"],
            "final_val_loss": history[-1]["val_loss"],
        },
        "quantization": {
            "shipped": chosen,
            "comparison_on_test_windows": quant,
        },
        "metrics": extra_metrics or {},
        "artifacts": {
            k: {"file": f, "sha256": sha256_file(out / f), "bytes": (out / f).stat().st_size}
            for k, f in files.items()
        },
        "runtimes": runtime_versions(),
        **(documentation or {}),
    }
    if "tflite_int8" in files:
        card["quantization"]["litert_int8"] = litert_faithfulness(card, out, test_x, threshold)
    write_card(out, card)
    return model, card


def card_documentation(
    *,
    input_kind: str,
    rate_hz: float,
    licence: str,
    intended_use: str,
    limits: Sequence[str],
    tool: str,
    argv: Sequence[str] | None,
) -> dict[str, Any]:
    """The card fields for whoever deploys the model (docs/models.md): what a window is and the rate
    the data was sampled at (the detector checks both), licence, intended use, known limits, and the
    command line and tools commit that built it."""
    args = list(sys.argv[1:] if argv is None else argv)
    return {
        "input": {"kind": input_kind, "rate_hz": float(rate_hz)},
        "licence": licence,
        "intended_use": intended_use,
        "limits": list(limits),
        "build": {"command": shlex.join(["python", "-m", tool, *args]), "tool": tool, "commit": _commit()},
    }


def _commit() -> str:
    """The git commit of the tools, "" outside a checkout (a wheel) or without git."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def litert_faithfulness(card: dict[str, Any], out: Path, test_x: F32, threshold: float) -> dict[str, Any]:
    """The LiteRT int8 file (dynamic-range, not the shipped ONNX variant) against ONNX fp32 on the
    comparison windows, at batch 1 and in shuffled batches of 64, with the ONNX variants' figures."""
    from agent.errors import ModelError
    from agent.inference.card import parse_card
    from agent.inference.litert_backend import LiteRtBackend

    model = parse_card(card, card["name"])
    backend = LiteRtBackend()
    try:
        backend.load((out / card["artifacts"]["tflite_int8"]["file"]).read_bytes(), model)
    except ModelError as exc:  # no LiteRT runtime on this build machine: say so in the card
        return {"not_measured": exc.reason}

    def scores(x: F32, batch: int) -> NDArray[np.float64]:
        recon = np.concatenate([backend.run(x[i : i + batch]) for i in range(0, len(x), batch)])
        return np.asarray(((recon.astype(np.float64) - x) ** 2).mean(axis=(1, 2)))

    fp32 = out / card["artifacts"]["onnx_fp32"]["file"]
    shuffled = test_x[np.random.default_rng(0).permutation(len(test_x))]
    return {
        "batch_1": quantize.agreement(
            quantize.onnx_scores(fp32, test_x, batch=1), scores(test_x, 1), threshold
        ),
        "batch_64_mixed": quantize.agreement(
            quantize.onnx_scores(fp32, shuffled, batch=64), scores(shuffled, 64), threshold
        ),
        "bytes": card["artifacts"]["tflite_int8"]["bytes"],
    }


def write_card(out: Path, card: dict[str, Any]) -> None:
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")


def digest_arrays(*arrays: NDArray[Any]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


class DataError(ValueError):
    """A training file or channel the tool cannot use; the message names it and says what to do."""


def read_columns(path: Path, channels: Sequence[str], delimiter: str) -> NDArray[np.float64]:
    """The named columns of one CSV file with a header row, as (T, C) floats. A missing column, a field
    that is not a finite number or an unreadable file is a `DataError` naming the file (and line)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()  # splitlines also ends CRLF lines (SKAB)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from exc
    header = lines[0].split(delimiter) if lines else []
    missing = [c for c in channels if c not in header]
    if missing:
        hint = f" (is the delimiter {delimiter!r} right? e.g. --delimiter ';')" if len(header) < 2 else ""
        raise DataError(f"{path}: no column {', '.join(missing)} (has: {', '.join(header)}){hint}")
    cols = [header.index(c) for c in channels]
    try:
        values = np.loadtxt(path, delimiter=delimiter, skiprows=1, usecols=cols, ndmin=2)
    except ValueError as exc:
        raise DataError(_first_bad_line(path, lines, cols, channels, delimiter) or f"{path}: {exc}") from exc
    if not np.isfinite(values).all():
        raise DataError(
            _first_bad_line(path, lines, cols, channels, delimiter) or f"{path}: non-finite value"
        )
    return values


def _first_bad_line(
    path: Path, lines: Sequence[str], cols: Sequence[int], channels: Sequence[str], delimiter: str
) -> str | None:
    """Where loading failed, found again line by line (only on the error path)."""
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip() or line.lstrip().startswith("#"):
            continue  # np.loadtxt skips these too
        fields = line.split(delimiter)
        for col, name in zip(cols, channels, strict=True):
            if col >= len(fields):
                return f"{path}: line {number} has {len(fields)} fields, none for column {name!r}"
            try:
                ok = np.isfinite(float(fields[col]))
            except ValueError:
                ok = False
            if not ok:
                return f"{path}: line {number}, column {name!r}: {fields[col]!r} is not a finite number"
    return None


def channel_scale(
    rows: NDArray[np.float64], channels: Sequence[str], floor_fraction: float
) -> tuple[NDArray[np.float64], list[str]]:
    """Each channel's standard deviation on the training rows, raised to `floor_fraction` of its mean
    absolute value where that is larger; returns the scale and a line per raised channel.

    A channel constant in the training data (std within float rounding of 0) would get a scale of ~0 and
    then turn the smallest change into a score thousands of times the threshold: without a floor it is a
    `DataError` naming it."""
    std, typical = rows.std(axis=0), np.abs(rows).mean(axis=0)
    scale, notes = std.copy(), []
    for i, name in enumerate(channels):
        floor = floor_fraction * typical[i]
        if (std[i] == 0 or std[i] <= 1e-9 * typical[i]) and floor <= 0:
            fix = (
                "drop it from --channels"
                if typical[i] == 0
                else "drop it from --channels, or give --scale-floor (a share of its typical magnitude,"
                " e.g. 0.01: a 1 % change is then one standard unit)"
            )
            raise DataError(
                f"channel {name!r} is constant in the training data (every value {rows[0, i]:.6g}):"
                f" the model would score any change in it as an extreme anomaly; {fix}"
            )
        if floor > std[i]:
            scale[i] = floor
            notes.append(
                f"channel {name!r}: scale raised from its std {std[i]:.3g} to {floor:.3g}"
                f" ({floor_fraction:g} of its mean absolute value {typical[i]:.3g})"
            )
    return scale, notes


def tail_split(lengths: Sequence[int], window: int, paths: Sequence[Path]) -> list[tuple[int, int]]:
    """Per file of `lengths[i]` rows: (training windows, validation windows). The threshold windows are
    the last fifth of each file's windows, and the `window - 1` windows before them are used for neither,
    so no row is in both sets: overlapping windows shuffled at random would put each validation
    window's rows in training too, and the threshold would be in-sample (too low on later data)."""
    out = []
    for rows, path in zip(lengths, paths, strict=True):
        n = rows - window + 1
        n_val = max(1, n // 5)
        n_train = n - n_val - (window - 1)
        if n_train < 1:
            need = window
            while (m := need - window + 1) - max(1, m // 5) - (window - 1) < 1:
                need += 1
            raise DataError(
                f"{path}: {rows} rows are too few to keep its last fifth for the threshold with a gap of a"
                f" window before it: needs at least {need} rows (or give the threshold data with --val-data)"
            )
        out.append((n_train, n_val))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tools.train.autoencoder", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--data", type=Path, nargs="+", required=True, help="CSV files of normal data (header row)"
    )
    p.add_argument("--channels", required=True, help="comma-separated column names, in model order")
    p.add_argument("--window", type=int, required=True)
    p.add_argument("--hop", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--name", default="")
    p.add_argument("--architecture", choices=("dense", "conv"), default="dense")
    p.add_argument("--hidden", default="64,16")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--delimiter", default=",", help="field separator (SKAB: ';')")
    p.add_argument(
        "--val-data",
        type=Path,
        nargs="+",
        default=[],
        help="CSV files of later normal data for the threshold only (default: the last fifth of each"
        " --data file, after a gap of a window)",
    )
    p.add_argument(
        "--scale-floor",
        type=float,
        default=0.0,
        help="each channel's scale at least this share of its mean absolute value (a constant channel is"
        " refused without it)",
    )
    p.add_argument(
        "--pca-fraction",
        type=float,
        default=0.0,
        help="train on each file's window residual off this share of its principal subspace (0: off)",
    )
    p.add_argument(
        "--adapt-rows", type=int, default=400, help="with --pca-fraction: each run's rows to adapt on"
    )
    p.add_argument(
        "--min-scale-fraction",
        type=float,
        default=0.5,
        help="with --pca-fraction: a run's scale never below this share of the whole data's spread",
    )
    p.add_argument(
        "--rate-hz",
        type=float,
        required=True,
        help="samples per second of the data (the card's input.rate_hz: the gateway refuses the model on"
        " a detector of another rate_hz)",
    )
    p.add_argument("--licence", default="", help="terms of the weights and of the training data (card)")
    p.add_argument("--intended-use", default="", help="what the model is for (card intended_use)")
    p.add_argument("--limit", action="append", default=[], help="a known limit (card limits; repeatable)")
    add_version_option(p)
    args = p.parse_args(argv)
    if not 0 < args.rate_hz < float("inf"):
        p.error(f"--rate-hz must be a number > 0, got {args.rate_hz}")
    channels = tuple(args.channels.split(","))
    try:
        series = [read_columns(path, channels, args.delimiter) for path in args.data]
        val_series = [read_columns(path, channels, args.delimiter) for path in args.val_data]
        for path, s in zip([*args.data, *args.val_data], [*series, *val_series], strict=True):
            if len(s) < args.window:
                raise DataError(f"{path}: {len(s)} data rows, fewer than the window ({args.window})")
        if val_series:
            splits = [(len(s) - args.window + 1, 0) for s in series]
            validation = (
                f"normal windows of {', '.join(p.name for p in args.val_data)}, files not used in training"
            )
        else:
            splits = tail_split([len(s) for s in series], args.window, args.data)
            validation = (
                f"normal windows: the last fifth of each training file's windows, after a gap of"
                f" {args.window - 1} windows (no row in both)"
            )
        # mean and scale from the rows the training windows cover only
        rows = np.concatenate(
            [s[: n_train + args.window - 1] for s, (n_train, _) in zip(series, splits, strict=True)]
        )
        mean = rows.mean(axis=0)
        scale, notes = channel_scale(rows, channels, args.scale_floor)
    except DataError as exc:
        p.error(str(exc))
    for note in notes:
        print(note)
    if args.pca_fraction:
        if not 0 < args.pca_fraction < 1:
            p.error(f"--pca-fraction must be in (0, 1), got {args.pca_fraction}")
        components = round(args.pca_fraction * args.window * len(channels))
        try:
            per_file = [
                residual_windows(s, args.window, components, args.min_scale_fraction * scale, args.adapt_rows)
                for s in [*series, *val_series]
            ]
        except ValueError as exc:
            p.error(str(exc))
    else:
        per_file = [make_windows((s - mean) / scale, args.window) for s in [*series, *val_series]]
    train_x = np.concatenate(
        [w[:n_train] for w, (n_train, _) in zip(per_file[: len(series)], splits, strict=True)]
    )
    if val_series:
        val_x = np.concatenate(per_file[len(series) :])
    else:
        val_x = np.concatenate(
            [w[len(w) - n_val :] for w, (_, n_val) in zip(per_file[: len(series)], splits, strict=True)]
        )
    # No labelled anomalies in a generic run: probe quantization with normal windows plus copies scaled by
    # factors spread over 1..3, so their scores spread across the threshold and the flag agreement tells
    # variants apart (copies all x3 were all far above it: "flags agree 100 %" for any variant).
    factors = np.random.default_rng(0).uniform(1.0, 3.0, (len(val_x), 1, 1))
    test_x = np.concatenate([val_x, val_x * factors]).astype(np.float32)
    spec = ModelSpec(
        args.name or args.out.name,
        args.version,
        channels,
        args.window,
        args.hop,
        args.architecture,
        tuple(int(h) for h in args.hidden.split(",")),
        args.epochs,
    )
    _, card = build_artifacts(
        spec,
        train_x,
        val_x,
        test_x,
        args.out,
        mean=mean,
        scale=scale.tolist(),
        data_sha256=digest_arrays(*series, *val_series),
        data_description=", ".join(p.name for p in [*args.data, *args.val_data]),
        validation=validation,
        documentation=card_documentation(
            input_kind="stream",
            rate_hz=args.rate_hz,
            licence=args.licence,
            intended_use=args.intended_use,
            limits=[f"trained on {', '.join(p.name for p in args.data)} only", *args.limit],
            tool="tools.train.autoencoder",
            argv=argv,
        ),
    )
    if args.pca_fraction:
        card["preprocessing"] = residual_preprocessing(
            components / (args.window * len(channels)), args.adapt_rows
        )
        write_card(args.out, card)
        print(
            f"configure the detector with adapt_rows = {args.adapt_rows}, min_scale_fraction ="
            f" {args.min_scale_fraction:g} (the card's threshold does not apply: each stream sets its own)"
        )
    print(f"wrote {args.out}/card.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
