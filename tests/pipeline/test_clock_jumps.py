"""The gateway's wall clock steps while the agent runs (NTP's first sync on a Pi without an RTC, an
admin): the real `Pipeline` is fed readings stamped with a wall clock that steps while the monotonic
clock runs on, as the sources stamp them, and its gateway clocks are the same pair.

A forward step must not look like every device going silent (a dropout alarm, timers run out); a
backward step must not hold timers back for as long as the step. Both paths through a stream are
covered: a few devices (reading by reading) and 60 (the rounds fast path of `ingest_many`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.config import parse_config
from agent.events import AlarmEvent, AlarmKind, Phase
from agent.pipeline import Pipeline
from agent.readings import Quality, Reading
from agent.sources.serial_frames import FrameReadings
from firmware_bridge import Frame
from firmware_bridge.frame_messages import ChannelSpec, DataBlock, Hello, SampleType

DAY_S = 86_400.0
NOW = 1_764_000_000.0  # late 2025: the clock NTP sets
SAVED = NOW - 3 * DAY_S  # fake-hwclock's last saved time, three days behind
EPOCH = 1_000.0  # no saved time at all: the Pi boots in 1970

CONFIG: dict[str, Any] = {
    "gateway": {"id": "gw", "site": "s"},
    "mqtt": {"url": "mqtt://127.0.0.1:1883"},
    "outbox": {"path": "outbox.sqlite"},
    "devices": [{"id": "bed-0", "kind": "wearable", "transport": "simulator"}],
    "detectors": [
        {"id": "hr-high", "type": "limit", "stream": "vitals", "channels": ["hr"], "params": {"above": 120}},
        {"id": "hr-missing", "type": "dropout", "stream": "vitals", "channels": ["hr"]},
    ],
    "alarms": [
        {
            "condition": "tachycardia",
            "detector": "hr-high",
            "min_duration_s": 10,
            "clear_after_s": 30,
            "hysteresis": 5,
            "cooldown_s": 60,
            "unit": "bpm",
        },
        {"condition": "vitals_missing", "detector": "hr-missing", "kind": "technical", "min_duration_s": 5},
    ],
}


class Clocks:
    """The gateway's clocks: monotonic runs on, the wall clock is monotonic + an offset that steps."""

    def __init__(self, wall: float) -> None:
        self.mono = 500.0
        self.offset = wall - self.mono

    def wall(self) -> float:
        return self.mono + self.offset

    def monotonic(self) -> float:
        return self.mono

    def step(self, seconds: float) -> None:
        self.offset += seconds


class Ward:
    """`devices` wearables sending 1 Hz vitals, stamped on arrival as the BLE and serial sources do;
    one pipeline turn per second."""

    def __init__(self, tmp_path: Path, devices: int, wall: float) -> None:
        self.clocks = Clocks(wall)
        self.devices = devices
        self.pipeline = Pipeline(
            parse_config(CONFIG, base_dir=tmp_path),
            str,
            clock=self.clocks.wall,
            monotonic=self.clocks.monotonic,
        )

    def run(
        self,
        seconds: int,
        hr: Callable[[int], float] = lambda device: 75.0,
        quality: Quality = Quality.OK,
    ) -> list[AlarmEvent]:
        events: list[AlarmEvent] = []
        for _ in range(seconds):
            self.clocks.mono += 1.0
            wall, mono = self.clocks.wall(), self.clocks.mono
            readings = [
                Reading.single(
                    f"bed-{d}/vitals", {"hr": hr(d)}, wall, mono, quality if d == 0 else Quality.OK
                )
                for d in range(self.devices)
            ]
            events += self.pipeline.ingest(readings)
        return events


def racing(device: int) -> float:
    """Bed 0 at 150 bpm (tachycardia), the others normal."""
    return 150.0 if device == 0 else 75.0


def phases(events: list[AlarmEvent]) -> list[tuple[str, str, str]]:
    return [(e.device, e.condition, e.phase.value) for e in events]


PATHS = pytest.mark.parametrize("devices", [3, 60], ids=["reading-by-reading", "rounds"])


@PATHS
@pytest.mark.parametrize(
    ("wall", "step"),
    [(SAVED, 3 * DAY_S), (EPOCH, NOW - EPOCH), (NOW, -3_600.0)],
    ids=["fake-hwclock+3d", "1970+56y", "back-1h"],
)
def test_a_clock_step_is_not_a_silence_of_every_device(
    tmp_path: Path, devices: int, wall: float, step: float
) -> None:
    """(Back-1h passed before the fix too: a window takes samples stamped earlier than the last one.)"""
    ward = Ward(tmp_path, devices, wall)
    assert ward.run(60) == []
    ward.clocks.step(step)
    assert ward.run(90) == []  # no vitals_missing: the windows did not fill with the step as missing data
    assert ward.pipeline.clock_steps() == devices  # and every stream noticed it


