"""Contact that comes and goes, end to end: byte-exact Heart Rate and PLX Continuous payloads from the fake
radio through the real BleSource into the real Pipeline (review "ble", F3, 2026-11-30).

A strap reporting "contact supported, not detected" 9 s of every 10 (or 7/3, 5/5, 4/1), or an oximeter
reporting "sensor displaced" 9 s of every 10, raised nothing in 10 minutes: the quality alarms needed 10 s
of unbroken flagged readings, and one good second reset them. Each now raises one `sensor_off`, which
ends 10 s after contact is steady; a 2-of-5 s flicker still raises none and does not stop a tachycardia.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fake_ble import HR_UUID, PLX_UUID, FakeFinder, FakeRadio, hr_measurement, plx_continuous

import agent.sources.ble
from agent.config.loader import parse_config
from agent.config.schema import AgentConfig
from agent.events import AlarmEvent, AlarmKind
from agent.pipeline.pipeline import Pipeline
from agent.readings import Reading
from agent.sources.backoff import BackoffPolicy
from agent.sources.ble import BleSource, retry_connector
from firmware_bridge.gatt.pulse_oximeter import PlxDeviceSensorStatus as Ds

FAST = BackoffPolicy(initial_s=0.02, max_s=0.2)
DEADLINE_S = 20.0


def config(tmp_path: Path) -> AgentConfig:
    def limit(id_: str, channel: str, bound: str, value: float) -> dict[str, object]:
        params = {bound: value}
        return {"id": id_, "type": "limit", "stream": "vitals", "channels": [channel], "params": params}

    def rule(condition: str, detector: str, priority: str) -> dict[str, object]:
        return {
            "condition": condition,
            "detector": detector,
            "priority": priority,
            "min_duration_s": 10,
            "confirm_n": 7,
            "confirm_m": 10,
            "clear_after_s": 10,
            "cooldown_s": 60,
        }

    return parse_config(
        {
            "gateway": {"id": "gw-ble", "site": "lab", "state_dir": str(tmp_path / "state")},
            "mqtt": {"url": "mqtt://127.0.0.1:1"},
            "outbox": {"path": str(tmp_path / "state" / "outbox.sqlite")},
            "devices": [
                {
                    "id": "bed-3-strap",
                    "kind": "wearable",
                    "transport": "ble",
                    "lost_after_s": 30,
                    "ble": {"address": "C4:7C:8D:6A:12:34", "profiles": ["heart_rate", "plx"]},
                }
            ],
            "detectors": [limit("hr-high", "hr", "above", 120), limit("spo2-low", "spo2", "below", 90)],
            "alarms": [rule("tachycardia", "hr-high", "medium"), rule("spo2_low", "spo2-low", "high")],
        },
        base_dir=tmp_path,
    )


class Clock:
    """The gateway's wall clock, and the BLE source's monotonic one: one second a step, so each step's
    notifications make that second's vitals row at once (rows come once a second of the source's clock)."""

    def __init__(self) -> None:
        self.t = 1.8e9

    def __call__(self) -> float:
        return self.t

    def time(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t - 1.8e9 + 1000.0


Step = tuple[bytes, bytes]  # (PLX payload, heart rate payload) for one second


async def ready(source: BleSource) -> list[Reading]:
    """The readings the source holds now (notifications are delivered at once by the fake radio),
    however many rows the notifications made."""
    readings: list[Reading] = []
    while True:
        try:
            async with asyncio.timeout(0):
                readings.append(await anext(source))
        except TimeoutError:
            return readings


async def run(tmp_path: Path, steps: list[Step]) -> list[tuple[int, AlarmEvent]]:
    """Each step is one second: the PLX notification, then the HR one. (second, event) pairs."""
    cfg = config(tmp_path)
    radio, clock = FakeRadio(), Clock()
    source = BleSource(
        cfg.devices[0],
        finder=FakeFinder(radio),
        connector=retry_connector(radio.client_class()),
        backoff=FAST,
        clock=clock,
    )
    pipeline = Pipeline(cfg, lambda device, prefix="d": f"{prefix}-x", clock=clock)
    events: list[tuple[int, AlarmEvent]] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(agent.sources.ble, "time", clock)
        async with source:
            async with asyncio.timeout(DEADLINE_S):
                await radio.wait_subscribed(1, HR_UUID)
                await radio.wait_subscribed(1, PLX_UUID)
            for second, (plx, hr) in enumerate(steps):
                clock.t += 1.0
                radio.notify(PLX_UUID, plx)
                radio.notify(HR_UUID, hr)
                async with asyncio.timeout(DEADLINE_S):
                    row = await anext(source)  # the second's row, made on the loop's next turn
                events += [(second, e) for e in pipeline.ingest([row, *await ready(source)])]
    return events


GOOD_PLX = plx_continuous(97, 72)
DISPLACED_PLX = plx_continuous(85, 72, sensor=int(Ds.SENSOR_DISPLACED))  # SpO2 85 while displaced
HR72 = hr_measurement(72)
HR72_LOST = hr_measurement(72, contact=False)  # contact supported, not detected


def pattern(bad: Step, good: Step, bad_s: int, good_s: int, seconds: int) -> list[Step]:
    return ([bad] * bad_s + [good] * good_s) * (seconds // (bad_s + good_s))


def starts_and_ends(events: list[tuple[int, AlarmEvent]]) -> list[tuple[str, AlarmKind, str]]:
    return [(e.phase.value, e.kind, e.condition) for _, e in events]


@pytest.mark.parametrize(("bad_s", "good_s"), [(9, 1), (7, 3), (5, 5), (4, 1)])
def test_strap_contact_lost_most_of_the_time_raises_one_sensor_off(
    tmp_path: Path, bad_s: int, good_s: int
) -> None:
    lost, good = (GOOD_PLX, HR72_LOST), (GOOD_PLX, HR72)
    steps = [good] * 5 + pattern(lost, good, bad_s, good_s, 300) + [good] * 60
    events = asyncio.run(run(tmp_path, steps))
    assert starts_and_ends(events) == [
        ("start", AlarmKind.TECHNICAL, "sensor_off"),
        ("end", AlarmKind.TECHNICAL, "sensor_off"),
    ]
    (started_at, start), (ended_at, end) = events
    assert started_at <= 5 + 90 and "intermittently" in start.explanation.text
    assert end.id == start.id
    steady_from = 5 + 300 - good_s  # the last good spell of the pattern, then steady
    assert ended_at == steady_from + 10  # ended 10 s after contact was steady


def test_oximeter_displaced_most_of_the_time_raises_one_sensor_off_and_no_spo2_low(tmp_path: Path) -> None:
    displaced, good = (DISPLACED_PLX, HR72), (GOOD_PLX, HR72)
    steps = [good] * 5 + pattern(displaced, good, 9, 1, 300) + [good] * 60
    events = asyncio.run(run(tmp_path, steps))
    assert starts_and_ends(events) == [
        ("start", AlarmKind.TECHNICAL, "sensor_off"),
        ("end", AlarmKind.TECHNICAL, "sensor_off"),
    ]


def test_a_2_of_5_s_contact_flicker_raises_nothing_and_a_tachycardia_is_still_alarmed(tmp_path: Path) -> None:
    fast, fast_lost = (GOOD_PLX, hr_measurement(150)), (GOOD_PLX, hr_measurement(150, contact=False))
    steps = [(GOOD_PLX, HR72)] * 5 + pattern(fast_lost, fast, 2, 3, 600)
    events = asyncio.run(run(tmp_path, steps))
    assert starts_and_ends(events) == [("start", AlarmKind.PHYSIOLOGICAL, "tachycardia")]


def test_steady_contact_raises_nothing(tmp_path: Path) -> None:
    assert asyncio.run(run(tmp_path, [(GOOD_PLX, HR72)] * 300)) == []
