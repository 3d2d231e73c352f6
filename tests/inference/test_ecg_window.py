"""models/ecg-window: the sliding-window ECG autoencoder runs on a raw 250 Hz ECG stream and nowhere else.

Real files, real runtimes, the real `edge-agent check-config`; the ECG is the first 60 s of MIT-BIH record
200 (tests/fixtures/mitdb, ODC-By), resampled from 360 to 250 Hz as the training tool does. Record 200
is one of the model's test records (never trained on)."""

from __future__ import annotations

import numpy as np
import pytest

from agent.config import parse_config
from agent.detectors.base import WindowBlock
from agent.inference import load_model
from agent.inference.detector import AutoencoderDetector

from .test_model_input import MODELS, check_config
from .test_parity import record_200_at_250_hz, sliding_ecg_windows

HOP = 8


def ecg(tmp_path, capsys, rate_hz: float, extra: str = "") -> tuple[int, str]:  # type: ignore[no-untyped-def]
    return check_config(
        tmp_path,
        capsys,
        id="ecg-ae",
        stream="ecg",
        channels='["MLII"]',
        rate_hz=rate_hz,
        model=MODELS / "ecg-window",
        extra=extra,
    )


def test_the_window_model_is_accepted_on_a_raw_250_hz_ecg(
    tmp_path: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ecg(tmp_path, capsys, 250) == (0, "")


@pytest.mark.parametrize("rate_hz", [360, 200, 500])
def test_the_window_model_is_refused_at_another_rate(
    tmp_path: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str], rate_hz: int
) -> None:
    code, err = ecg(tmp_path, capsys, rate_hz)
    assert code == 2
    assert (
        f"detectors.ecg-ae.rate_hz: model ecg-window was trained on samples at 250 Hz (its card's"
        f" input.rate_hz); this detector reads stream 'ecg' at {rate_hz} Hz" in err
    )


def test_the_window_model_refuses_beat_windows(
    tmp_path: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = ecg(tmp_path, capsys, 250, ', input = "beats"')
    assert (
        code == 2 and "detectors.ecg-ae.params.input: model ecg-window scores 500 consecutive samples" in err
    )


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
def test_a_raw_ecg_stream_scores_its_pvcs_above_its_normal_stretches(tmp_path, backend: str) -> None:  # type: ignore[no-untyped-def]
    """The detector as a config builds it, hop by hop over a raw 250 Hz ECG in mV: PVC windows score
    above the PVC-free ones, and few PVC-free windows cross the card threshold."""
    config = parse_config(
        {
            "gateway": {"id": "gw", "site": "lab", "state_dir": str(tmp_path)},
            "mqtt": {"url": "mqtt://127.0.0.1:1883"},
            "outbox": {"path": str(tmp_path / "outbox.sqlite")},
            "devices": [{"id": "bed", "kind": "wearable", "transport": "simulator"}],
            "detectors": [
                {
                    "id": "ecg-ae",
                    "type": "autoencoder",
                    "stream": "ecg",
                    "channels": ["MLII"],
                    "rate_hz": 250,
                    "params": {
                        "model": str(MODELS / "ecg-window"),
                        "backend": backend,
                        "public_key": str(MODELS / "edge-agent-models.pub"),
                    },
                }
            ],
        },
        base_dir=tmp_path,
    )
    detector = AutoencoderDetector.from_config(config.detectors[0], 250.0)
    assert (detector.window, detector.hop) == (500, HOP)
    signal, _ = record_200_at_250_hz()
    scores, thresholds = [], []
    for end in range(detector.window, len(signal) + 1, HOP):
        block = WindowBlock(
            signal[None, end - detector.window : end, None], np.zeros(1, np.int64), np.zeros(1), HOP
        )
        verdict = detector.score(block)
        scores.append(verdict.scores[0])
        thresholds.append(verdict.thresholds[0])
    _, pvc, normal = sliding_ecg_windows(detector.window)
    s = np.asarray(scores)
    assert np.isfinite(s).all() and np.all(np.asarray(thresholds) == detector.threshold)
    auc = (s[pvc][:, None] > s[normal][None, :]).mean()
    assert auc > 0.9, auc
    assert (s[normal] > detector.threshold).mean() < 0.1
    assert (s[pvc] > detector.threshold).mean() > 0.5


def test_a_baseline_offset_or_drift_does_not_change_the_score() -> None:
    """The model restores each window's least-squares line: a DC offset or a linear drift across the
    window leaves the score as it was (what the gateway does no baseline removal for)."""
    model = load_model(MODELS / "ecg-window", backend="onnx", precision="fp32")
    x, _, _ = sliding_ecg_windows(500)
    x = x[::40]
    drift = 0.8 + np.linspace(-0.5, 0.5, 500)[None, :, None]
    np.testing.assert_allclose(model.score(x + drift)[0], model.score(x)[0], rtol=2e-3, atol=1e-5)
