"""ONNX models that load but do not reconstruct their input: what a broken export or a mislabelled
artifact looks like to the runtime (right input shape, wrong output), for the load-time checks."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def onnx_not_a_reconstruction(window: int, channels: int, kind: str) -> bytes:
    """Input (batch, window, channels); output the per-row mean, (batch, window) ("mean"), or the input
    times NaN, the right shape but never finite ("nan")."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", window, channels])
    if kind == "mean":
        inits = [numpy_helper.from_array(np.array([2], np.int64), "axes")]
        nodes = [helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=0)]
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", window])
    else:
        inits = [numpy_helper.from_array(np.array([np.nan], np.float32), "c")]
        nodes = [helper.make_node("Mul", ["x", "c"], ["y"])]
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", window, channels])
    graph = helper.make_graph(nodes, "not_a_reconstruction", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8  # what the shipped onnxruntime reads
    return bytes(model.SerializeToString())
