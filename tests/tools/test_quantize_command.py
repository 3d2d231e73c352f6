"""`python -m tools.train.quantize` for a model trained elsewhere (audit audml finding 11): the shipped
pump fp32 ONNX stands in for the user's model; the result loads as a gateway loads it and its card
threshold is the stated quantile of the given data's fp32 scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")  # the command reuses tools.train.autoencoder's helpers
pytest.importorskip("onnxruntime")

from agent.inference import load_model
from tools.train.autoencoder import make_windows
from tools.train.quantize import main

PUMP = Path(__file__).resolve().parents[2] / "models" / "pump"


def test_an_onnx_trained_elsewhere_becomes_a_loadable_int8_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = json.loads((PUMP / "card.json").read_text())
    mean, scale, channels = (
        np.asarray(card["normalisation"]["mean"]),
        card["normalisation"]["scale"],
        card["channels"],
    )
    rng = np.random.default_rng(5)
    rows = mean + 0.7 * np.asarray(scale) * rng.standard_normal((400, len(channels)))
    data = tmp_path / "later.csv"
    data.write_text(
        ";".join(channels) + "\n" + "\n".join(";".join(f"{v:.6f}" for v in r) for r in rows) + "\n"
    )
    out = tmp_path / "mine"
    argv = [
        "--onnx", str(PUMP / "pump.fp32.onnx"),
        "--channels", ",".join(channels),
        "--mean", ",".join(map(str, card["normalisation"]["mean"])),
        "--scale", ",".join(map(str, scale)),
        "--data", str(data), "--delimiter", ";", "--rate-hz", "1", "--version", "2.1.0",
        "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    written = json.loads((out / "card.json").read_text())
    assert written["version"] == "2.1.0" and written["window"] == card["window"]
    assert written["input"] == {"kind": "stream", "rate_hz": 1.0}
    assert "normal windows of later.csv" in written["threshold_rule"]
    assert sorted(written["artifacts"]) == ["onnx_fp32", "onnx_int8"]
    fp32 = load_model(out, backend="onnx", precision="fp32")
    int8 = load_model(out, backend="onnx", precision="int8")
    windows = make_windows(rows, card["window"]).astype(np.float64)
    scores, _ = fp32.score(windows)
    assert written["threshold"] == pytest.approx(float(np.quantile(scores, 0.995)), rel=1e-5)
    assert np.corrcoef(scores, int8.score(windows)[0])[0, 1] > 0.99

    with pytest.raises(SystemExit):
        main([*argv[:4], "--mean", "0,0", *argv[6:]])  # two means for eight channels
    assert "--mean and --scale need 8 values each" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv[:2], "--channels", "a,b", "--mean", "0,0", "--scale", "1,1", *argv[8:]])
    assert "is not (batch, window, 2 channels)" in capsys.readouterr().err
