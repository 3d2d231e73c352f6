"""The hand-written TFLite flatbuffer computes what the dense autoencoder computes (numpy reference)."""

from __future__ import annotations

import numpy as np
import pytest

from agent.inference.litert_backend import _interpreter_class
from tools.train.tflite_writer import DenseLayer, build_dense_autoencoder

W, C = 12, 3
DIMS = [W * C, 20, 4, 20, W * C]


def _layers(seed: int) -> list[DenseLayer]:
    rng = np.random.default_rng(seed)
    return [
        DenseLayer(
            (rng.standard_normal((DIMS[i + 1], DIMS[i])) / np.sqrt(DIMS[i])).astype(np.float32),
            (0.1 * rng.standard_normal(DIMS[i + 1])).astype(np.float32),
            relu=i < len(DIMS) - 2,
        )
        for i in range(len(DIMS) - 1)
    ]


def _reference(layers: list[DenseLayer], x: np.ndarray) -> np.ndarray:
    h = x.reshape(len(x), -1).astype(np.float64)
    for layer in layers:
        h = h @ layer.weight.T.astype(np.float64) + layer.bias
        if layer.relu:
            h = np.maximum(h, 0)
    return h.reshape(x.shape)


def _run(model: bytes, x: np.ndarray) -> np.ndarray:
    interp = _interpreter_class("test")(model_content=model, num_threads=1)
    index = interp.get_input_details()[0]["index"]
    interp.resize_tensor_input(index, list(x.shape))
    interp.allocate_tensors()
    interp.set_tensor(index, x)
    interp.invoke()
    return np.array(interp.get_tensor(interp.get_output_details()[0]["index"]))


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_float_model_matches_numpy(batch: int) -> None:
    layers = _layers(0)
    x = np.random.default_rng(1).standard_normal((batch, W, C)).astype(np.float32)
    out = _run(build_dense_autoencoder(layers, W, C, int8=False), x)
    assert out.shape == (batch, W, C)
    np.testing.assert_allclose(out, _reference(layers, x), atol=1e-5)


def test_int8_model_is_smaller_and_close() -> None:
    layers = _layers(2)
    x = np.random.default_rng(3).standard_normal((32, W, C)).astype(np.float32)
    fp32 = build_dense_autoencoder(layers, W, C, int8=False)
    int8 = build_dense_autoencoder(layers, W, C, int8=True)
    assert len(int8) < 0.6 * len(fp32)
    ref = _reference(layers, x)
    err = np.abs(_run(int8, x) - ref)
    assert err.max() < 0.05 * np.abs(ref).max()
    # anomalous (large) inputs are not clipped: hybrid kernels quantize each input row at run time
    big = 20 * x
    np.testing.assert_allclose(
        _run(int8, big), _reference(layers, big), atol=0.05 * np.abs(_reference(layers, big)).max()
    )


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="window \\* channels"):
        build_dense_autoencoder(_layers(0), W + 1, C, int8=False)
