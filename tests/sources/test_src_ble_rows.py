"""What makes a BLE device's `vitals` row: one a second, from every profile's newest value, whatever the
notification rates; byte-exact Heart Rate and PLX Continuous payloads from the fake radio through the
real BleSource into the real Pipeline, on a stepped clock.

Review of 2026-11-30 (BLE wearables), findings 2 and 4: only heart-rate notifications made a row, so an
oximeter's SpO2 80 % raised nothing once the HR stopped; and each of them made one, so a strap notifying at
2 Hz made 2 rows a second, which the detectors count as seconds: a 6 s SpO2 dip alarmed as a >= 10 s
desaturation."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fake_ble import HR_UUID, PLX_UUID, FakeFinder, FakeRadio, hr_measurement, plx_continuous

import agent.sources.ble
from agent.config.loader import parse_config
from agent.config.schema import AgentConfig
from agent.events import AlarmEvent, Phase
from agent.pipeline.pipeline import Pipeline
from agent.readings import Reading
from agent.sources.backoff import BackoffPolicy
from agent.sources.ble import BleSource, retry_connector

FAST = BackoffPolicy(initial_s=0.02, max_s=0.2)
T0 = 1.8e9


class Clock:
    """The gateway's wall clock and the BLE source's monotonic one, stepped by the test. Only the source
    module's `time` is replaced: the event loop keeps the real clock."""

    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t

    def time(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t - T0 + 1000.0


@dataclass
class Run:
    events: list[tuple[float, AlarmEvent]] = field(default_factory=list)  # (seconds from start, event)
    rows: list[Reading] = field(default_factory=list)  # the vitals rows

    def starts(self, condition: str) -> list[float]:
        return [t for t, e in self.events if e.phase is Phase.START and e.condition == condition]

    def conditions(self) -> set[str]:
        return {e.condition for _, e in self.events if e.phase is Phase.START}


Notification = tuple[float, str, bytes]  # (seconds from start, characteristic, payload)


async def drive(cfg: AgentConfig, notifications: list[Notification], monkeypatch: pytest.MonkeyPatch) -> Run:
    """Notify each payload at its time (the clock stepped to it), let the source make its rows, and feed
    every reading to the pipeline."""
    clock = Clock()
    monkeypatch.setattr(agent.sources.ble, "time", clock)
    radio = FakeRadio()
    source = BleSource(
        cfg.devices[0],
        finder=FakeFinder(radio),
        connector=retry_connector(radio.client_class()),
        backoff=FAST,
        clock=clock,
    )
    pipeline = Pipeline(cfg, lambda device, prefix="d": f"{prefix}-x", clock=clock)
    out = Run()
    async with source:
        await radio.wait_subscribed(1, PLX_UUID)
        by_time: dict[float, list[tuple[str, bytes]]] = {}
        for at, uuid, payload in notifications:
            by_time.setdefault(at, []).append((uuid, payload))
        for at in sorted(by_time):
            clock.t = T0 + at
            for uuid, payload in by_time[at]:  # those of one instant: one loop turn, as BlueZ may
                radio.notify(uuid, payload)
            await asyncio.sleep(0)  # the row is made on the loop's next turn
            readings: list[Reading] = []
            while True:
                try:
                    async with asyncio.timeout(0):  # only what is waiting already
                        readings.append(await anext(source))
                except TimeoutError:
                    break
            out.rows += [r for r in readings if r.stream.endswith("/vitals")]
            out.events += [(at, e) for e in pipeline.ingest(readings)]
    return out


def config(
    tmp_path: Path, profiles: list[str], detectors: list[dict[str, object]], alarms: list[dict[str, object]]
) -> AgentConfig:
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
                    # longer than these runs: a stopped profile would rebuild the link, which a stepped
                    # clock does not follow (test_src_ble_silent_profile.py does, in real time)
                    "lost_after_s": 3600,
                    "ble": {"address": "C4:7C:8D:6A:12:34", "profiles": profiles},
                }
            ],
            "detectors": detectors,
            "alarms": alarms,
        },
        base_dir=tmp_path,
    )


def limits_config(tmp_path: Path, profiles: list[str]) -> AgentConfig:
    """spo2_low (HIGH, 7 of 10 s) and tachycardia, as the review's daemon config."""
    return config(
        tmp_path,
        profiles,
        [
            {
                "id": "spo2-low",
                "type": "limit",
                "stream": "vitals",
                "channels": ["spo2"],
                "params": {"below": 90},
            },
            {
                "id": "hr-high",
                "type": "limit",
                "stream": "vitals",
                "channels": ["hr"],
                "params": {"above": 120},
            },
        ],
        [
            {
                "condition": "spo2_low",
                "detector": "spo2-low",
                "priority": "high",
                "min_duration_s": 10,
                "confirm_n": 7,
                "confirm_m": 10,
                "clear_after_s": 10,
                "cooldown_s": 60,
            },
            {
                "condition": "tachycardia",
                "detector": "hr-high",
                "priority": "medium",
                "min_duration_s": 10,
                "clear_after_s": 10,
                "cooldown_s": 60,
            },
        ],
    )


