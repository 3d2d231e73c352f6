"""ONNX fp32/int8 and LiteRT fp32/int8 raise the same alarms on the shipped models.

Test data: synthetic normal and step-anomaly windows for `pump` (never SKAB data), and the first 60 s of
MIT-BIH record 200 (ODC-By, tests/fixtures/mitdb) for `ecg-beat`. Stated tolerance: the two fp32
runtimes agree to 1e-4 relative; each int8 model's scores are within 2 % (median) of fp32, and its
alarm flags equal fp32's on every window whose fp32 score is more than 5 % away from the threshold (a
window right at the threshold may flip under any rounding; at most 1 % of windows may do so).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.inference import load_model
from agent.inference.beats import beat_windows

from .synthetic import synthetic_pump_windows

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mitdb"
ARTIFACTS = [("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "int8")]


def _ecg_excerpt() -> tuple[np.ndarray, np.ndarray]:
    signal = np.loadtxt(FIXTURES / "200_mlii_0-60s.csv", skiprows=1)
    beats = np.genfromtxt(FIXTURES / "200_beats_0-60s.csv", delimiter=",", skip_header=1)
    windows, ok = beat_windows(signal, beats[:, 0].astype(np.int64), 360.0)
    return windows[ok].astype(np.float64), beats[ok, 1] == 1


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels], scores[~labels]
    return float((pos[:, None] > neg[None, :]).mean())


def _scores(model_dir: Path, x: np.ndarray) -> dict[tuple[str, str], np.ndarray]:
    return {(b, p): load_model(model_dir, backend=b, precision=p).score(x)[0] for b, p in ARTIFACTS}  # type: ignore[arg-type]


@pytest.mark.parametrize("model", ["pump", "ecg-beat"])
def test_all_backends_raise_the_same_alarms(model: str, pump_dir: Path) -> None:
    model_dir = pump_dir.parent / model
    if model == "pump":
        card = load_model(model_dir).card
        x, anomalous = synthetic_pump_windows(card, 400)
    else:
        x, anomalous = _ecg_excerpt()
        assert anomalous.sum() >= 20 and (~anomalous).sum() >= 20
    scores = _scores(model_dir, x)
    threshold = load_model(model_dir).card.threshold
    ref = scores[("onnx", "fp32")]
    # The test data must mean something: the anomalies score higher than the normal windows.
    assert _auc(ref, anomalous) > 0.9
    np.testing.assert_allclose(scores[("tflite", "fp32")], ref, rtol=1e-4)
    clear = np.abs(ref / threshold - 1) > 0.05
    for key in (("onnx", "int8"), ("tflite", "int8")):
        assert np.median(np.abs(scores[key] / ref - 1)) < 0.02, key
        flags, ref_flags = scores[key] > threshold, ref > threshold
        np.testing.assert_array_equal(flags[clear], ref_flags[clear], err_msg=str(key))
        assert np.mean(flags != ref_flags) <= 0.01, key
