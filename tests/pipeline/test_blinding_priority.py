"""A technical alarm that keeps an open physiological alarm from being judged takes its priority.

Clinical review of 2026-11-30: with an active HIGH spo2_low, motion made the signal unusable; the
episode was held (rightly: no verdict), but all that told the ward so was a LOW "signal unusable".
Now such a technical START carries the highest priority of the open episodes it blinds, names them,
and keeps that priority to its END; with nothing open it keeps its own. Through the real Pipeline.
"""

from __future__ import annotations

from pathlib import Path

from agent.config import parse_config
from agent.events import AlarmEvent, Phase, Priority
from agent.pipeline import Pipeline
from agent.readings import Quality, Reading

T0 = 1_800_000_000.0
CONFIG = {
    "gateway": {"id": "gw", "site": "s"},
    "mqtt": {"url": "mqtt://127.0.0.1:1883"},
    "outbox": {"path": "outbox.sqlite"},
    "devices": [{"id": "bed-1", "kind": "wearable", "transport": "simulator"}],
    "detectors": [
        {
            "id": "spo2-low",
            "type": "limit",
            "stream": "vitals",
            "channels": ["spo2"],
            "params": {"below": 90},
        },
    ],
    "alarms": [
        {
            "condition": "spo2_low",
            "detector": "spo2-low",
            "priority": "high",
            "min_duration_s": 10,
            "unit": "%",
        }
    ],
}


def run(tmp_path: Path, spo2: dict[range, float], motion: range) -> list[AlarmEvent]:
    """One reading a second for 120 s: SpO2 per range (97 elsewhere), MOTION flagged in `motion`."""
    p = Pipeline(parse_config(CONFIG, base_dir=tmp_path), lambda device, prefix="d": f"{prefix}-{device}")
    events: list[AlarmEvent] = []
    for t in range(120):
        value = next((v for span, v in spo2.items() if t in span), 97.0)
        quality = Quality.MOTION if t in motion else Quality.OK
        reading = Reading.single("bed-1/vitals", {"spo2": value, "hr": 80.0}, T0 + t, float(t), quality)
        events += p.ingest([reading])
    return events


def of(events: list[AlarmEvent], condition: str) -> list[AlarmEvent]:
    return [e for e in events if e.condition == condition]


def test_signal_poor_over_an_active_high_alarm_is_high_and_names_it(tmp_path: Path) -> None:
    events = run(tmp_path, {range(0, 90): 85.0}, motion=range(40, 70))
    start, end = of(events, "spo2_low")
    poor_start, poor_end = of(events, "signal_poor")
    assert start.phase is Phase.START and start.detection_time < poor_start.detection_time
    assert poor_start.priority is poor_end.priority is Priority.HIGH
    assert "open and not judged meanwhile: spo2_low (high)" in poor_start.explanation.text
    assert poor_end.phase is Phase.END and end.phase is Phase.END  # the episode was held, then ended
    assert poor_end.end_time is not None and end.end_time is not None and poor_end.end_time < end.end_time


def test_signal_poor_with_nothing_open_keeps_its_own_priority(tmp_path: Path) -> None:
    events = run(tmp_path, {}, motion=range(40, 70))
    assert of(events, "spo2_low") == []
    poor_start, poor_end = of(events, "signal_poor")
    assert poor_start.priority is poor_end.priority is Priority.LOW
    assert "not judged" not in poor_start.explanation.text
    # the channel is named; motion (the device's flag, passing when the patient rests) stays LOW even
    # though spo2_low reads it: an HR 0 in contact, which does not pass, is MEDIUM (test_ward_example_rules)
    assert poor_start.explanation.text.startswith("signal unusable on spo2: ")
    assert "not monitored" not in poor_start.explanation.text


def test_no_value_on_one_channel_does_not_blind_a_rule_on_another(tmp_path: Path) -> None:
    """Review of 2026-11-30: a thermometer gone quiet (NaN temp: 'no value') made signal_poor HIGH and
    said a tachycardia on HR was 'not judged' while HR verdicts went on. Only episodes without a verdict
    since the technical condition began are named and lend their priority."""
    config = {
        **CONFIG,
        "detectors": [
            {
                "id": "hr-high",
                "type": "limit",
                "stream": "vitals",
                "channels": ["hr"],
                "params": {"above": 120},
            },
            {
                "id": "temp-high",
                "type": "limit",
                "stream": "vitals",
                "channels": ["temp"],
                "params": {"above": 39},
            },
        ],
        "alarms": [
            {"condition": "tachycardia", "detector": "hr-high", "priority": "high", "min_duration_s": 10},
            {"condition": "fever", "detector": "temp-high", "priority": "low", "min_duration_s": 10},
        ],
    }
    p = Pipeline(parse_config(config, base_dir=tmp_path), lambda device, prefix="d": f"{prefix}-{device}")
    events: list[AlarmEvent] = []
    for t in range(120):
        temp = 37.0 if t < 40 else float("nan")
        reading = Reading.single("bed-1/vitals", {"hr": 150.0, "temp": temp}, T0 + t, float(t))
        events += p.ingest([reading])
    (tachycardia,) = of(events, "tachycardia")
    (poor,) = of(events, "signal_poor")
    assert tachycardia.detection_time < poor.detection_time
    assert poor.priority is Priority.LOW and "not judged" not in poor.explanation.text