def desaturation_config(tmp_path: Path) -> AgentConfig:
    return config(
        tmp_path,
        ["heart_rate", "plx"],
        [
            {
                "id": "spo2-drop",
                "type": "spo2_desaturation",
                "stream": "vitals",
                "channels": ["spo2"],
                "params": {"drop": 3, "duration_s": 10, "baseline_s": 300},
            }
        ],
        [
            {
                "condition": "spo2_desaturation",
                "detector": "spo2-drop",
                "priority": "medium",
                "min_duration_s": 0,
                "clear_after_s": 10,
                "cooldown_s": 60,
            }
        ],
    )


def every(
    period_s: float, start_s: float, end_s: float, uuid: str, payload: bytes | Callable[[float], bytes]
) -> list[Notification]:
    """Notifications of one characteristic every `period_s` in [start_s, end_s): `payload`, or
    `payload(t)`."""
    n = round((end_s - start_s) / period_s)
    times = [start_s + k * period_s for k in range(n)]
    return [(t, uuid, payload(t) if callable(payload) else payload) for t in times]


@pytest.mark.parametrize("profiles", [["heart_rate", "plx"], ["plx", "heart_rate"]])
def test_spo2_80_alarms_after_the_heart_rate_notifications_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, profiles: list[str]
) -> None:
    # 20 s of both at 1 Hz, then the HR stops while the oximeter notifies SpO2 80 % each second for 60 s
    plx = every(1.0, 1.0, 81.0, PLX_UUID, lambda t: plx_continuous(97 if t < 21 else 80, 72))
    hr = every(1.0, 1.0, 21.0, HR_UUID, hr_measurement(72))
    run = asyncio.run(drive(limits_config(tmp_path, profiles), plx + hr, monkeypatch))
    assert run.conditions() == {"spo2_low"}
    (start,) = run.starts("spo2_low")
    assert 28 <= start <= 33  # 10 s of SpO2 80 from 21 s (and 3 s of the last HR kept in the rows)
    assert len(run.rows) == 80  # one a second throughout
    assert {r.channels for r in run.rows[25:]} == {("spo2", "pr")}  # the HR missing, not held


def test_a_strap_notifying_at_2_hz_makes_one_row_a_second_and_a_6_s_dip_is_no_desaturation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # HR per beat at 120 bpm (2 Hz), PLX at 1 Hz; SpO2 97 for 320 s, 92 for 6 s, then 97
    plx = every(1.0, 1.0, 361.0, PLX_UUID, lambda t: plx_continuous(92 if 321 <= t < 327 else 97, 120))
    hr = every(0.5, 1.0, 361.0, HR_UUID, hr_measurement(120))
    run = asyncio.run(drive(desaturation_config(tmp_path), plx + hr, monkeypatch))
    assert run.starts("spo2_desaturation") == []
    assert len(run.rows) == 360  # one a second, not one per HR notification (720)
    assert {r.period_s for r in run.rows} == {1.0}  # declared: the pipeline's rate check can compare it
    times = [r.wall_time for r in run.rows]
    assert min(b - a for a, b in itertools.pairwise(times)) == pytest.approx(1.0)


def test_a_12_s_dip_at_2_hz_alarms_on_its_10th_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plx = every(1.0, 1.0, 361.0, PLX_UUID, lambda t: plx_continuous(92 if 321 <= t < 333 else 97, 120))
    hr = every(0.5, 1.0, 361.0, HR_UUID, hr_measurement(120))
    run = asyncio.run(drive(desaturation_config(tmp_path), plx + hr, monkeypatch))
    (start,) = run.starts("spo2_desaturation")
    assert 329.5 <= start <= 331.5  # the dip's 10th second is 330 s


def test_an_hr_every_3_s_and_plx_each_second_still_make_a_row_each_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an oximeter's own HR service notifying only on change: every 3 s; SpO2 86 for 20 s
    plx = every(1.0, 1.0, 81.0, PLX_UUID, lambda t: plx_continuous(86 if 31 <= t < 51 else 97, 72))
    hr = every(3.0, 1.0, 81.0, HR_UUID, hr_measurement(72))
    run = asyncio.run(drive(limits_config(tmp_path, ["plx", "heart_rate"]), plx + hr, monkeypatch))
    assert len(run.rows) == 80
    assert run.conditions() == {"spo2_low"}
    assert all("hr" in r.channels for r in run.rows)  # a 3 s old HR is still fresh (hold 3 s)
