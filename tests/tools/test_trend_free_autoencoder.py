"""TrendFreeDenseAE (tools/train/autoencoder.py, the ecg-window model's shape): the plain dense chain it
folds into computes the same function, so ONNX, the TFLite writer and the gateway run what was trained,
and each window's least-squares line passes through untouched (no baseline removal on the gateway)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tools.train.autoencoder import DenseAE, TrendFreeDenseAE
from tools.train.tflite_writer import build_dense_autoencoder


@pytest.mark.parametrize(
    ("hidden", "channels", "order"), [((32, 8), 1, 1), ((16,), 2, 1), ((20, 10, 4), 3, 2)]
)
def test_the_folded_dense_chain_computes_the_trained_function(
    hidden: tuple[int, ...], channels: int, order: int
) -> None:
    torch.manual_seed(1)
    model = TrendFreeDenseAE(50, channels, hidden, order).eval()
    x = torch.randn(9, 50, channels) * 3 + 5 + torch.linspace(0, 4, 50)[None, :, None]
    dense = model.as_dense()
    assert isinstance(dense, DenseAE)
    widths = [m.out_features for m in dense.net if isinstance(m, torch.nn.Linear)][:-1]
    extra = 2 * (order + 1) * channels  # the carried trend coefficients, a +/- pair each
    assert widths == [h + extra for h in (*hidden, *reversed(hidden[:-1]))]
    with torch.no_grad():
        np.testing.assert_allclose(dense(x).numpy(), model(x).numpy(), atol=2e-5)
    build_dense_autoencoder(dense.dense_layers(), 50, channels, int8=False)  # writable as TFLite


def test_a_line_added_to_a_window_comes_back_in_its_reconstruction() -> None:
    torch.manual_seed(2)
    dense = TrendFreeDenseAE(40, 1, (12, 4), 1).eval().as_dense()
    x = torch.randn(5, 40, 1)
    line = (1.5 - 2.0 * torch.linspace(-1, 1, 40))[None, :, None]
    with torch.no_grad():
        err = dense(x) - x
        err_shifted = dense(x + line) - (x + line)
    np.testing.assert_allclose(err_shifted.numpy(), err.numpy(), atol=2e-5)
