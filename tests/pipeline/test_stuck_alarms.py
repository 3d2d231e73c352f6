"""Settings that make an alarm stuck on, unending or absent are told before a session starts (new-user
review S4, M2): an unclearable hysteresis is refused naming its key, a limit alarming on every plausible
reading is warned about, where check-config, start and reload build the detectors. The shipped
configurations get none of it. (A configuration without alarm rules: tests/ops/test_nothing_alarms.py.)"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from agent.config.loader import config_from_bytes, parse_config, read_config_file
from agent.errors import InvalidConfigError
from agent.pipeline import build_detectors
from agent.preflight import preflight

REPO = Path(__file__).resolve().parents[2]
WARNINGS = "agent.pipeline.pipeline"


def config(detector: dict[str, Any], hysteresis: float | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"condition": "watched", "detector": detector["id"], "unit": "bpm"}
    if hysteresis is not None:
        rule["hysteresis"] = hysteresis
    return {
        "gateway": {"id": "gw-test", "site": "ward", "state_dir": "state"},
        "mqtt": {"url": "mqtt://127.0.0.1:1"},
        "outbox": {"path": "state/outbox.sqlite"},
        "devices": [{"id": "bed-1", "kind": "wearable", "transport": "simulator"}],
        "detectors": [{"stream": "vitals", **detector}],
        "alarms": [rule],
    }


def limit(channel: str, **params: float) -> dict[str, Any]:
    return {"id": f"{channel}-limit", "type": "limit", "channels": [channel], "params": params}


def refusal(tmp_path: Path, cfg: dict[str, Any]) -> str:
    with pytest.raises(InvalidConfigError) as caught:
        build_detectors(parse_config(cfg, base_dir=tmp_path))
    return str(caught.value)


def warnings(tmp_path: Path, cfg: dict[str, Any], caplog: pytest.LogCaptureFixture) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=WARNINGS):
        build_detectors(parse_config(cfg, base_dir=tmp_path))
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# -- a hysteresis no score can get under: refused ------------------------------------------------------


def test_a_fractional_hysteresis_of_one_or_more_is_refused_for_a_score_that_is_never_negative(
    tmp_path: Path,
) -> None:
    # The review's `hysteresis = 5` on robust_z: clear at 6 × (1 − 5) = −24, an |z| never gets there.
    robust = {"id": "hr-z", "type": "robust_z", "channels": ["hr"]}
    text = refusal(tmp_path, config(robust, 5))
    assert "alarms[0].hysteresis: 5 means the robust_z rule on hr-z could never end" in text
    assert "= -24 (threshold 6)" in text and "below 1" in text
    assert "alarms[0].hysteresis" in refusal(tmp_path, config(robust, 1))  # clears only at exactly 0
    build_detectors(parse_config(config(robust, 0.5), base_dir=tmp_path))  # clears at 3: fine


@pytest.mark.parametrize(
    "detector",
    [
        {"id": "new", "type": "new_extreme", "channels": ["hr"]},  # negative inside the old range
        {"id": "drop", "type": "spo2_desaturation", "channels": ["spo2"]},  # negative above the baseline
    ],
)
def test_a_signed_score_may_take_a_large_hysteresis(tmp_path: Path, detector: dict[str, Any]) -> None:
    build_detectors(parse_config(config(detector, 5), base_dir=tmp_path))


def test_a_limit_margin_beyond_the_channels_range_is_refused_with_its_clear_level(tmp_path: Path) -> None:
    # The review's tachycardia that never ended: above = 120, hysteresis = 200 clears at HR ≤ −80.
    text = refusal(tmp_path, config(limit("hr", above=120), 200))
    assert "alarms[0].hysteresis: 200 means the rule on hr-limit could never end" in text
    assert "at or below -80 (above = 120 minus 200)" in text and "accepts hr 1–350" in text
    # SpO2 below 92 with a margin of 10 clears at 102 %, beyond 100 %
    assert "at or above 102 (below = 92 plus 10)" in refusal(tmp_path, config(limit("spo2", below=92), 10))
    # both limits: clearing needs HR ≤ 70 and ≥ 90 at once
    both = refusal(tmp_path, config(limit("hr", above=120, below=40), 50))
    assert "at or below 70 (above = 120 minus 50) and at or above 90 (below = 40 plus 50)" in both
    for fine in (config(limit("hr", above=120), 5), config(limit("spo2", below=92), 3)):
        build_detectors(parse_config(fine, base_dir=tmp_path))


def test_check_config_and_a_reload_refuse_it(tmp_path: Path) -> None:
    # preflight is what check-config, run and every reload ask (agent.preflight)
    with pytest.raises(InvalidConfigError, match=r"alarms\[0\]\.hysteresis: 200"):
        preflight(parse_config(config(limit("hr", above=120), 200), base_dir=tmp_path))


# -- limits alarming on every plausible reading: warned -------------------------------------------------


@pytest.mark.parametrize(
    ("params", "told"),
    [
        # the review's HR limit in Hz
        (
            limit("hr", above=2.0),
            "detectors.hr-limit.params.above: it alarms on every heart rate above 2 bpm, the whole normal "
            "range (60–100 bpm): is it in Hz? (2 Hz = 120 bpm)",
        ),
        # the review's SpO2 below 101
        (
            limit("spo2", below=101),
            "detectors.spo2-limit.params.below: 101 is not below the highest spo2 the quality gate "
            "accepts (100): it alarms on every reading",
        ),
        (limit("spo2", below=100), "it alarms on every reading but 100 itself"),
        (limit("hr", above=0.5), "0.5 is not above the lowest hr the quality gate accepts (1)"),
        (limit("hr", below=120), "it alarms on every heart rate below 120 bpm, the whole normal range"),
        (limit("spo2", above=90), "it alarms on every SpO2 above 90 %"),
        (limit("temp", below=95), "is it in °F? (95 °F = 35.0 °C)"),
    ],
)
def test_a_limit_alarming_on_every_plausible_reading_is_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, params: dict[str, Any], told: str
) -> None:
    lines = warnings(tmp_path, config(params), caplog)
    assert len(lines) == 1 and told in lines[0], lines


@pytest.mark.parametrize(
    "params",
    [
        limit("hr", above=120, below=40),
        limit("hr", above=60),  # alarms from 61 on: not quite every normal rate
        limit("spo2", below=92),
        limit("temp", above=38, below=35),
        limit("skin_temp", above=40),
    ],
)
def test_a_clinical_limit_is_not_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, params: dict[str, Any]
) -> None:
    assert warnings(tmp_path, config(params), caplog) == []


# -- the shipped configurations: no refusal, no warning ----------------------------------------------------

SHIPPED = sorted(
    [
        *REPO.glob("examples/*.toml"),
        *REPO.glob("agent/defaults/*.toml"),
        *REPO.glob("tools/evaluate/configs/*.toml"),
    ]
)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_the_shipped_configurations_get_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, path: Path
) -> None:
    files = tmp_path / "etc"  # the TLS and password files ward-wearables.toml names under /etc/edge-agent
    files.mkdir()
    for name in ("ca.pem", "gw-ward3-01.crt", "gw-ward3-01.key", "mqtt.password"):
        (files / name).write_text("x\n")
        (files / name).chmod(0o600)
    text = read_config_file(path).replace(b"/etc/edge-agent/", f"{files}/".encode())
    with caplog.at_level(logging.WARNING, logger=WARNINGS):
        build_detectors(config_from_bytes(text, path))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


# -- a device's own span (`[[devices]] ranges`) replaces the built-in one for its channels -----------------


def pumps(vibration: dict[str, float], *spans: list[float] | None) -> dict[str, Any]:
    """Equipment devices (one per span; None: no `ranges`) and a vibration_rms limit on them."""
    devices: list[dict[str, Any]] = []
    for i, span in enumerate(spans):
        device: dict[str, Any] = {"id": f"pump-{i}", "kind": "equipment", "transport": "simulator"}
        if span is not None:
            device["ranges"] = {"vibration_rms": span}
        devices.append(device)
    detector = {"id": "vib", "type": "limit", "stream": "machine", "channels": ["vibration_rms"]}
    return {
        **config(limit("hr")),
        "devices": devices,
        "detectors": [{**detector, "params": vibration}],
        "alarms": [{"condition": "vibration_high", "detector": "vib"}],
    }


def test_a_limit_beyond_a_devices_span_is_warned_naming_its_ranges_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 0-50 mm/s transmitter: above = 60 can never alarm on it, below = 55 alarms on every reading."""
    [never] = warnings(tmp_path, pumps({"above": 60}, [0, 50]), caplog)
    assert never == (
        "detectors.vib.params.above: 60 is not below the highest vibration_rms the quality gate accepts"
        " (50, devices[0].ranges.vibration_rms): it can never alarm"
    )
    [always] = warnings(tmp_path, pumps({"below": 55}, [0, 50]), caplog)
    assert always.startswith(
        "detectors.vib.params.below: 55 is not below the highest vibration_rms the quality gate accepts"
        " (50, devices[0].ranges.vibration_rms): it alarms on every reading"
    )


def test_a_devices_wider_span_takes_away_the_built_in_ranges_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The built-in span (0-2000 mm/s) is nobody's here: the only device has its own, 0-5000."""
    assert warnings(tmp_path, pumps({"above": 3000}, [0, 5000]), caplog) == []
    [built_in] = warnings(tmp_path, pumps({"above": 3000}, [0, 5000], None), caplog)  # pump-1 has none
    assert built_in == (
        "detectors.vib.params.above: 3000 is not below the highest vibration_rms the quality gate accepts"
        " (2000): it can never alarm"
    )


def test_each_span_a_limit_meets_is_told_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lines = warnings(tmp_path, pumps({"above": 60}, [0, 50], None, [0, 50], [0, 40]), caplog)
    assert lines == [
        "detectors.vib.params.above: 60 is not below the highest vibration_rms the quality gate accepts"
        " (50, devices[0].ranges.vibration_rms, devices[2].ranges.vibration_rms): it can never alarm",
        "detectors.vib.params.above: 60 is not below the highest vibration_rms the quality gate accepts"
        " (40, devices[3].ranges.vibration_rms): it can never alarm",
    ]
