"""The demo receiver's lines: readable alarm and heartbeat summaries from the documented payloads."""

from __future__ import annotations

from dataclasses import replace

from agent.events import AlarmEvent, AlarmKind, DeviceHealth, Explanation, Heartbeat, Phase, Priority
from agent.receiver import format_alarm, format_heartbeat

TACHYCARDIA = AlarmEvent(
    id="0190f1c2-0000-7000-8000-000000000000",
    seq=0,
    phase=Phase.START,
    gateway="gw",
    device="d-abc",
    stream="vitals",
    condition="tachycardia",
    priority=Priority.MEDIUM,
    kind=AlarmKind.PHYSIOLOGICAL,
    onset_time=1_700_000_000.0,
    detection_time=1_700_000_010.0,
    value=142.0,
    threshold=120.0,
    unit="bpm",
    explanation=Explanation(
        "hr-high", 22.0, 0.0, (("hr", 1.0),), text="hr 142 bpm above limit 120 bpm for 10 s"
    ),
)


def test_alarm_line_has_phase_priority_condition_device_measure_and_why() -> None:
    line = format_alarm(TACHYCARDIA.to_payload(), received=1_700_000_010.5)
    for part in (
        "START",
        "MEDIUM",
        "tachycardia",
        "d-abc/vitals",
        "142 bpm vs 120 bpm",
        "above limit 120 bpm",
    ):
        assert part in line
    assert "[event" not in line  # delivered on time: one clock
    late = format_alarm(TACHYCARDIA.to_payload(), received=1_700_003_600.0)
    assert "[event" in late  # delivered an hour late: both clocks shown


def test_heartbeat_line() -> None:
    beat = Heartbeat(
        "gw",
        1_700_000_000.0,
        61.0,
        3,
        (DeviceHealth("d-abc", None, 1.0, 0, 0, True),),
        2,
        4.5,
        1,
        cpu_percent=3.0,
        rss_bytes=50 * 2**20,
    )
    line = format_heartbeat(beat.to_payload())
    assert "session 3" in line and "d-abc 1.0/s" in line and "outbox 2" in line and "50 MB" in line
    assert "REFUSED" not in line
    refused = format_heartbeat({**beat.to_payload(), "outbox_refused": 2})
    assert "outbox 2 (2 REFUSED by the broker)" in refused


def test_a_technical_alarm_shows_its_sentence_not_its_trigger_score() -> None:
    event = replace(
        TACHYCARDIA,
        condition="sensor_off",
        kind=AlarmKind.TECHNICAL,
        value=1.0,
        threshold=0.5,
        unit="",
        explanation=Explanation("quality", 1.0, 0.5, (), text="no sensor contact for 10 s"),
    )
    line = format_alarm(event.to_payload(), received=1_700_000_010.5)
    assert "sensor_off" in line and "no sensor contact for 10 s" in line
    assert "1 vs 0.5" not in line
