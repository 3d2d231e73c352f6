"""load_model refuses what it cannot trust: wrong channels/window, truncated or foreign files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from agent.errors import ModelError
from agent.inference import available_backends, load_backend, load_model
from agent.inference.card import ModelCard

from .broken_models import onnx_not_a_reconstruction

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
)


def test_both_runtimes_are_installed() -> None:
    assert available_backends() == ("onnx", "tflite")
    assert load_backend("auto").name == "onnx"
    with pytest.raises(ModelError, match="unknown inference backend"):
        load_backend("torch")  # type: ignore[arg-type]


def test_channel_mismatch_is_refused(pump_dir: Path, pump_card: ModelCard) -> None:
    channels = list(pump_card.channels)
    wrong = [*channels[:-1], "Vibration"]
    with pytest.raises(
        ModelError,
        match=r"model pump: model expects channels .*"
        r"\(missing \['Volume Flow RateRMS'\], unexpected \['Vibration'\]\)",
    ):
        load_model(pump_dir, channels=wrong)
    with pytest.raises(ModelError, match="same names, different order"):
        load_model(pump_dir, channels=list(reversed(channels)))
    with pytest.raises(ModelError, match=f"windows of {pump_card.window} samples, configured 7"):
        load_model(pump_dir, channels=channels, window=7)


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
@pytest.mark.parametrize("damage", ["truncated", "random", "png"])
def test_damaged_file_is_refused_before_parsing(
    pump_copy: Path, pump_card: ModelCard, backend: str, damage: str
) -> None:
    path = pump_copy / pump_card.artifacts[f"{backend}_int8"].file
    data = path.read_bytes()
    replacement = {
        "truncated": data[: len(data) // 2],
        "random": np.random.default_rng(1).bytes(len(data)),
        "png": PNG,
    }[damage]
    path.write_bytes(replacement)
    with pytest.raises(
        ModelError, match=r"model pump: .* does not match its card .*truncated, altered or not"
    ):
        load_model(pump_copy, backend=backend, precision="int8")  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
@pytest.mark.parametrize("content", ["png", "truncated"])
def test_foreign_file_with_matching_card_is_refused_by_the_runtime_check(
    pump_copy: Path, pump_card: ModelCard, backend: str, content: str
) -> None:
    """Even a card re-written for the bad file (so the sha256 matches) cannot make a runtime load it."""
    key = f"{backend}_fp32"
    path = pump_copy / pump_card.artifacts[key].file
    path.write_bytes(PNG if content == "png" else path.read_bytes()[:300])
    raw = json.loads((pump_copy / "card.json").read_text(encoding="utf-8"))
    raw["artifacts"][key]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (pump_copy / "card.json").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(
        ModelError,
        match=r"model pump: pump\.fp32\.(onnx|tflite): (not an? (ONNX|TFLite) model|.*cannot load the model)",
    ):
        load_model(pump_copy, backend=backend, precision="fp32")  # type: ignore[arg-type]


def test_missing_artifact_file_is_named(pump_copy: Path, pump_card: ModelCard) -> None:
    (pump_copy / pump_card.artifacts["onnx_int8"].file).unlink()
    with pytest.raises(ModelError, match=r"cannot read .*pump\.int8\.onnx"):
        load_model(pump_copy, backend="onnx")


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
def test_batches_of_any_size_give_the_same_scores(pump_dir: Path, pump_card: ModelCard, backend: str) -> None:
    model = load_model(pump_dir, backend=backend, precision="int8")  # type: ignore[arg-type]
    rng = np.random.default_rng(3)
    x = np.asarray(pump_card.mean) + np.asarray(pump_card.scale) * rng.standard_normal(
        (9, pump_card.window, 8)
    )
    together, contributions = model.score(x)
    one_by_one = np.concatenate([model.score(x[i : i + 1])[0] for i in range(9)])
    np.testing.assert_allclose(together, one_by_one, rtol=1e-5)
    np.testing.assert_allclose(contributions.sum(axis=1), together, rtol=1e-9)
    assert (contributions >= 0).all()


@pytest.mark.parametrize(
    ("kind", "reason"), [("mean", r"output \[1, 10\] does not match"), ("nan", "output is not finite")]
)
def test_a_model_that_loads_but_does_not_reconstruct_is_refused_at_load(
    pump_copy: Path, pump_card: ModelCard, kind: str, reason: str
) -> None:
    """Right input shape, sha256 matching its card: the probe window through it is what refuses it."""
    path = pump_copy / pump_card.artifacts["onnx_fp32"].file
    path.write_bytes(onnx_not_a_reconstruction(pump_card.window, len(pump_card.channels), kind))
    raw = json.loads((pump_copy / "card.json").read_text(encoding="utf-8"))
    raw["artifacts"]["onnx_fp32"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (pump_copy / "card.json").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(ModelError, match=rf"model pump: pump\.fp32\.onnx: onnx {reason}"):
        load_model(pump_copy, backend="onnx", precision="fp32")


@pytest.mark.parametrize(("backend", "suffix"), [("onnx", "onnx"), ("tflite", "tflite")])
def test_a_card_window_the_artifact_does_not_take_names_the_file(
    pump_copy: Path, backend: str, suffix: str
) -> None:
    """Start-up shape errors name the artifact file and print plain numbers (audit audml finding 11: the
    TFLite one showed np.int32(1) and neither named the file)."""
    raw = json.loads((pump_copy / "card.json").read_text(encoding="utf-8"))
    raw["window"] = 30
    (pump_copy / "card.json").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(ModelError) as exc:
        load_model(pump_copy, backend=backend, precision="int8")  # type: ignore[arg-type]
    message = str(exc.value)
    assert message.startswith(f"model pump: pump.int8.{suffix}: ")
    assert "10, 8] does not match the card (batch, 30, 8)" in message
    assert "np." not in message
