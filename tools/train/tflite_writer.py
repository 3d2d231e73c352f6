"""Write a dense autoencoder straight into a TFLite flatbuffer, float32 or int8 (dynamic range).

Why not a converter: ai-edge-torch / litert-torch pin their own torch and TensorFlow builds, and onnx2tf
needs TensorFlow; none of that belongs in a gateway project. A dense autoencoder is only RESHAPE and
FULLY_CONNECTED ops, so we emit the flatbuffer ourselves with `flatbuffers.Builder`, following the
field order of tensorflow/lite/schema/schema.fbs (the slot numbers below are that schema's field ids).

The int8 file is what TFLite calls dynamic-range ("hybrid") quantization: weights are symmetric int8
per output channel, activations stay float and are quantized per batch row at run time
(`asymmetric_quantize_inputs`). Nothing is calibrated, so anomalous inputs are never clipped to the
range of normal data — the same reason the ONNX int8 model uses dynamic quantization.
"""

from __future__ import annotations

from dataclasses import dataclass

import flatbuffers
import numpy as np
from numpy.typing import NDArray

# Enum values from schema.fbs; a wrong one makes LiteRT reject the file or compute something else,
# which tests/inference/test_tflite_writer.py would catch against a numpy reference.
_FLOAT32, _INT32, _INT8 = 0, 2, 9
_OP_FULLY_CONNECTED, _OP_RESHAPE = 9, 22
_OPT_FULLY_CONNECTED, _OPT_RESHAPE = 8, 17
_ACT_NONE, _ACT_RELU = 0, 1
_SCHEMA_VERSION = 3


@dataclass(frozen=True, slots=True)
class DenseLayer:
    weight: NDArray[np.float32]  # (out, in), PyTorch nn.Linear layout, which is also TFLite's
    bias: NDArray[np.float32]  # (out,)
    relu: bool


@dataclass(frozen=True, slots=True)
class _Tensor:
    shape: tuple[int, ...]
    dtype: int
    buffer: int
    name: str
    scale: NDArray[np.float32] | None = None  # int8 weights: one scale per output channel


def _int_vector(b: flatbuffers.Builder, values: list[int] | tuple[int, ...]) -> int:
    b.StartVector(4, len(values), 4)
    for v in reversed(values):
        b.PrependInt32(v)
    return int(b.EndVector())


