"""`--version` of the training tools (audit audml, finding 8): every tool wrote "1.0.0", and a gateway's
models/install refuses a version it already has, so a retrained model could not be installed without a
hand edit of its signed card. Run as a user runs it: `main` on CSV files written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from tools.train import ecg, skab, skab_head
from tools.train.autoencoder import main

ARGS = ["--window", "5", "--hidden", "6,2", "--epochs", "1", "--channels", "a,b", "--rate-hz", "1"]


def normal_csv(path: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = np.sin(np.arange(200)[:, None] / 5.0 + [0.0, 1.0]) + 0.1 * rng.standard_normal((200, 2))
    path.write_text("a,b\n" + "\n".join(f"{x:.5f},{y:.5f}" for x, y in rows) + "\n", encoding="utf-8")
    return path


def test_the_card_carries_the_version_given(tmp_path: Path) -> None:
    data = normal_csv(tmp_path / "normal.csv")
    assert main(["--data", str(data), "--out", str(tmp_path / "m"), *ARGS, "--version", "1.2.0"]) == 0
    assert json.loads((tmp_path / "m" / "card.json").read_text())["version"] == "1.2.0"
    assert main(["--data", str(data), "--out", str(tmp_path / "d"), *ARGS]) == 0
    assert json.loads((tmp_path / "d" / "card.json").read_text())["version"] == "1.0.0"  # the default


@pytest.mark.parametrize("tool", [main, skab.main, skab_head.main, ecg.main])
def test_a_version_a_gateway_would_refuse_is_refused_before_training(
    tool: object, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        tool(["--version", "banana"])  # type: ignore[operator]
    assert exit_.value.code == 2
    assert "'banana' is not dotted numbers, e.g. 1.2.0" in capsys.readouterr().err


def test_the_card_states_its_input_and_how_it_was_made(tmp_path: Path) -> None:
    """Audit audml, findings 4 and 9: the rate the data was sampled at (the gateway checks a detector's
    rate_hz against it), licence, intended use, limits, the build command, and the LiteRT int8 file's
    faithfulness; the card loads with them."""
    from agent.inference import load_model

    data = normal_csv(tmp_path / "normal.csv")
    argv = ["--data", str(data), "--out", str(tmp_path / "m"), *ARGS, "--licence", "CC0", "--limit", "lab"]
    assert main(argv) == 0
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["input"] == {"kind": "stream", "rate_hz": 1.0}
    assert card["licence"] == "CC0" and card["limits"] == ["trained on normal.csv only", "lab"]
    assert card["build"]["command"].startswith("python -m tools.train.autoencoder --data ")
    assert card["build"]["tool"] == "tools.train.autoencoder" and "--rate-hz 1" in card["build"]["command"]
    comparison = card["quantization"]["comparison_on_test_windows"]
    flagged = comparison["weights"]["batch_1"]["flags_fp32"] / comparison["test_windows"]
    assert 0.05 < flagged < 0.5  # scores spread across the threshold (every x3 copy flagged: >= 0.5)
    litert = card["quantization"]["litert_int8"]
    assert set(litert) == {"batch_1", "batch_64_mixed", "bytes"}
    assert litert["batch_1"]["pearson"] > 0.99
    loaded = load_model(tmp_path / "m", backend="onnx")
    assert (loaded.card.input_kind, loaded.card.rate_hz) == ("stream", 1.0)


def test_the_rate_is_required(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = normal_csv(tmp_path / "normal.csv")
    with pytest.raises(SystemExit):
        main(["--data", str(data), "--out", str(tmp_path / "m"), *ARGS[:-2]])
    assert "--rate-hz" in capsys.readouterr().err
