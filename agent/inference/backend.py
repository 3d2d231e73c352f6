"""One interface over the inference runtimes, and the checks every model passes before it runs.

`load_model` is the only way the agent gets a model: it reads the card, refuses a model whose channels or
window do not match the stream, checks the artifact's sha256 against the card (a truncated or foreign file
fails here, before any runtime parses it), verifies the Ed25519 signature when a public key is configured,
and only then hands the bytes to a backend (`load_artifact`), which checks the input shape against the
card; one window of zeros is then run through it, so a model whose output is not a finite (batch,
window, channels) reconstruction is refused at load, not met by the pipeline (an exception per block,
or NaN scores that read as "no verdict" for good). Scores are computed here, not in the backends, so
every runtime is judged by the same arithmetic: the mean squared reconstruction error of the normalised
window, with per-channel contributions that sum to the score.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from agent.errors import ModelError
from agent.inference.card import ModelCard, load_card
from agent.inference.signing import verify_model

BackendName = Literal["onnx", "tflite", "auto"]
Precision = Literal["fp32", "int8"]


class InferenceBackend(Protocol):
    """A runtime that maps a float32 batch (B, W, C) of normalised windows to its reconstruction."""

    name: str

    def load(self, model_bytes: bytes, card: ModelCard) -> None: ...

    def run(self, batch: NDArray[np.float32]) -> NDArray[np.float32]: ...


def reconstruction_scores(
    inputs: NDArray[np.float32], reconstruction: NDArray[np.float32]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Scores (B,) = mean squared error per window; contributions (B, C) sum to the score."""
    err = (reconstruction.astype(np.float64) - inputs.astype(np.float64)) ** 2
    contributions = err.mean(axis=1) / err.shape[2]
    return contributions.sum(axis=1), contributions


def available_backends() -> tuple[str, ...]:
    found = []
    if importlib.util.find_spec("onnxruntime") is not None:
        found.append("onnx")
    if importlib.util.find_spec("ai_edge_litert") is not None or importlib.util.find_spec("tflite_runtime"):
        found.append("tflite")
    return tuple(found)


def load_backend(name: BackendName) -> InferenceBackend:
    """An unloaded backend; "auto" prefers ONNX Runtime, then LiteRT, whichever is installed."""
    if name == "auto":
        found = available_backends()
        if not found:
            raise ModelError(
                "-", "no inference runtime installed: pip install onnxruntime or ai-edge-litert"
            )
        name = "onnx" if "onnx" in found else "tflite"
    if name == "onnx":
        from agent.inference.onnx_backend import OnnxBackend

        return OnnxBackend()
    if name == "tflite":
        from agent.inference.litert_backend import LiteRtBackend

        return LiteRtBackend()
    raise ModelError("-", f"unknown inference backend {name!r} (onnx, tflite or auto)")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A checked card plus a loaded backend; `score` takes raw windows (NaN is not allowed here)."""

    card: ModelCard
    backend: InferenceBackend
    artifact_key: str
    fallback: str = ""  # why this is not the version asked for (agent.inference.managed), else ""

    def reconstruct(
        self, windows: NDArray[np.floating[Any]]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        x = self.card.normalise(windows)
        return x, self.backend.run(x)

    def score(self, windows: NDArray[np.floating[Any]]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(B, W, C) raw values -> scores (B,) and per-channel contributions (B, C)."""
        x, recon = self.reconstruct(windows)
        return reconstruction_scores(x, recon)


def check_stream(card: ModelCard, channels: Sequence[str] | None, window: int | None) -> None:
    """Refuse a model whose input spec does not match the configured stream."""
    if channels is not None and tuple(channels) != card.channels:
        missing = [c for c in card.channels if c not in channels]
        extra = [c for c in channels if c not in card.channels]
        detail = (
            f"missing {missing}, unexpected {extra}" if missing or extra else "same names, different order"
        )
        raise ModelError(
            card.name,
            f"model expects channels {list(card.channels)} but the stream has {list(channels)} ({detail})",
        )
    if window is not None and window != card.window:
        raise ModelError(card.name, f"model expects windows of {card.window} samples, configured {window}")


def load_model(
    model_dir: Path,
    *,
    backend: BackendName = "auto",
    precision: Precision = "int8",
    channels: Sequence[str] | None = None,
    window: int | None = None,
    public_key: Path | None = None,
) -> LoadedModel:
    """Check and load one artifact of the model in `model_dir` (see the module docstring for the order)."""
    card = load_card(model_dir)
    check_stream(card, channels, window)
    runtime = load_backend(backend)
    key = f"{runtime.name}_{precision}"
    artifact = card.artifact(key)
    path = model_dir / artifact.file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(card.name, f"cannot read {path}: {exc.strerror or exc}") from None
    digest = _sha256(data)
    if digest != artifact.sha256:
        raise ModelError(
            card.name,
            f"{path.name} does not match its card (sha256 {digest[:12]}…, card says {artifact.sha256[:12]}…;"
            f" {len(data)} bytes): the file is truncated, altered or not this model",
        )
    if public_key is not None:
        verify_model(model_dir, card, artifact.file, data, public_key)
    try:
        load_artifact(runtime, data, card)
    except ModelError as exc:  # name the file, as the install check does
        raise ModelError(card.name, f"{artifact.file}: {exc.reason}") from None
    return LoadedModel(card=card, backend=runtime, artifact_key=key)


def load_artifact(runtime: InferenceBackend, data: bytes, card: ModelCard) -> None:
    """Load `data` into `runtime` (which checks its input shape) and run one window of zeros (the card's
    mean) through it: the output must be a finite reconstruction of the input's shape."""
    runtime.load(data, card)
    probe = np.zeros((1, card.window, len(card.channels)), dtype=np.float32)
    try:
        out = np.asarray(runtime.run(probe))
    except ModelError:
        raise
    except Exception as exc:  # the runtimes' own error types, whatever they are
        raise ModelError(card.name, f"{runtime.name} cannot run the model: {exc}") from None
    if out.shape != probe.shape:
        raise ModelError(
            card.name,
            f"{runtime.name} output {list(out.shape)} does not match the card (batch, {card.window},"
            f" {len(card.channels)})",
        )
    if not np.isfinite(out).all():
        raise ModelError(card.name, f"{runtime.name} output is not finite for a window of the card's mean")