@PATHS
def test_readings_after_a_backward_step_are_judged(tmp_path: Path, devices: int) -> None:
    """Right before the fix too: nothing drops readings whose wall time goes back; a tachycardia that
    begins after the step alarms after its 10 s."""
    ward = Ward(tmp_path, devices, NOW)
    ward.run(30)
    ward.clocks.step(-3_600.0)
    assert ward.run(30) == []
    (start,) = ward.run(12, racing)
    assert start.phase is Phase.START and start.detection_time == pytest.approx(NOW - 3_600.0 + 71, abs=1.5)


@PATHS
def test_a_forward_step_does_not_mature_a_pending_alarm(tmp_path: Path, devices: int) -> None:
    """8 s of tachycardia is under the 10 s minimum duration, with 3 days of clock step inside."""
    ward = Ward(tmp_path, devices, SAVED)
    ward.run(30)
    events = ward.run(4, racing)
    ward.clocks.step(3 * DAY_S)
    events += ward.run(4, racing) + ward.run(60)
    assert events == []


@PATHS
def test_a_forward_step_does_not_end_a_clearing_alarm(tmp_path: Path, devices: int) -> None:
    ward = Ward(tmp_path, devices, SAVED)
    ward.run(30)
    events = ward.run(20, racing)
    (start,) = events
    assert start.phase is Phase.START and start.detection_time == pytest.approx(SAVED + 40, abs=1.5)
    events += ward.run(10)  # clearing: 30 s needed
    ward.clocks.step(3 * DAY_S)
    events += ward.run(10)
    assert events == [start]  # 20 s clear: not over
    events += ward.run(5, racing)  # abnormal again: the same episode goes on
    clear_from = ward.clocks.wall()
    events += ward.run(40)
    assert phases(events) == [("bed-0", "tachycardia", "start"), ("bed-0", "tachycardia", "end")]
    end = events[-1]
    assert end.id == start.id
    # Times are the wall clock at the time; the episode's onset is told in the clock the gateway has now.
    assert end.end_time is not None and end.end_time == pytest.approx(clear_from + 1, abs=1.5)
    assert end.onset_time == pytest.approx(start.onset_time + 3 * DAY_S)
    assert end.end_time - end.onset_time == pytest.approx(20 + 10 + 10 + 5, abs=2)
    assert "ended after 4" in end.explanation.text  # 45 s or so, not three days


@PATHS
def test_a_backward_step_does_not_hold_a_pending_alarm_back(tmp_path: Path, devices: int) -> None:
    ward = Ward(tmp_path, devices, NOW)
    ward.run(30)
    events = ward.run(4, racing)
    ward.clocks.step(-3_600.0)
    events += ward.run(10, racing)
    (start,) = events
    assert start.phase is Phase.START  # after 10 s of tachycardia, not after an hour of it
    assert start.detection_time == pytest.approx(ward.clocks.wall() - 3, abs=1.5)
    assert start.detection_time - start.onset_time == pytest.approx(10, abs=1.5)


@PATHS
def test_a_backward_step_does_not_freeze_clearing_or_cooldown(tmp_path: Path, devices: int) -> None:
    ward = Ward(tmp_path, devices, NOW)
    ward.run(30)
    events = ward.run(20, racing)
    events += ward.run(5)
    ward.clocks.step(-3_600.0)
    events += ward.run(30)  # 35 s clear in all
    assert [e.phase for e in events] == [Phase.START, Phase.END]
    events += ward.run(30)  # the 60 s cooldown runs out in real seconds, not an hour later
    events += ward.run(15, racing)
    assert [e.phase for e in events] == [Phase.START, Phase.END, Phase.START]
    assert events[2].id != events[0].id


@PATHS
def test_a_forward_step_does_not_raise_a_technical_alarm_of_a_short_sensor_off(
    tmp_path: Path, devices: int
) -> None:
    """sensor_off needs 10 s of readings flagged NO_CONTACT: 8 s with a step inside is not enough."""
    ward = Ward(tmp_path, devices, SAVED)
    ward.run(30)
    events = ward.run(4, quality=Quality.NO_CONTACT)
    ward.clocks.step(3 * DAY_S)
    events += ward.run(4, quality=Quality.NO_CONTACT) + ward.run(30)
    assert events == []


@PATHS
def test_a_real_silence_still_raises_the_dropout_alarm(tmp_path: Path, devices: int) -> None:
    """Wall and monotonic clocks both run on through a silence: that is no step, the windows keep it."""
    ward = Ward(tmp_path, devices, NOW)
    ward.run(60)
    ward.clocks.mono += 60.0  # a minute without any reading
    events = ward.run(30)
    assert {(e.device, e.condition, e.phase) for e in events} >= {("bed-0", "vitals_missing", Phase.START)}
    assert ward.pipeline.clock_steps() == 0


