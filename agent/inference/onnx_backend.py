"""ONNX Runtime backend: one single-threaded CPU session per model.

The gateway shares two cores with the sources, uplink and other detectors, so the session runs on one
intra-op and one inter-op thread with sequential execution; batching all streams' windows into one call
is what buys throughput. The model is handed over as bytes already checked against the card, never
re-read from disk. io-binding is not used: for inputs of a few kB on CPU it measured no gain (see
docs/benchmarks.md), and plain `run` keeps the code obvious.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import numpy as np
from numpy.typing import NDArray

from agent.errors import ModelError
from agent.inference.card import ModelCard

# onnxruntime >= 1.29 on Linux sends usage telemetry to Microsoft by default (1DS: a device id and a
# SQLite cache under ~/.cache/Microsoft, DNS lookups of mobile.events.data.microsoft.com). A gateway on a
# hospital network must not call out to a third party, so it is off unless the operator set the
# variable. It is read once, when the runtime initialises: it must be set before the import.
TELEMETRY_SWITCH = "ORT_DISABLE_TELEMETRY"


def import_onnxruntime() -> ModuleType:
    """`onnxruntime`, with its telemetry off unless `ORT_DISABLE_TELEMETRY` was set by the operator."""
    os.environ.setdefault(TELEMETRY_SWITCH, "1")
    return importlib.import_module("onnxruntime")


class OnnxBackend:
    name = "onnx"

    def __init__(self) -> None:
        self._session: object | None = None
        self._input = ""
        self._model = "-"

    def load(self, model_bytes: bytes, card: ModelCard) -> None:
        try:
            ort = import_onnxruntime()
        except ImportError:
            raise ModelError(
                card.name, "onnxruntime is not installed: pip install onnxruntime"
            ) from None
        self._model = card.name
        if not model_bytes.startswith(b"\x08"):  # field 1 (ir_version, varint) opens every ONNX ModelProto
            raise ModelError(card.name, f"not an ONNX model (starts with {model_bytes[:8]!r})")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        try:
            session = ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise ModelError(card.name, f"ONNX Runtime cannot load the model: {exc}") from None
        inputs = session.get_inputs()
        shape = inputs[0].shape
        if len(inputs) != 1 or len(shape) != 3 or shape[1:] != [card.window, len(card.channels)]:
            raise ModelError(
                card.name,
                f"ONNX input {inputs[0].name}{shape} does not match the card (batch, {card.window},"
                f" {len(card.channels)})",
            )
        self._session = session
        self._input = inputs[0].name

    def run(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        if self._session is None:
            raise ModelError(self._model, "run() before load()")
        out = self._session.run(None, {self._input: np.ascontiguousarray(batch, np.float32)})  # type: ignore[attr-defined]
        return np.asarray(out[0], np.float32)
