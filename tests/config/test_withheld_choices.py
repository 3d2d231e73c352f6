"""A refused config file's problems as they leave the gateway or enter its log (`without_values`): the
file's values are withheld, the key's own allowed values are not, and an invalid transport is one
problem, not a second one naming a transport "None" (review of the fixes, 2026-11-30)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config.loader import config_from_bytes
from agent.config.withheld import WITHHELD, without_values
from agent.errors import ConfigError, InvalidConfigError

CONFIG = """
[gateway]
id = "gw"
site = "lab"

[mqtt]
url = "mqtt://127.0.0.1:1883"

[outbox]
path = "outbox.sqlite"

[[devices]]
id = "MRN-0055555"
kind = "wearable"
transport = "{transport}"
[devices.simulator]
seed = 1

[[devices]]
id = "wearable-2"
kind = "wearable"
transport = "simulator"
"""


def problems(text: str, tmp_path: Path) -> list[ConfigError]:
    with pytest.raises(InvalidConfigError) as refused:
        config_from_bytes(text.encode(), tmp_path / "agent.toml")
    return refused.value.errors


def test_a_misspelt_transport_is_one_problem_and_its_choices_are_shown(tmp_path: Path) -> None:
    text = CONFIG.format(transport="simulatr")
    found = problems(text, tmp_path)
    assert [p.path for p in found] == ["devices[0].transport"]  # no "simulator: ... transport is None"
    assert without_values(found, text.encode()) == [
        f'devices[0].transport: expected one of simulator, serial, ble, replay, modbus, got "{WITHHELD}"'
    ]


def test_a_value_the_file_holds_is_withheld_unless_it_is_one_of_the_keys_choices(tmp_path: Path) -> None:
    """ "simulator" is another device's transport, and one of the allowed values: it is shown; the bad
    value, and the file's other strings, are not. A transport is a word of the code, so it is shown in
    any problem (test_withheld_detector_words)."""
    text = CONFIG.format(transport="MRN-0055555 Doe")
    lines = without_values(problems(text, tmp_path), text.encode())
    assert lines == [
        f'devices[0].transport: expected one of simulator, serial, ble, replay, modbus, got "{WITHHELD}"'
    ]
    other = ConfigError("devices[0].patient", "no such patient: simulator MRN-0055555")
    assert without_values([other], text.encode()) == [
        f"devices[0].patient: no such patient: simulator {WITHHELD}"
    ]