def test_a_gap_in_recorded_times_is_still_a_gap(tmp_path: Path) -> None:
    """Readings not stamped by the gateway clock (a replay, a simulator running fast) keep their own
    time: a 5-minute hole in the recording delivered a second later is a dropout, not a clock step."""
    clocks = Clocks(NOW)
    pipeline = Pipeline(
        parse_config(CONFIG, base_dir=tmp_path), str, clock=clocks.wall, monotonic=clocks.monotonic
    )
    recorded = 1_600_000_000.0  # 2020
    events: list[AlarmEvent] = []
    for k in range(90):
        clocks.mono += 1.0
        t = recorded + k + (300.0 if k >= 60 else 0.0)
        events += pipeline.ingest([Reading.single("bed-0/vitals", {"hr": 75.0}, t, clocks.mono)])
    assert [(e.condition, e.phase, e.kind) for e in events] == [
        ("vitals_missing", Phase.START, AlarmKind.TECHNICAL),
        ("vitals_missing", Phase.END, AlarmKind.TECHNICAL),
    ]
    assert pipeline.clock_steps() == 0


@pytest.mark.parametrize("step", [3 * DAY_S, -3_600.0], ids=["forward-3d", "back-1h"])
def test_a_serial_device_stamping_its_own_time_follows_the_step(tmp_path: Path, step: float) -> None:
    """A serial device's samples carry its own clock, anchored to the gateway's (agent.sources.serial_frames):
    the anchor moves when the two disagree by over 2 s, so after a step the readings carry the gateway
    clock the pipeline compares them with. Right before the fix for the source; the chain is the point."""
    clocks = Clocks(SAVED)
    pipeline = Pipeline(
        parse_config(CONFIG, base_dir=tmp_path), str, clock=clocks.wall, monotonic=clocks.monotonic
    )
    frames = FrameReadings("bed-0", "vitals", clocks.wall)
    spec = ChannelSpec("hr", "bpm", SampleType.INT16, 1.0, 1.0)
    assert frames.take(Frame(0, 0, Hello("emu-1", (1, 0, 0), (spec,))), clocks.mono) is None
    events: list[AlarmEvent] = []
    walls: list[float] = []
    gateway: list[float] = []
    for k in range(150):
        clocks.mono += 1.0
        if k == 60:
            clocks.step(step)
        t_us = k * 1_000_000
        block = DataBlock(t_us, SampleType.INT16, (0,), np.array([[75]]))
        reading = frames.take(Frame(k + 1, t_us, block), clocks.mono)
        assert reading is not None
        walls.append(reading.wall_time)
        gateway.append(clocks.wall())
        events += pipeline.ingest([reading])
    assert walls == pytest.approx(gateway)  # the gateway clock at the time, before and after the step
    assert events == []
    assert pipeline.clock_steps() == 1


def test_a_step_while_learning_leaves_the_learned_threshold_as_it_would_be(tmp_path: Path) -> None:
    """Scores inside an alarm episode are left out of a live calibration's baseline by time: a step back
    inside the episode must not let its scores after the step in (they would raise the threshold)."""
    raw = {
        **CONFIG,
        "detectors": [
            {
                "id": "hr-change",
                "type": "robust_z",
                "stream": "vitals",
                "channels": ["hr"],
                "params": {"window_s": 60, "hop_s": 1},
                "calibration": {"baseline_s": 600, "target_false_alarms_per_hour": 36},
            }
        ],
        "alarms": [{"condition": "hr_change", "detector": "hr-change", "min_duration_s": 5, "cooldown_s": 0}],
    }
    rng = np.random.default_rng(7)
    hr = 70.0 + rng.normal(0.0, 3.0, 900)
    hr[300:400] += 40.0  # an episode while learning

    def learned(step: float) -> float:
        clocks = Clocks(NOW)
        pipeline = Pipeline(
            parse_config(raw, base_dir=tmp_path), str, clock=clocks.wall, monotonic=clocks.monotonic
        )
        events: list[AlarmEvent] = []
        for k, value in enumerate(hr):
            clocks.mono += 1.0
            if k == 330:
                clocks.step(step)
            reading = Reading.single("bed-0/vitals", {"hr": float(value)}, clocks.wall(), clocks.mono)
            events += pipeline.ingest([reading])
        calibration = pipeline.calibrations["hr-change"]
        assert not calibration.learning and calibration.learned is not None
        assert [e.phase for e in events][:2] == [Phase.START, Phase.END]
        return calibration.learned

    assert learned(-3_600.0) == learned(0.0)
