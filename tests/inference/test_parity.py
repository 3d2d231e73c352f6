"""ONNX fp32/int8 and LiteRT fp32/int8 raise the same alarms on the shipped models.

Test data: synthetic normal and step-anomaly windows for `pump` (never SKAB data), synthetic pump streams
scored through AutoencoderDetector for `pump-residual` (its input is each stream's residual, so only the
detector can feed it), and the first 60 s of MIT-BIH record 200 (ODC-By, tests/fixtures/mitdb) for
`ecg-beat` (its beat windows) and `ecg-window` (every hop's 2 s window of it resampled to 250 Hz; a PVC
R peak inside is anomalous, windows with one within 0.4 s of their edges are left out). Stated
tolerance: the two fp32 runtimes agree to 1e-4 relative; each int8 model's scores are within 2 %
(median) of fp32, and its alarm flags equal fp32's on every window whose fp32 score is more than 5 %
away from the threshold (a window right at the threshold may flip under any rounding; at most 1 % of
windows may do so).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.signal import resample_poly

from agent.detectors.base import WindowBlock
from agent.inference import load_model
from agent.inference.beats import beat_windows
from agent.inference.detector import AutoencoderDetector

from .synthetic import synthetic_pump_windows

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mitdb"
ARTIFACTS = [("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "int8")]


def _ecg_excerpt() -> tuple[np.ndarray, np.ndarray]:
    signal = np.loadtxt(FIXTURES / "200_mlii_0-60s.csv", skiprows=1)
    beats = np.genfromtxt(FIXTURES / "200_beats_0-60s.csv", delimiter=",", skip_header=1)
    windows, ok = beat_windows(signal, beats[:, 0].astype(np.int64), 360.0)
    return windows[ok].astype(np.float64), beats[ok, 1] == 1


def record_200_at_250_hz() -> tuple[np.ndarray, np.ndarray]:
    """(signal in mV at 250 Hz, PVC R peaks as sample indices at 250 Hz), resampled as
    tools/train/ecg_window.py does."""
    signal = np.loadtxt(FIXTURES / "200_mlii_0-60s.csv", skiprows=1)
    beats = np.genfromtxt(FIXTURES / "200_beats_0-60s.csv", delimiter=",", skip_header=1)
    pvc = np.round(beats[beats[:, 1] == 1, 0] * 250 / 360).astype(np.int64)
    return resample_poly(signal, 25, 36), pvc


def sliding_ecg_windows(window: int, hop: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every hop's window of the 250 Hz excerpt: (windows (N, W, 1), a PVC R peak inside, no PVC R peak
    within 0.4 s of the window)."""
    signal, pvc = record_200_at_250_hz()
    ends = np.arange(window, len(signal) + 1, hop)
    x = np.stack([signal[e - window : e] for e in ends])[:, :, None]
    inside = np.array([((pvc >= e - window) & (pvc < e)).any() for e in ends])
    near = np.array([((pvc >= e - window - 100) & (pvc < e + 100)).any() for e in ends])
    return x, inside, ~near


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels], scores[~labels]
    return float((pos[:, None] > neg[None, :]).mean())


def _scores(model_dir: Path, x: np.ndarray) -> dict[tuple[str, str], np.ndarray]:
    return {(b, p): load_model(model_dir, backend=b, precision=p).score(x)[0] for b, p in ARTIFACTS}  # type: ignore[arg-type]


@pytest.mark.parametrize("model", ["pump", "ecg-beat", "ecg-window"])
def test_all_backends_raise_the_same_alarms(model: str, pump_dir: Path) -> None:
    model_dir = pump_dir.parent / model
    if model == "pump":
        card = load_model(model_dir).card
        x, anomalous = synthetic_pump_windows(card, 400)
    elif model == "ecg-beat":
        x, anomalous = _ecg_excerpt()
        assert anomalous.sum() >= 20 and (~anomalous).sum() >= 20
    else:
        x, inside, clear_of = sliding_ecg_windows(load_model(model_dir).card.window)
        x, anomalous = x[inside | clear_of], inside[inside | clear_of]
        assert anomalous.sum() >= 100 and (~anomalous).sum() >= 100
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


def _residual_scores(model_dir: Path) -> tuple[dict[tuple[str, str], np.ndarray], np.ndarray, np.ndarray]:
    """Six synthetic pumps (own operating points, noise), three of them with a 4-sigma step on two
    channels from row 500; each artifact scores them through the detector, adapting on the first 400 rows.
    Returns scores and thresholds per artifact (rows >= 400) and which rows are anomalous."""
    card = load_model(model_dir).card
    rng = np.random.default_rng(11)
    mean, scale = np.asarray(card.mean), np.asarray(card.scale)
    n, rows = 6, 700
    x = mean + rng.normal(0, 2, (n, 1, 8)) * scale + 0.5 * scale * rng.standard_normal((n, rows, 8))
    for i in range(3):
        x[i, 500:, [i, i + 3]] += 4 * scale[[i, i + 3], None]
    anomalous = np.zeros((rows, n), bool)
    anomalous[500:, :3] = True
    out: dict[tuple[str, str], np.ndarray] = {}
    limits: dict[tuple[str, str], np.ndarray] = {}
    for b, p in ARTIFACTS:
        model = load_model(model_dir, backend=b, precision=p)  # type: ignore[arg-type]
        detector = AutoencoderDetector(
            "pump", model, hop=1, adapt_rows=400, smooth_rows=10, threshold_margin=1.5
        )
        w, blocks = detector.window, []
        for t in range(w - 1, rows):
            blocks.append(detector.score(WindowBlock(x[:, t - w + 1 : t + 1], np.arange(n), np.zeros(n), 1)))
        out[(b, p)] = np.array([blk.scores for blk in blocks])[400 - w + 1 :]
        limits[(b, p)] = np.array([blk.thresholds for blk in blocks])[400 - w + 1 :]
    return out, limits, anomalous[400:]


def test_all_backends_raise_the_same_alarms_on_the_residual_model(residual_dir: Path) -> None:
    scores, limits, anomalous = _residual_scores(residual_dir)
    ref, ref_limit = scores[("onnx", "fp32")], limits[("onnx", "fp32")]
    live = np.isfinite(ref)
    assert live[anomalous].mean() > 0.9
    assert _auc(ref[live], anomalous[live]) > 0.9  # the steps score higher than the normal rows
    np.testing.assert_allclose(scores[("tflite", "fp32")], ref, rtol=1e-4)
    np.testing.assert_allclose(limits[("tflite", "fp32")], ref_limit, rtol=1e-4)
    ratio = ref / ref_limit
    clear = live & (np.abs(ratio - 1) > 0.05)
    for key in (("onnx", "int8"), ("tflite", "int8")):
        assert np.nanmedian(np.abs(scores[key] / ref - 1)) < 0.02, key
        flags, ref_flags = scores[key] > limits[key], ref > ref_limit
        np.testing.assert_array_equal(flags[clear], ref_flags[clear], err_msg=str(key))
        assert np.mean(flags[live] != ref_flags[live]) <= 0.01, key
