"""Values a TOML file can hold but the config cannot use are reported with their key path, never raised.

Found by a seeded harness that mutates the shipped example configs (leaf values replaced by other TOML
types, NaN/inf, huge integers, NUL characters, 300-character names; keys deleted): before the fixes, a
path holding a NUL character raised ValueError, a file name longer than the file system allows raised
OSError, and a detector id of the wrong type next to an alarm naming an unknown detector raised TypeError
(sorting None with the known ids) instead of listing the problems."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.config.loader import parse_config
from agent.errors import InvalidConfigError

BASE: dict[str, Any] = {
    "gateway": {"id": "gw-1", "site": "lab"},
    "mqtt": {"url": "mqtt://127.0.0.1:1883"},
    "outbox": {"path": "outbox.sqlite"},
    "devices": [{"id": "w1", "kind": "wearable", "transport": "simulator"}],
}
PATH_KEYS = {  # key path -> the config holding the odd value there
    "gateway.state_dir": lambda v: {"gateway": {**BASE["gateway"], "state_dir": v}},
    "outbox.path": lambda v: {"outbox": {"path": v}},
    "outbox.encryption_key_file": lambda v: {"outbox": {"path": "o.sqlite", "encryption_key_file": v}},
    "privacy.key_file": lambda v: {"privacy": {"key_file": v}},
    "remote.public_key_file": lambda v: {"remote": {"public_key_file": v}},
    "remote.models_dir": lambda v: {"remote": {"models_dir": v}},
}


def problems(raw: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    with pytest.raises(InvalidConfigError) as info:
        parse_config(raw, base_dir=tmp_path)
    return {e.path: str(e) for e in info.value.errors}


@pytest.mark.parametrize("key", list(PATH_KEYS))
def test_a_path_holding_a_nul_is_a_problem_of_its_key(key: str, tmp_path: Path) -> None:
    found = problems({**BASE, **PATH_KEYS[key]("state\x00dir")}, tmp_path)
    assert key in found and "not a usable path" in found[key]


def test_a_file_name_too_long_for_the_file_system_is_a_problem_of_its_key(tmp_path: Path) -> None:
    found = problems({**BASE, **PATH_KEYS["remote.public_key_file"]("a" * 300)}, tmp_path)
    assert "not a usable path" in found["remote.public_key_file"]


def test_a_wrong_typed_detector_id_does_not_hide_the_other_problems(tmp_path: Path) -> None:
    detector = {"id": 5, "type": "limit", "stream": "vitals", "channels": ["hr"], "params": {"above": 1}}
    alarm = {"condition": "c", "detector": "nope", "min_duration_s": 1, "clear_after_s": 1}
    found = problems({**BASE, "detectors": [detector], "alarms": [alarm]}, tmp_path)
    assert set(found) == {"detectors[0].id", "alarms[0].detector"}
    assert "known: none" in found["alarms[0].detector"]


def test_an_array_item_of_another_type_is_named_by_index_and_type_a_private_ones_without_value(
    tmp_path: Path,
) -> None:
    # Before: the whole key, "expected an array of strings, got an array". snippet_devices holds device
    # ids (private, the reader's docstring): its item's kind is said, never its value.
    found = problems(
        {**BASE, "remote": {"allowed_commands": ["status", 2.5], "snippet_devices": ["w1", 991]}}, tmp_path
    )
    assert (
        found["remote.allowed_commands[1]"]
        == "remote.allowed_commands[1]: expected a string, got a number (2.5)"
    )
    assert (
        found["remote.snippet_devices[1]"] == "remote.snippet_devices[1]: expected a string, got an integer"
    )
