"""`superseded_by` of `[[alarms]]`: names that make no alarm hierarchy stop start-up, naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.config.alarm_hierarchy import superseding_conditions
from agent.config.loader import parse_config
from agent.errors import InvalidConfigError
from agent.pipeline import Pipeline

BASE: dict[str, Any] = {
    "gateway": {"id": "gw-1", "site": "lab"},
    "mqtt": {"url": "mqtt://127.0.0.1:1883"},
    "outbox": {"path": "outbox.sqlite"},
    "devices": [{"id": "w1", "kind": "wearable", "transport": "simulator"}],
    "detectors": [
        {"id": "af", "type": "af", "stream": "ecg_rr", "channels": ["rr"]},
        {"id": "pvc", "type": "pvc", "stream": "ecg_rr", "channels": ["rr", "qrs_shape"]},
        {"id": "hr-high", "type": "limit", "stream": "vitals", "channels": ["hr"], "params": {"above": 120}},
    ],
}


def alarms(**superseded_by: list[Any]) -> list[dict[str, Any]]:
    """The three rules, each with `superseded_by` as given for its condition."""
    rules: list[dict[str, Any]] = [
        {"condition": "atrial_fibrillation", "detector": "af"},
        {"condition": "frequent_pvcs", "detector": "pvc"},
        {"condition": "tachycardia", "detector": "hr-high"},
    ]
    for rule in rules:
        if rule["condition"] in superseded_by:
            rule["superseded_by"] = superseded_by[rule["condition"]]
    return rules


def problems(rules: list[dict[str, Any]], tmp_path: Path) -> dict[str, str]:
    with pytest.raises(InvalidConfigError) as info:
        parse_config({**BASE, "alarms": rules}, base_dir=tmp_path)
    return {e.path: str(e) for e in info.value.errors}


def test_a_rule_of_the_same_stream_is_taken(tmp_path: Path) -> None:
    config = parse_config(
        {**BASE, "alarms": alarms(frequent_pvcs=["atrial_fibrillation"])}, base_dir=tmp_path
    )
    assert config.alarms[1].superseded_by == ("atrial_fibrillation",)
    assert config.alarms[0].superseded_by == ()


def test_a_name_of_no_rule_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    found = problems(alarms(frequent_pvcs=["atrial_fib"]), tmp_path)
    assert set(found) == {"alarms[1].superseded_by[0]"}
    message = found["alarms[1].superseded_by[0]"]
    assert 'no alarm rule with condition "atrial_fib"' in message
    assert "known: atrial_fibrillation, tachycardia" in message


def test_a_rule_of_another_stream_is_refused(tmp_path: Path) -> None:
    found = problems(alarms(frequent_pvcs=["atrial_fibrillation", "tachycardia"]), tmp_path)
    assert set(found) == {"alarms[1].superseded_by[1]"}
    message = found["alarms[1].superseded_by[1]"]
    assert 'stream "vitals"' in message and 'stream "ecg_rr"' in message


def test_a_condition_with_rules_on_several_streams_is_taken_for_this_streams(tmp_path: Path) -> None:
    # tachycardia from the vitals' hr and from the ECG's beats: the latter can supersede frequent_pvcs
    detectors = [
        *BASE["detectors"],
        {"id": "ecg-hr", "type": "limit", "stream": "ecg_rr", "channels": ["hr"], "params": {"above": 130}},
    ]
    rules = [
        *alarms(frequent_pvcs=["tachycardia"]),
        {"condition": "tachycardia", "detector": "ecg-hr"},
    ]
    config = parse_config({**BASE, "detectors": detectors, "alarms": rules}, base_dir=tmp_path)
    assert config.alarms[1].superseded_by == ("tachycardia",)


def test_its_own_condition_is_refused(tmp_path: Path) -> None:
    found = problems(alarms(frequent_pvcs=["frequent_pvcs"]), tmp_path)
    assert "cannot supersede itself" in found["alarms[1].superseded_by[0]"]


def test_a_cycle_is_refused_once(tmp_path: Path) -> None:
    found = problems(
        alarms(frequent_pvcs=["atrial_fibrillation"], atrial_fibrillation=["frequent_pvcs"]), tmp_path
    )
    assert set(found) == {"alarms[0].superseded_by"}
    assert "atrial_fibrillation -> frequent_pvcs -> atrial_fibrillation" in found["alarms[0].superseded_by"]


def test_not_an_array_of_strings_is_refused(tmp_path: Path) -> None:
    found = problems(alarms(frequent_pvcs="atrial_fibrillation"), tmp_path)  # type: ignore[arg-type]
    assert list(found) == ["alarms[1].superseded_by"]
    assert found["alarms[1].superseded_by"].endswith(
        'expected an array of strings, got "atrial_fibrillation"'
    )


def test_the_hierarchy_is_closed_per_stream_where_the_books_are_built(tmp_path: Path) -> None:
    # elevated < extreme < critical on vitals: elevated is held by both; a rule of `extreme` on another
    # stream (ecg_rr) superseded by nothing there does not widen vitals' chain, nor vitals' its own.
    detectors = [
        *BASE["detectors"],
        {
            "id": "hr-extreme",
            "type": "limit",
            "stream": "vitals",
            "channels": ["hr"],
            "params": {"above": 150},
        },
        {
            "id": "hr-critical",
            "type": "limit",
            "stream": "vitals",
            "channels": ["hr"],
            "params": {"above": 180},
        },
    ]
    rules: list[dict[str, Any]] = [
        {"condition": "critical", "detector": "hr-critical"},
        {"condition": "extreme", "detector": "hr-extreme", "superseded_by": ["critical"]},
        {"condition": "elevated", "detector": "hr-high", "superseded_by": ["extreme"]},
        {"condition": "extreme", "detector": "af"},
        {"condition": "frequent_pvcs", "detector": "pvc", "superseded_by": ["extreme"]},
    ]
    config = parse_config({**BASE, "detectors": detectors, "alarms": rules}, base_dir=tmp_path)
    closed = superseding_conditions(config.alarms, config.detectors)
    assert closed == [(), ("critical",), ("extreme", "critical"), (), ("extreme",)]
    books = Pipeline(config, str)._books
    assert books["hr-high/elevated"].superseding == ("extreme", "critical")
    assert books["pvc/frequent_pvcs"].superseding == ("extreme",)


def test_an_item_that_is_no_string_is_named_with_its_index_and_type(tmp_path: Path) -> None:
    # Before: "alarms[1].superseded_by: expected an array of strings, got an array", for the whole key.
    found = problems(alarms(frequent_pvcs=["atrial_fibrillation", 3, ["x"]]), tmp_path)
    assert found == {
        "alarms[1].superseded_by[1]": "alarms[1].superseded_by[1]: expected a string, got an integer (3)",
        "alarms[1].superseded_by[2]": "alarms[1].superseded_by[2]: expected a string, got an array",
    }
