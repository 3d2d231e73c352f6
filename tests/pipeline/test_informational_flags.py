"""LOW_BATTERY and GAP inform, they do not gate; the physical ranges keep what a patient getting worse shows.

The clinical review of 2026-11-30 (findings 1 and 2), through the real Pipeline: from 15 % battery (BLE
sets LOW_BATTERY on every reading) nothing physiological could alarm; a GAP every few readings kept a
tachycardia from ever confirming; HR 18 or SpO2 45 % were "sensor faults" and could not alarm.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from agent.config import parse_config
from agent.events import AlarmEvent, AlarmKind, Phase
from agent.pipeline import Pipeline
from agent.pipeline.quality import QualityGate
from agent.readings import INVALIDATING, Quality, Reading

T0 = 1_800_000_000.0
CONFIG = {
    "gateway": {"id": "gw", "site": "s"},
    "mqtt": {"url": "mqtt://127.0.0.1:1883"},
    "outbox": {"path": "outbox.sqlite"},
    "devices": [{"id": "bed-1", "kind": "wearable", "transport": "simulator"}],
    "detectors": [
        {"id": "hr-high", "type": "limit", "stream": "vitals", "channels": ["hr"], "params": {"above": 120}},
        {"id": "hr-low", "type": "limit", "stream": "vitals", "channels": ["hr"], "params": {"below": 40}},
        {
            "id": "spo2-low",
            "type": "limit",
            "stream": "vitals",
            "channels": ["spo2"],
            "params": {"below": 90},
        },
    ],
    "alarms": [  # the ward example's rules as the review found them (1-of-1 confirmation)
        {
            "condition": "tachycardia",
            "detector": "hr-high",
            "min_duration_s": 10,
            "hysteresis": 5,
            "unit": "bpm",
        },
        {
            "condition": "bradycardia",
            "detector": "hr-low",
            "min_duration_s": 10,
            "hysteresis": 3,
            "unit": "bpm",
        },
        {
            "condition": "spo2_low",
            "detector": "spo2-low",
            "priority": "high",
            "min_duration_s": 10,
            "unit": "%",
        },
    ],
}


def pseudonym(device: str, prefix: str = "d") -> str:
    return f"{prefix}-{device}"


def pipeline(tmp_path: Path) -> Pipeline:
    return Pipeline(parse_config(CONFIG, base_dir=tmp_path), pseudonym)


def vitals(
    t: float, hr: float, spo2: float = 97.0, q: Quality = Quality.OK, device: str = "bed-1"
) -> Reading:
    return Reading.single(f"{device}/vitals", {"hr": hr, "spo2": spo2, "skin_temp": 33.5}, T0 + t, t, q)


def run(tmp_path: Path, until: int, reading: Callable[[int], Reading]) -> list[AlarmEvent]:
    p = pipeline(tmp_path)
    events: list[AlarmEvent] = []
    for t in range(until):
        events += p.ingest([reading(t)])
    return events


def phys(events: list[AlarmEvent], condition: str) -> list[tuple[Phase, float]]:
    """(phase, time) of one condition's events: detection for START, end for END."""
    return [
        (e.phase, (e.end_time if e.phase is Phase.END and e.end_time is not None else e.detection_time) - T0)
        for e in events
        if e.condition == condition and e.kind is AlarmKind.PHYSIOLOGICAL
    ]


@pytest.mark.parametrize(
    "flag", [Quality.LOW_BATTERY, Quality.GAP, Quality.GAP | Quality.LOW_BATTERY], ids=Quality.describe
)
def test_informational_flags_keep_the_values_and_the_flags(flag: Quality) -> None:
    gate = QualityGate(("hr", "spo2"))
    block = Reading("d/vitals", ("hr", "spo2"), np.array([[72.0, 98.0], [0.0, 97.0]]), 0.0, 0.0, 1.0, flag)
    for values, quality, bad in (gate.screen(block), *zip(*gate.screen_many([block] * 4), strict=True)):
        assert (
            values[0].tolist() == [72, 98] and values[1, 1] == 97 and np.isnan(values[1, 0])
        )  # HR 0: no value
        assert quality == flag | Quality.OUT_OF_RANGE and bad == 1


@pytest.mark.parametrize("flag", list(INVALIDATING), ids=Quality.describe)
def test_invalidating_flags_still_blank_the_block(flag: Quality) -> None:
    gate = QualityGate(("hr",))
    block = Reading(
        "d/vitals", ("hr",), np.array([[72.0], [73.0]]), 0.0, 0.0, 1.0, flag | Quality.LOW_BATTERY
    )
    for values, quality, bad in (gate.screen(block), *zip(*gate.screen_many([block] * 4), strict=True)):
        assert np.isnan(values).all() and quality == flag | Quality.LOW_BATTERY and bad == 2


