"""A refused reload's lines keep what the operator needs to fix a detector (review of 2026-12-01, "the
refused-reload message hides the detector type"): the detector's type, its id, its channel and the
rule's words stay, as every alarm event already carries them off the gateway; a device id, a patient
and a path stay withheld, also when one of them equals a channel's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config.loader import config_from_bytes
from agent.config.withheld import WITHHELD, without_values
from agent.errors import ConfigError, InvalidConfigError
from agent.pipeline.pipeline import build_detectors

CONFIG = """
[gateway]
id = "gw"
site = "lab"

[mqtt]
url = "mqtt://127.0.0.1:1883"

[outbox]
path = "outbox.sqlite"

[[devices]]
id = "{device}"
kind = "wearable"
transport = "simulator"
patient = "MRN-0055555"
[devices.simulator]
seed = 1

[[detectors]]
id = "spo2-drop"
type = "spo2_desaturation"
stream = "vitals"
channels = ["spo2", "hr"]

[[detectors]]
id = "hr-high"
type = "limit"
stream = "vitals"
channels = ["hr"]
params = {{ above = 120 }}

[[detectors]]
id = "hr-low"
type = "limit"
stream = "vitals"
channels = ["hr"]
params = {{ below = 40, blow = 3 }}

[[alarms]]
condition = "tachycardia"
detector = "hr-high"
hysteresis = 200
"""


def refused_lines(device: str, tmp_path: Path) -> list[str]:
    text = CONFIG.format(device=device)
    config = config_from_bytes(text.encode(), tmp_path / "agent.toml")
    with pytest.raises(InvalidConfigError) as refused:
        build_detectors(config)
    return without_values(refused.value.errors, text.encode())


def test_a_detector_problem_keeps_the_detector_type_id_and_channel(tmp_path: Path) -> None:
    lines = refused_lines("Doe_Jane-bed-9", tmp_path)
    takes_one = "a spo2_desaturation detector takes exactly 1 channel(s), got 2"
    assert f"detectors.spo2-drop.channels: {takes_one}" in lines
    assert (
        "detectors.hr-low.params.blow: unknown parameter for a limit detector (known: above, below, hop_s, "
        "window_s)" in lines
    )
    [stuck] = [line for line in lines if line.startswith("alarms[0].hysteresis")]
    assert "the rule on hr-high could never end: it clears only on hr readings" in stuck
    assert WITHHELD not in "".join(lines)
    assert not [line for line in lines if "Doe_Jane" in line or "MRN-0055555" in line]


def test_a_device_id_that_equals_a_channel_name_is_still_withheld(tmp_path: Path) -> None:
    """ "hr" is both the device's id (free text, private) and a channel: it is withheld everywhere, as a
    whole word (so also from the id "hr-high"), while the detector's type stays."""
    [stuck] = [line for line in refused_lines("hr", tmp_path) if line.startswith("alarms[0].hysteresis")]
    assert f"could never end: it clears only on {WITHHELD} readings" in stuck
    assert f"the quality gate accepts {WITHHELD} 1–350; for a limit," in stuck


def test_a_misspelt_detector_type_is_shown_with_every_known_type(tmp_path: Path) -> None:
    text = CONFIG.format(device="wearable-1").replace('"spo2_desaturation"', '"spo2_desat"')
    config = config_from_bytes(text.encode(), tmp_path / "agent.toml")
    with pytest.raises(InvalidConfigError) as refused:
        build_detectors(config)
    [line] = [line for line in without_values(refused.value.errors, text.encode()) if ".type:" in line]
    assert line.startswith('detectors.spo2-drop.type: unknown detector type "spo2_desat" (known: af, ')
    assert ", limit, " in line and WITHHELD not in line


def test_the_code_words_are_kept_wherever_they_stand() -> None:
    text = CONFIG.format(device="wearable-1").encode()
    other = ConfigError("devices[0].patient", "no such patient: simulator wearable-1 MRN-0055555 limit")
    assert without_values([other], text) == [
        f"devices[0].patient: no such patient: simulator {WITHHELD} {WITHHELD} limit"
    ]
