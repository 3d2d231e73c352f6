"""tools/train/skab_head: its grid-search shortcut decides every row as the live AutoencoderDetector does.

Synthetic streams (not SKAB data, which is GPL and stays out of the repository) scored by the shipped
models/pump-residual, which the tool builds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.inference.card import load_card
from tools.train.skab import CALIBRATION_ROWS, CHANNELS, Experiment
from tools.train.skab_head import decide, live_flags, model_scores

MODEL = Path(__file__).resolve().parents[2] / "models" / "pump-residual"
FLOOR_FRACTION = 0.5


def _experiments() -> list[Experiment]:
    card = load_card(MODEL)
    mean, scale = np.asarray(card.mean), np.asarray(card.scale)
    rng = np.random.default_rng(11)
    out = []
    for i, rows in enumerate((460, 520, 490)):
        values = mean + 0.5 * scale * rng.standard_normal((rows, len(CHANNELS)))
        labels = np.zeros(rows, np.int8)
        labels[430:] = 1
        values[430:, i] += 4 * scale[i]  # a step on one channel
        out.append(Experiment(f"synthetic/{i}", values, labels))
    return out


def test_shortcut_decides_as_the_live_detector() -> None:
    exps = _experiments()
    window = load_card(MODEL).window
    components = 24  # half of the 48 window values, as the card's preprocessing says
    floor = FLOOR_FRACTION * np.asarray(load_card(MODEL).scale)
    ae, _ = model_scores(MODEL, exps, window, components, floor)
    for smooth, quantile, margin in ((1, 0.95, 1.0), (5, 0.99, 1.5)):
        params = {"smooth_rows": smooth, "threshold_quantile": quantile, "threshold_margin": margin}
        live = live_flags(MODEL, exps, params, "onnx", "int8", 0.5, FLOOR_FRACTION)
        searched = [decide(r, window, smooth, quantile, margin) for r in ae]
        for a, b, e in zip(searched, live, exps, strict=True):
            assert len(a) == len(e.values) - CALIBRATION_ROWS
            np.testing.assert_array_equal(a, b)
        flagged = np.concatenate(searched)
        assert 0 < flagged.sum() < flagged.size  # the comparison decides both ways