def _offset_vector(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for o in reversed(offsets):
        b.PrependUOffsetTRelative(o)
    return int(b.EndVector())


def _quantize_weight(w: NDArray[np.float32]) -> tuple[NDArray[np.int8], NDArray[np.float32]]:
    scale = np.maximum(np.abs(w).max(axis=1), 1e-12) / 127.0
    q = np.clip(np.round(w / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def build_dense_autoencoder(
    layers: list[DenseLayer], window: int, channels: int, *, int8: bool, description: str = "edge-agent AE"
) -> bytes:
    """Flatbuffer bytes of input (B, window, channels) -> the same shape, through the dense `layers`."""
    flat = window * channels
    if layers[0].weight.shape[1] != flat or layers[-1].weight.shape[0] != flat:
        raise ValueError("first layer input and last layer output must both be window * channels")
    buffers: list[bytes] = [b""]  # buffer 0 is the empty sentinel by convention
    tensors: list[_Tensor] = []

    def add_tensor(
        shape: tuple[int, ...],
        dtype: int,
        name: str,
        data: bytes | None = None,
        scale: NDArray[np.float32] | None = None,
    ) -> int:
        buf = 0
        if data is not None:
            buffers.append(data)
            buf = len(buffers) - 1
        tensors.append(_Tensor(shape, dtype, buf, name, scale))
        return len(tensors) - 1

    ops: list[tuple[int, list[int], list[int], str, int | bool]] = []  # opcode, ins, outs, kind, arg
    x_in = add_tensor((1, window, channels), _FLOAT32, "input")
    shape_flat = add_tensor((2,), _INT32, "shape_flat", np.array([-1, flat], np.int32).tobytes())
    h = add_tensor((1, flat), _FLOAT32, "flat")
    ops.append((_OP_RESHAPE, [x_in, shape_flat], [h], "reshape", False))
    for i, layer in enumerate(layers):
        out_dim, in_dim = layer.weight.shape
        if int8:
            q, scale = _quantize_weight(layer.weight.astype(np.float32))
            w = add_tensor((out_dim, in_dim), _INT8, f"dense{i}/w", q.tobytes(), scale)
        else:
            w = add_tensor(
                (out_dim, in_dim), _FLOAT32, f"dense{i}/w", layer.weight.astype(np.float32).tobytes()
            )
        bias = add_tensor((out_dim,), _FLOAT32, f"dense{i}/b", layer.bias.astype(np.float32).tobytes())
        out = add_tensor((1, out_dim), _FLOAT32, f"dense{i}/out")
        ops.append((_OP_FULLY_CONNECTED, [h, w, bias], [out], "fc", layer.relu))
        h = out
    shape_out = add_tensor((3,), _INT32, "shape_out", np.array([-1, window, channels], np.int32).tobytes())
    y = add_tensor((1, window, channels), _FLOAT32, "reconstruction")
    ops.append((_OP_RESHAPE, [h, shape_out], [y], "reshape", False))

    b = flatbuffers.Builder(4096)
    # Buffers first: their data vectors want 16-byte alignment.
    buffer_offsets = []
    for data in buffers:
        if data:
            b.StartVector(1, len(data), 16)
            b.head = b.head - len(data)
            b.Bytes[b.head : b.head + len(data)] = data
            vec = b.EndVector()
            b.StartObject(3)
            b.PrependUOffsetTRelativeSlot(0, vec, 0)
        else:
            b.StartObject(3)
        buffer_offsets.append(b.EndObject())

    tensor_offsets = []
    for t in tensors:
        name = b.CreateString(t.name)
        shape = _int_vector(b, t.shape)
        quant = 0
        if t.scale is not None:
            scale_vec = b.CreateNumpyVector(t.scale.astype(np.float32))
            zp_vec = b.CreateNumpyVector(np.zeros(len(t.scale), np.int64))
            b.StartObject(7)
            b.PrependUOffsetTRelativeSlot(2, scale_vec, 0)
            b.PrependUOffsetTRelativeSlot(3, zp_vec, 0)
            b.PrependInt32Slot(6, 0, 0)  # quantized_dimension: the output channel axis
            quant = b.EndObject()
        b.StartObject(8)
        b.PrependUOffsetTRelativeSlot(0, shape, 0)
        b.PrependInt8Slot(1, t.dtype, 0)
        b.PrependUint32Slot(2, t.buffer, 0)
        b.PrependUOffsetTRelativeSlot(3, name, 0)
        if quant:
            b.PrependUOffsetTRelativeSlot(4, quant, 0)
        tensor_offsets.append(b.EndObject())

    codes = [_OP_RESHAPE, _OP_FULLY_CONNECTED]
    op_offsets = []
    for opcode, ins, outs, kind, relu in ops:
        in_vec, out_vec = _int_vector(b, ins), _int_vector(b, outs)
        if kind == "fc":
            b.StartObject(5)
            b.PrependInt8Slot(0, _ACT_RELU if relu else _ACT_NONE, 0)
            b.PrependBoolSlot(3, bool(int8), False)  # asymmetric_quantize_inputs (hybrid kernels only)
            options, options_type = b.EndObject(), _OPT_FULLY_CONNECTED
        else:
            b.StartObject(1)  # new_shape comes from the shape tensor, which allows a dynamic batch
            options, options_type = b.EndObject(), _OPT_RESHAPE
        b.StartObject(5)
        b.PrependUint32Slot(0, codes.index(opcode), 0)
        b.PrependUOffsetTRelativeSlot(1, in_vec, 0)
        b.PrependUOffsetTRelativeSlot(2, out_vec, 0)
        b.PrependUint8Slot(3, options_type, 0)
        b.PrependUOffsetTRelativeSlot(4, options, 0)
        op_offsets.append(b.EndObject())

    tensors_vec = _offset_vector(b, tensor_offsets)
    inputs_vec, outputs_vec = _int_vector(b, [x_in]), _int_vector(b, [y])
    ops_vec = _offset_vector(b, op_offsets)
    sg_name = b.CreateString("main")
    b.StartObject(5)
    b.PrependUOffsetTRelativeSlot(0, tensors_vec, 0)
    b.PrependUOffsetTRelativeSlot(1, inputs_vec, 0)
    b.PrependUOffsetTRelativeSlot(2, outputs_vec, 0)
    b.PrependUOffsetTRelativeSlot(3, ops_vec, 0)
    b.PrependUOffsetTRelativeSlot(4, sg_name, 0)
    subgraph = b.EndObject()

    code_offsets = []
    for code in codes:
        b.StartObject(4)
        b.PrependInt8Slot(0, min(code, 127), 0)  # deprecated_builtin_code, still read by old runtimes
        b.PrependInt32Slot(2, 1, 1)
        b.PrependInt32Slot(3, code, 0)
        code_offsets.append(b.EndObject())

    codes_vec = _offset_vector(b, code_offsets)
    subgraphs_vec = _offset_vector(b, [subgraph])
    desc = b.CreateString(description)
    buffers_vec = _offset_vector(b, buffer_offsets)
    b.StartObject(8)
    b.PrependUint32Slot(0, _SCHEMA_VERSION, 0)
    b.PrependUOffsetTRelativeSlot(1, codes_vec, 0)
    b.PrependUOffsetTRelativeSlot(2, subgraphs_vec, 0)
    b.PrependUOffsetTRelativeSlot(3, desc, 0)
    b.PrependUOffsetTRelativeSlot(4, buffers_vec, 0)
    model = b.EndObject()
    b.Finish(model, file_identifier=b"TFL3")
    return bytes(b.Output())
