"""Model cards: strict parsing with errors that name the model and the field."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from agent.errors import ModelError
from agent.inference.card import canonical_json, load_card, parse_card


def _raw(pump_dir: Path) -> dict[str, Any]:
    return json.loads((pump_dir / "card.json").read_text(encoding="utf-8"))


def test_shipped_card_parses(pump_dir: Path) -> None:
    card = load_card(pump_dir)
    assert card.name == "pump"
    assert len(card.channels) == 8 and len(card.mean) == 8 and len(card.scale) == 8
    assert card.threshold > 0
    assert {"onnx_fp32", "onnx_int8", "tflite_fp32", "tflite_int8"} <= set(card.artifacts)


@pytest.mark.parametrize(
    "field",
    [
        "window",
        "hop",
        "channels",
        "normalisation",
        "threshold",
        "artifacts",
        "training_data",
        "runtimes",
        "version",
        "metrics",
    ],
)
def test_missing_field_is_named(pump_dir: Path, field: str) -> None:
    raw = _raw(pump_dir)
    del raw[field]
    with pytest.raises(ModelError, match=f"model pump: card field '{field}' is missing"):
        parse_card(raw, "pump")


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("window",), 0, "'window' must be >= 1"),
        (("window",), "20", "'window' must be an integer"),
        (("threshold",), -1.0, "'threshold' must be a finite number > 0"),
        (("channels",), [], "non-empty list"),
        (("channels",), ["a", "a", "b", "c", "d", "e", "f", "g"], "names a channel twice"),
        (("normalisation", "mean"), [0.0] * 7, "'normalisation.mean' must be 8 finite numbers"),
        (("normalisation", "scale"), [1.0] * 7 + [0.0], "'normalisation.scale' must be > 0"),
        (("artifacts", "onnx_int8", "sha256"), "xyz", "is not a hex sha256"),
    ],
)
def test_invalid_field_is_explained(pump_dir: Path, path: tuple[str, ...], value: Any, message: str) -> None:
    raw = _raw(pump_dir)
    target = raw
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ModelError, match=message):
        parse_card(raw, "pump")


def test_preprocessing_pca_fraction_is_read_and_checked(pump_dir: Path, residual_dir: Path) -> None:
    assert load_card(pump_dir).pca_fraction == 0.0  # no preprocessing block: the window itself
    assert load_card(residual_dir).pca_fraction == 0.5
    raw = _raw(pump_dir)
    raw["preprocessing"] = {"beat_window_s": [-0.25, 0.4]}  # other keys are documentation only
    assert parse_card(raw, "pump").pca_fraction == 0.0
    for bad in (1.0, -0.1, "0.5", True, None):
        raw["preprocessing"] = {"pca_fraction": bad}
        with pytest.raises(ModelError, match=r"'preprocessing\.pca_fraction' must be a number in \[0, 1\)"):
            parse_card(raw, "pump")
    raw["preprocessing"] = [0.5]
    with pytest.raises(ModelError, match=r"'preprocessing\.pca_fraction'"):
        parse_card(raw, "pump")


def test_missing_and_corrupt_card_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no model card"):
        load_card(tmp_path)
    (tmp_path / "card.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelError, match="unreadable"):
        load_card(tmp_path)


def test_canonical_json_ignores_layout_not_content(pump_dir: Path) -> None:
    raw = _raw(pump_dir)
    reordered = dict(reversed(list(copy.deepcopy(raw).items())))
    assert canonical_json(reordered) == canonical_json(raw)
    raw["threshold"] = raw["threshold"] * 1.01
    assert canonical_json(reordered) != canonical_json(raw)
