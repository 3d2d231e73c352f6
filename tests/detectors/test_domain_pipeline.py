"""The domain detectors inside the daemon's pipeline: built from a config, fed readings, raising alarms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from agent.config import parse_config
from agent.events import AlarmEvent, Phase
from agent.pipeline import Pipeline
from agent.readings import Reading

T0 = 1_800_000_000.0
G = 9.80665
RATE = 2048.0
BLOCK = 256


def pipeline(tmp_path: Path, detector: dict[str, Any], alarm: dict[str, Any]) -> Pipeline:
    config = {
        "gateway": {"id": "gw", "site": "s"},
        "mqtt": {"url": "mqtt://127.0.0.1:1883"},
        "outbox": {"path": "outbox.sqlite"},
        "devices": [{"id": "dev", "kind": "equipment", "transport": "simulator"}],
        "detectors": [detector],
        "alarms": [alarm],
    }
    return Pipeline(parse_config(config, base_dir=tmp_path), lambda device: f"p-{device}")


def starts(events: list[AlarmEvent]) -> list[AlarmEvent]:
    return [e for e in events if e.phase is Phase.START]


def test_vibration_zone_c_raises_an_alarm_with_velocity_against_the_iso_boundary(tmp_path: Path) -> None:
    p = pipeline(
        tmp_path,
        {
            "id": "vib",
            "type": "vibration",
            "stream": "accel",
            "channels": ["x", "y", "z"],
            "rate_hz": RATE,
            "params": {"machine_class": "II", "window_s": 1.0, "hop_s": 1.0},
        },
        {"condition": "vibration_zone_c", "detector": "vib", "min_duration_s": 3, "clear_after_s": 3},
    )
    rng = np.random.default_rng(1)
    readings = []
    for k in range(int(40 * RATE / BLOCK)):
        t = (k * BLOCK + np.arange(BLOCK)) / RATE
        velocity = 4.0 if 15.0 <= t[0] < 30.0 else 1.0  # mm/s RMS: zone C, else zone A (class II)
        x = velocity * np.sqrt(2) * 1e-3 * 2 * np.pi * 50.0 * np.sin(2 * np.pi * 50.0 * t) / G
        values = np.stack([x, 0.3 * x, rng.normal(0, 1e-4, BLOCK)], axis=-1)
        readings.append(Reading("dev/accel", ("x", "y", "z"), values, T0 + t[0], t[0], 1.0 / RATE))
    events = p.ingest(readings)
    started = starts(events)
    assert len(started) == 1
    alarm = started[0]
    assert 15.0 + 3.0 <= alarm.detection_time - T0 <= 15.0 + 6.0
    assert abs(alarm.value - 4.0) < 0.2  # velocity RMS in mm/s...
    assert alarm.threshold == 2.8  # ...against the class II zone B/C boundary
    assert alarm.explanation.top_channels[0][0] == "x"  # the axis carrying the vibration
    assert any(e.phase is Phase.END for e in events)


def test_af_on_the_rr_stream_alarms_after_onset_and_not_before(tmp_path: Path) -> None:
    p = pipeline(
        tmp_path,
        {"id": "af", "type": "af", "stream": "rr", "channels": ["rr"], "params": {"window_beats": 16}},
        {"condition": "atrial_fibrillation", "detector": "af", "min_duration_s": 10, "clear_after_s": 20},
    )
    rng = np.random.default_rng(2)
    k = np.arange(300)
    sinus = 0.8 * (1 + 0.02 * np.sin(2 * np.pi * k / 4.3)) + rng.normal(0, 0.006, 300)
    rr = np.concatenate([sinus, rng.gamma(25.0, 0.7 / 25.0, 200)])
    beats = T0 + np.cumsum(rr)
    readings = [
        Reading.single("dev/rr", {"rr": float(v)}, float(t), float(t - T0))
        for v, t in zip(rr, beats, strict=True)
    ]
    started = starts(p.ingest(readings))
    onset = beats[300]
    assert len(started) == 1
    assert onset + 10.0 <= started[0].detection_time <= onset + 20.0
