"""PLX status bits, SpO2 "no value" and profiles a device lacks, end to end: byte-exact PLX Continuous and
Heart Rate payloads from the fake radio through the real BleSource into the real Pipeline.

Audit of 2026-11-30: findings 2 (status bits that say "do not trust" were ignored: HIGH spo2_low from them),
3 (SpO2 NaN / NRes / reserved for minutes raised nothing) and 6 (a configured profile the device lacks made
the whole device loop connect/disconnect, HR lost too)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from fake_ble import HR_UUID, PLX_UUID, FakeFinder, FakeRadio, hr_measurement, plx_continuous, sfloat

import agent.sources.ble
from agent.config.loader import parse_config
from agent.config.schema import AgentConfig
from agent.events import AlarmEvent, AlarmKind, Phase
from agent.pipeline.pipeline import Pipeline
from agent.readings import Reading
from agent.sources.backoff import BackoffPolicy
from agent.sources.ble import BleSource, retry_connector
from firmware_bridge.gatt.pulse_oximeter import PlxDeviceSensorStatus as Ds
from firmware_bridge.gatt.pulse_oximeter import PlxMeasurementStatus as Ms

FAST = BackoffPolicy(initial_s=0.02, max_s=0.2)
DEADLINE_S = 20.0


def limit(id_: str, channel: str, bound: str, value: float) -> dict[str, object]:
    return {"id": id_, "type": "limit", "stream": "vitals", "channels": [channel], "params": {bound: value}}


def rule(condition: str, detector: str, priority: str = "medium") -> dict[str, object]:
    return {
        "condition": condition,
        "detector": detector,
        "priority": priority,
        "min_duration_s": 3,
        "clear_after_s": 3,
        "cooldown_s": 1,
    }


def config(tmp_path: Path, profiles: list[str]) -> AgentConfig:
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
                    "ble": {"address": "C4:7C:8D:6A:12:34", "profiles": profiles},
                }
            ],
            "detectors": [
                limit("hr-high", "hr", "above", 120),
                limit("spo2-low", "spo2", "below", 90),
                limit("pr-high", "pr", "above", 120),
            ],
            "alarms": [
                rule("tachycardia", "hr-high"),
                rule("spo2_low", "spo2-low", "high"),
                rule("pr_high", "pr-high"),
            ],
        },
        base_dir=tmp_path,
    )


class Clock:
    """The gateway's wall clock, and the BLE source's monotonic one: one second a step, so each step's
    notifications make that second's vitals row without waiting for it (rows come once a second)."""

    def __init__(self) -> None:
        self.t = 1.8e9

    def __call__(self) -> float:
        return self.t

    def time(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t - 1.8e9 + 1000.0


Step = tuple[bytes | None, bytes | None]  # (heart rate payload, PLX payload) for one second


async def run(cfg: AgentConfig, radio: FakeRadio, steps: list[Step]) -> tuple[list[AlarmEvent], BleSource]:
    """Each step is one second: the PLX notification (if any), then the HR one; its row holds both."""
    clock = Clock()
    source = BleSource(
        cfg.devices[0],
        finder=FakeFinder(radio),
        connector=retry_connector(radio.client_class()),
        backoff=FAST,
        clock=clock,
    )
    pipeline = Pipeline(cfg, lambda device, prefix="d": f"{prefix}-x", clock=clock)
    events: list[AlarmEvent] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(agent.sources.ble, "time", clock)
        await steps_through(source, radio, pipeline, clock, steps, events)
    return events, source


async def steps_through(
    source: BleSource,
    radio: FakeRadio,
    pipeline: Pipeline,
    clock: Clock,
    steps: list[Step],
    events: list[AlarmEvent],
) -> None:
    async with source:
        await radio.wait_subscribed(1, HR_UUID)
        for hr, plx in steps:
            clock.t += 1.0
            if plx is not None:
                radio.notify(PLX_UUID, plx)
            if hr is not None:
                radio.notify(HR_UUID, hr)
            readings: list[Reading] = []
            if hr is not None:  # each step makes one vitals row (no RR in these payloads)
                async with asyncio.timeout(DEADLINE_S):
                    readings.append(await anext(source))
            events += pipeline.ingest(readings)


def started(events: list[AlarmEvent]) -> set[tuple[AlarmKind, str]]:
    return {(e.kind, e.condition) for e in events if e.phase is Phase.START}


HR72 = hr_measurement(72)
GOOD = plx_continuous(98, 72)


def seconds(n: int, hr: bytes | None, plx: bytes | None) -> list[Step]:
    return [(hr, plx)] * n


# Every PLX status bit that says the value must not be trusted, with the technical alarm it must raise
# instead of a HIGH spo2_low (the table in docs/sources.md).
GATING = [
    ("measurement unavailable", Ms.MEASUREMENT_UNAVAILABLE, None, "signal_poor"),
    ("early estimated data", Ms.EARLY_ESTIMATED_DATA, None, "signal_poor"),
    ("data from storage", Ms.DATA_FROM_STORAGE, None, "signal_poor"),
    ("data for demonstration", Ms.DATA_FOR_DEMONSTRATION, None, "signal_poor"),
    ("data for testing", Ms.DATA_FOR_TESTING, None, "signal_poor"),
    ("calibration ongoing", Ms.CALIBRATION_ONGOING, None, "signal_poor"),
    ("questionable measurement", Ms.QUESTIONABLE_MEASUREMENT, None, "signal_poor"),
    ("invalid measurement", Ms.INVALID_MEASUREMENT, None, "signal_poor"),
    ("equipment malfunction", None, Ds.EQUIPMENT_MALFUNCTION, "device_fault"),
    ("signal processing irregularity", None, Ds.SIGNAL_PROCESSING_IRREGULARITY, "signal_poor"),
    ("inadequate signal", None, Ds.INADEQUATE_SIGNAL, "signal_poor"),
    ("poor signal", None, Ds.POOR_SIGNAL, "signal_poor"),
    ("erratic signal", None, Ds.ERRATIC_SIGNAL, "signal_poor"),
    ("non-pulsatile signal", None, Ds.NONPULSATILE_SIGNAL, "signal_poor"),
    ("questionable pulse", None, Ds.QUESTIONABLE_PULSE, "signal_poor"),
    ("signal analysis ongoing", None, Ds.SIGNAL_ANALYSIS_ONGOING, "signal_poor"),
    ("sensor interference", None, Ds.SENSOR_INTERFERENCE, "signal_poor"),
    ("sensor unconnected to user", None, Ds.SENSOR_UNCONNECTED_TO_USER, "sensor_off"),
    ("unknown sensor connected", None, Ds.UNKNOWN_SENSOR_CONNECTED, "device_fault"),
    ("sensor displaced", None, Ds.SENSOR_DISPLACED, "sensor_off"),
    ("sensor malfunctioning", None, Ds.SENSOR_MALFUNCTIONING, "device_fault"),
    ("sensor disconnected", None, Ds.SENSOR_DISCONNECTED, "sensor_off"),
]


@pytest.mark.parametrize(
    ("measurement", "sensor", "condition"), [g[1:] for g in GATING], ids=[g[0] for g in GATING]
)
def test_a_gating_status_bit_gives_its_technical_alarm_and_no_spo2_low(
    tmp_path: Path, measurement: Ms | None, sensor: Ds | None, condition: str
) -> None:
    flagged = plx_continuous(
        85,
        72,
        measurement=None if measurement is None else int(measurement),
        sensor=None if sensor is None else int(sensor),
    )
    events, _ = asyncio.run(
        run(
            config(tmp_path, ["heart_rate", "plx"]),
            FakeRadio(),
            seconds(5, HR72, GOOD) + seconds(15, HR72, flagged),
        )
    )
    assert started(events) == {(AlarmKind.TECHNICAL, condition)}


# Bits that inform only: the value is a measurement to judge (low perfusion is clinically real, and gating
# it would blind SpO2 in shock or a cold periphery; the device says poor/inadequate signal when it cannot).
INFORMING = [
    ("measurement ongoing", Ms.MEASUREMENT_ONGOING, None),
    ("validated data", Ms.VALIDATED_DATA, None),
    ("fully qualified data", Ms.FULLY_QUALIFIED_DATA, None),
    ("extended display update ongoing", None, Ds.EXTENDED_DISPLAY_UPDATE_ONGOING),
    ("low perfusion", None, Ds.LOW_PERFUSION),
]


@pytest.mark.parametrize(("measurement", "sensor"), [i[1:] for i in INFORMING], ids=[i[0] for i in INFORMING])
def test_an_informing_status_bit_leaves_a_desaturation_alarmed(
    tmp_path: Path, measurement: Ms | None, sensor: Ds | None
) -> None:
    low = plx_continuous(
        85,
        72,
        measurement=None if measurement is None else int(measurement),
        sensor=None if sensor is None else int(sensor),
    )
    events, _ = asyncio.run(
        run(
            config(tmp_path, ["heart_rate", "plx"]),
            FakeRadio(),
            seconds(5, HR72, GOOD) + seconds(15, HR72, low),
        )
    )
    assert started(events) == {(AlarmKind.PHYSIOLOGICAL, "spo2_low")}


@pytest.mark.parametrize("raw", [0x07FF, 0x0800, 0x0801], ids=["NaN", "NRes", "reserved"])
def test_spo2_no_value_for_long_raises_signal_poor_and_a_good_hr_is_still_judged(
    tmp_path: Path, raw: int
) -> None:
    blind = plx_continuous(sfloat(raw), sfloat(raw))
    steps = seconds(5, HR72, GOOD) + seconds(30, hr_measurement(150), blind)
    events, _ = asyncio.run(run(config(tmp_path, ["heart_rate", "plx"]), FakeRadio(), steps))
    assert started(events) == {(AlarmKind.TECHNICAL, "signal_poor"), (AlarmKind.PHYSIOLOGICAL, "tachycardia")}


def test_normal_data_raises_nothing(tmp_path: Path) -> None:
    # the first rows come before the first PLX value (spo2 and pr missing from them): no alarm from that
    steps = seconds(2, HR72, None) + seconds(60, HR72, GOOD)
    events, _ = asyncio.run(run(config(tmp_path, ["heart_rate", "plx"]), FakeRadio(), steps))
    assert events == []


def test_a_profile_the_device_lacks_is_left_out_once_and_the_rest_works(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    radio = FakeRadio()
    radio.lacks.add(PLX_UUID)  # an HR strap configured with plx too
    caplog.set_level(logging.INFO, "agent.sources.ble")
    steps = seconds(5, HR72, None) + seconds(15, hr_measurement(150), None)
    events, source = asyncio.run(run(config(tmp_path, ["heart_rate", "plx"]), radio, steps))
    # HR is read and judged; the missing SpO2 is a missing channel (no signal_poor)
    assert started(events) == {(AlarmKind.PHYSIOLOGICAL, "tachycardia")}
    assert radio.attempts == radio.connects == 1  # no connect/disconnect loop
    stats = source.stats
    assert dict(stats.errors) == {"profile_missing": 1} and stats.bad_frames == 0
    told = [r.getMessage() for r in caplog.records if "has no" in r.getMessage()]
    assert len(told) == 1
    assert "PLX Continuous Measurement (0x2A5F)" in told[0]
    assert "devices.<id>.ble.profiles" in told[0] and "Spot-check" in told[0]


def test_a_lacking_profile_is_told_once_across_reconnects(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> BleSource:
        radio = FakeRadio()
        radio.lacks.add(PLX_UUID)
        source = BleSource(
            config(tmp_path, ["heart_rate", "plx"]).devices[0],
            finder=FakeFinder(radio),
            connector=retry_connector(radio.client_class()),
            backoff=FAST,
        )
        async with source:
            await radio.wait_subscribed(1, HR_UUID)
            radio.notify(HR_UUID, HR72)
            assert (await anext(source)).channels == ("hr",)
            radio.drop()
            await radio.wait_subscribed(2, HR_UUID)
        return source

    caplog.set_level(logging.WARNING, "agent.sources.ble")
    source = asyncio.run(go())
    assert source.stats.errors["profile_missing"] == 2
    assert sum("has no" in r.getMessage() for r in caplog.records) == 1


def test_a_device_with_none_of_the_profiles_is_a_configuration_error_named_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> BleSource:
        radio = FakeRadio()
        radio.lacks.add(PLX_UUID)  # an HR strap configured as an oximeter only
        source = BleSource(
            config(tmp_path, ["plx"]).devices[0],
            finder=FakeFinder(radio),
            connector=retry_connector(radio.client_class()),
            backoff=FAST,
        )
        async with source:
            async with asyncio.timeout(DEADLINE_S):
                while source.stats.errors.get("no_profile", 0) < 2:
                    await asyncio.sleep(0.01)
            assert not source.stats.connected
        return source

    caplog.set_level(logging.WARNING, "agent.sources.ble")
    asyncio.run(go())
    told = [r.getMessage() for r in caplog.records if "none of the configured profiles" in r.getMessage()]
    assert len(told) == 1 and "devices.<id>.ble.profiles" in told[0]