def test_low_battery_from_t100_keeps_the_tachycardia_and_lets_it_end_on_recovery(tmp_path: Path) -> None:
    """10a: HR 150 from t=60, LOW_BATTERY on every reading from t=100, HR back to 80 at t=400."""
    events = run(
        tmp_path,
        500,
        lambda t: vitals(t, 150 if 60 <= t < 400 else 80, q=Quality.LOW_BATTERY if t >= 100 else Quality.OK),
    )
    assert phys(events, "tachycardia") == [(Phase.START, 70), (Phase.END, 400)]  # its END: clear hops counted
    battery = [e for e in events if e.condition == "battery_low"]
    assert [e.phase for e in battery] == [Phase.START] and battery[0].kind is AlarmKind.TECHNICAL
    end = [e for e in events if e.condition == "tachycardia"][-1]
    assert end.explanation.signal_quality == "low_battery"  # the flag is still told


def test_low_battery_throughout_a_bradycardia_alarms(tmp_path: Path) -> None:
    """10b: LOW_BATTERY on every reading, HR 35 from t=60."""
    events = run(tmp_path, 200, lambda t: vitals(t, 35 if t >= 60 else 80, q=Quality.LOW_BATTERY))
    assert phys(events, "bradycardia") == [(Phase.START, 70)]


def test_a_gap_every_fifth_reading_does_not_hold_back_a_tachycardia(tmp_path: Path) -> None:
    """10c: a flaky BLE link reconnecting: GAP on every 5th reading, HR 150 from t=60."""
    events = run(
        tmp_path,
        200,
        lambda t: vitals(t, 150 if t >= 60 else 80, q=Quality.GAP if t % 5 == 0 else Quality.OK),
    )
    assert phys(events, "tachycardia") == [(Phase.START, 70)]


def test_low_battery_on_many_streams_at_once_alarms_as_one_by_one(tmp_path: Path) -> None:
    """The batched path (`screen_many`, the round append) treats the flags as `screen` does."""
    cfg = dict(
        CONFIG, devices=[{"id": f"bed-{i}", "kind": "wearable", "transport": "simulator"} for i in range(60)]
    )
    p = Pipeline(parse_config(cfg, base_dir=tmp_path), pseudonym)
    events: list[AlarmEvent] = []
    for t in range(120):
        flags = [Quality.LOW_BATTERY, Quality.GAP, Quality.LOW_BATTERY | Quality.GAP, Quality.MOTION]
        events += p.ingest(
            [vitals(t, 35 if t >= 60 else 80, q=flags[i % 4], device=f"bed-{i}") for i in range(60)]
        )
    started = {e.device for e in events if e.condition == "bradycardia" and e.phase is Phase.START}
    assert started == {f"d-bed-{i}" for i in range(60) if i % 4 != 3}  # MOTION still gates


@pytest.mark.parametrize(
    ("hr", "spo2", "condition"),
    [
        (18.0, 97.0, "bradycardia"),
        (5.0, 97.0, "bradycardia"),
        (310.0, 97.0, "tachycardia"),
        (80.0, 45.0, "spo2_low"),
    ],
)
def test_a_patient_far_past_the_limit_alarms(tmp_path: Path, hr: float, spo2: float, condition: str) -> None:
    """9a/9b/9c: HR 18, HR 5, HR 310 and SpO2 45 % are measurements, not sensor faults."""
    values, quality, bad = QualityGate(("hr", "spo2")).screen(vitals(0, hr, spo2))
    assert values.tolist() == [[hr, spo2]] and quality is Quality.OK and bad == 0
    events = run(tmp_path, 100, lambda t: vitals(t, hr if t >= 30 else 80, spo2 if t >= 30 else 97))
    assert phys(events, condition) == [(Phase.START, 40)]
    assert not [e for e in events if e.condition == "signal_poor"]


def test_hr_zero_without_a_contact_flag_is_no_value_not_a_bradycardia(tmp_path: Path) -> None:
    """A strap without the optional sensor-contact bits sends bpm 0 for "no value": no bradycardia, and the
    lost signal is reported as signal_poor."""
    events = run(tmp_path, 100, lambda t: vitals(t, 0 if t >= 30 else 80))
    assert phys(events, "bradycardia") == []
    assert [e.phase for e in events if e.condition == "signal_poor"] == [Phase.START]


def test_an_oximeters_no_value_does_not_hide_a_tachycardia_on_a_good_hr(tmp_path: Path) -> None:
    """SpO2 0 ("no value") is gated for the spo2 rules only: the HR rules keep their verdicts, so a
    tachycardia on a valid HR starts (the gate's OUT_OF_RANGE used to void the whole hop)."""
    events = run(tmp_path, 100, lambda t: vitals(t, 150 if t >= 30 else 80, 0 if t >= 20 else 97))
    assert phys(events, "tachycardia") == [(Phase.START, 40)]
    assert phys(events, "spo2_low") == []
    assert [e.phase for e in events if e.condition == "signal_poor"] == [Phase.START]
