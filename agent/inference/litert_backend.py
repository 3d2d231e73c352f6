"""LiteRT (TensorFlow Lite) backend: `ai-edge-litert`, or the older `tflite-runtime` wheel as a fallback.

The interpreter has one fixed input shape at a time; a batch of a new size resizes the input tensor and
re-allocates, which costs far less than a call per window, and the size is kept until it changes again
(the detector's batch is usually the number of streams, stable from hop to hop). One thread, like ONNX.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agent.errors import ModelError
from agent.inference.card import ModelCard
from agent.native_stderr import logged_native_stderr

_TFLITE_MAGIC = b"TFL3"  # the flatbuffer file identifier, at bytes 4..8
log = logging.getLogger(__name__)


def _interpreter_class(model: str) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter
    except ImportError:
        raise ModelError(
            model, "no LiteRT runtime: pip install ai-edge-litert (or tflite-runtime)"
        ) from None


class LiteRtBackend:
    name = "tflite"

    def __init__(self) -> None:
        self._interp: Any = None
        self._in = 0
        self._out = 0
        self._batch = 0
        self._model = "-"

    def load(self, model_bytes: bytes, card: ModelCard) -> None:
        self._model = card.name
        if model_bytes[4:8] != _TFLITE_MAGIC:
            raise ModelError(
                card.name, f"not a TFLite model (no TFL3 identifier; starts with {model_bytes[:8]!r})"
            )
        cls = _interpreter_class(card.name)
        try:
            # LiteRT prints on fd 2 when it applies its default delegate (made here or at the first
            # allocation): logged instead, or a JSON log (`--log-json`) would hold a plain-text line.
            with logged_native_stderr(log):
                interp = cls(model_content=model_bytes, num_threads=1)
                interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(card.name, f"LiteRT cannot load the model: {exc}") from None
        detail = interp.get_input_details()
        shape = [int(d) for d in detail[0]["shape"]]  # plain ints in the message, not np.int32(...)
        if len(detail) != 1 or len(shape) != 3 or shape[1:] != [card.window, len(card.channels)]:
            raise ModelError(
                card.name,
                f"TFLite input {shape} does not match the card (batch, {card.window}, {len(card.channels)})",
            )
        self._interp = interp
        self._in = int(detail[0]["index"])
        self._out = int(interp.get_output_details()[0]["index"])
        self._batch = int(shape[0])

    def run(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        if self._interp is None:
            raise ModelError(self._model, "run() before load()")
        if batch.shape[0] != self._batch:
            self._interp.resize_tensor_input(self._in, list(batch.shape))
            self._interp.allocate_tensors()
            self._batch = batch.shape[0]
        self._interp.set_tensor(self._in, np.ascontiguousarray(batch, np.float32))
        self._interp.invoke()
        return np.array(self._interp.get_tensor(self._out), np.float32)  # a copy: the buffer is reused
