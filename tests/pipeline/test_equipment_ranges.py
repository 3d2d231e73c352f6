"""Equipment readings beyond a healthy machine's range are values, not sensor faults (equipment review F5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.config.loader import parse_config
from agent.events import AlarmEvent, Phase
from agent.pipeline import Pipeline, build_detectors
from agent.pipeline.quality import PHYSICAL_RANGES
from agent.readings import Reading

T0 = 1_800_000_000.0


def config(above: float = 2.8) -> dict[str, Any]:
    return {
        "gateway": {"id": "gw-test", "site": "plant"},
        "mqtt": {"url": "mqtt://127.0.0.1:1"},
        "outbox": {"path": "outbox.sqlite"},
        "devices": [{"id": "pump-1", "kind": "equipment", "transport": "simulator"}],
        "detectors": [
            {
                "id": "vibration-zone",
                "type": "limit",
                "stream": "machine",
                "channels": ["vibration_rms"],
                "params": {"above": above},
            },
        ],
        "alarms": [
            {
                "condition": "vibration_high",
                "detector": "vibration-zone",
                "priority": "low",
                "min_duration_s": 5,
                "clear_after_s": 10,
                "unit": "mm/s",
            }
        ],
    }


def run(tmp_path: Path, vibration: list[float]) -> list[AlarmEvent]:
    p = Pipeline(parse_config(config(), base_dir=tmp_path), lambda device, prefix="d": f"{prefix}-{device}")
    events: list[AlarmEvent] = []
    for t, value in enumerate(vibration):
        values = {"vibration_rms": value, "bearing_temp": 60.0, "motor_current": 40.0}
        events += p.ingest([Reading.single("pump-1/machine", values, T0 + t, float(t))])
    return events


def test_severe_vibration_alarms_instead_of_being_a_sensor_fault(tmp_path: Path) -> None:
    # A Modbus vibration_rms of 150 mm/s (a machine shaking itself apart) raised only a LOW signal_poor
    # "out of range" until 2026-11-30: the gate's range ended at 100 mm/s.
    events = run(tmp_path, [150.0] * 30)
    assert [(e.condition, e.phase) for e in events] == [("vibration_high", Phase.START)]
    assert events[0].value == 150.0


def test_an_active_alarm_going_higher_is_still_judged(tmp_path: Path) -> None:
    # 5 mm/s starts vibration_high; at 150 mm/s it was held "not judged" and signal_poor started.
    events = run(tmp_path, [5.0] * 20 + [150.0] * 30 + [1.0] * 20)
    assert [(e.condition, e.phase) for e in events] == [
        ("vibration_high", Phase.START),
        ("vibration_high", Phase.END),
    ]
    assert events[1].explanation.text.startswith("peak vibration_rms 150")


def test_an_adc_error_word_is_still_a_sensor_fault(tmp_path: Path) -> None:
    events = run(tmp_path, [65535.0] * 30)
    assert {e.condition for e in events} == {"signal_poor"}


@pytest.mark.parametrize(
    ("channel", "beyond"), [("vibration_rms", 150.0), ("bearing_temp", 250.0), ("motor_current", 3000.0)]
)
def test_what_a_failing_machine_shows_is_inside_the_equipment_ranges(channel: str, beyond: float) -> None:
    low, high = PHYSICAL_RANGES[channel]
    assert low <= 0.0 and beyond < high


def test_a_limit_the_gate_would_never_let_through_is_told(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # told where check-config, run and a reload build the detectors, named by its key (a warning: a
    # limit far out of reach is also how a configuration switches a rule off)
    build_detectors(parse_config(config(above=150.0), base_dir=tmp_path))
    assert "never alarm" not in caplog.text
    build_detectors(parse_config(config(above=5000.0), base_dir=tmp_path))
    assert "detectors.vibration-zone.params.above: 5000 is not below the highest vibration_rms" in caplog.text
