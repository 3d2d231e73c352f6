"""tools/train/residuals: a residual model's training windows are exactly what AutoencoderDetector feeds
the model on the gateway (synthetic recording, the shipped models/pump-residual)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.detectors.base import WindowBlock
from agent.inference import load_model
from agent.inference.detector import AutoencoderDetector
from tools.train.residuals import residual_preprocessing, residual_windows

MODEL = Path(__file__).resolve().parents[2] / "models" / "pump-residual"


def test_training_windows_are_the_detectors_model_inputs() -> None:
    model = load_model(MODEL, backend="onnx", precision="fp32")
    card = model.card
    adapt, floor_fraction, rows = 120, 0.5, 160
    rng = np.random.default_rng(2)
    mean, scale = np.asarray(card.mean), np.asarray(card.scale)
    values = mean + scale * (rng.normal(0, 2, (1, 8)) + 0.5 * rng.standard_normal((rows, 8)))
    values[140:, 3] += 5 * scale[3]
    fed: list[np.ndarray] = []
    run = model.backend.run

    def capturing_run(batch: np.ndarray) -> np.ndarray:
        fed.append(batch.copy())
        return run(batch)

    model.backend.run = capturing_run  # type: ignore[method-assign]
    detector = AutoencoderDetector(
        "pump", model, hop=1, adapt_rows=adapt, min_scale_fraction=floor_fraction, smooth_rows=1
    )
    w = detector.window
    for t in range(w - 1, rows):
        detector.score(WindowBlock(values[None, t - w + 1 : t + 1], np.zeros(1, np.int64), np.zeros(1), 1))
    expected = residual_windows(values, w, detector.components, floor_fraction * scale, adapt)
    # the adaptation windows in one call, then one window per row from the last adaptation row on
    assert len(fed) == 1 + rows - adapt + 1
    np.testing.assert_allclose(fed[0], expected[: adapt - w + 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.concatenate(fed[1:]), expected[adapt - w :], rtol=1e-5, atol=1e-6)
    assert residual_preprocessing(0.5, adapt)["pca_fraction"] == card.pca_fraction


def test_too_few_rows_for_the_subspace_are_refused_with_the_fix() -> None:
    values = np.random.default_rng(0).standard_normal((500, 2))
    with pytest.raises(ValueError, match=r"adapt_rows 10 gives 5 windows.*use adapt_rows >= 17"):
        residual_windows(values, 6, 6, np.full(2, 0.1), 10)
    with pytest.raises(ValueError, match=r"a recording of 500 rows is shorter than adapt_rows \(600\)"):
        residual_windows(values, 6, 6, np.full(2, 0.1), 600)
