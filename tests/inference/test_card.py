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
