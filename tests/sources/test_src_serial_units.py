"""The unit a serial device declares in its HELLO is the unit its samples are taken in.

An accelerometer declaring "m/s2" with a 2.0 mm/s tone (zone B, class II) raised vibration_zone_c at
19.6 mm/s, for as long as the machine ran, with no word: the HELLO's unit was thrown away and the
vibration detector read the samples in its own `unit` (g) (equipment review, F3). A device sending mg
could not be configured at all. Now the wiring tells the source the unit each detector reads a channel
in, and the source converts the HELLO's other units of that quantity, or takes a channel it cannot
convert as no value (told once per HELLO). Real pseudo-terminals, the firmware_bridge emulator, the
real `SerialSource` and `Pipeline`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from src_pty import PtyDevice
from uplink_probe import Received, Subscriber

from agent.config import load_config, parse_config
from agent.config.schema import AgentConfig
from agent.daemon import Agent
from agent.detectors.vibration import VibrationDetector
from agent.events import AlarmEvent, Phase
from agent.localbroker import LocalBroker
from agent.logs import redact_identifiers
from agent.pipeline import Pipeline
from agent.pipeline.wiring import check_wiring, expected_units
from agent.readings import Reading
from agent.sources.serial import SerialSource
from agent.sources.serial_units import HelloUnits
from agent.units import ExpectedUnit
from firmware_bridge.emulator import EmulatedChannel, SerialDeviceEmulator
from firmware_bridge.frame_messages import ChannelSpec, Hello, SampleType

PSEUDONYM = "d-fanacc7pseudo"
RATE = 3200.0
TONE_HZ = 49.5
G = 9.80665
PORT_NAME = "usb-Acme_Accel_0007-if00-port0"
SPEED = 1.0  # device seconds per wall second: the alarm timers run on the gateway's clock
Signal = npt.NDArray[np.float64]


def config(tmp_path: Path, detector_unit: str | None = None) -> AgentConfig:
    """The review's setup, its device on the test's pty (`PORT_NAME` in `tmp_path`)."""
    params: dict[str, Any] = {"machine_class": "II"}
    if detector_unit is not None:
        params["unit"] = detector_unit
    raw = {
        "gateway": {"id": "gw", "site": "s"},
        "mqtt": {"url": "mqtt://127.0.0.1:1883"},
        "outbox": {"path": "outbox.sqlite"},
        "devices": [
            {
                "id": "fan-acc",
                "kind": "equipment",
                "transport": "serial",
                "serial": {"port": str(tmp_path / PORT_NAME)},
            }
        ],
        "detectors": [
            {
                "id": "fan-vibration",
                "type": "vibration",
                "stream": "acc",
                "channels": ["acc_x", "acc_y", "acc_z"],
                "rate_hz": RATE,
                "params": params,
            }
        ],
        "alarms": [
            {
                "condition": "vibration_zone_c",
                "detector": "fan-vibration",
                "priority": "low",
                "min_duration_s": 2,
                "unit": "mm/s",
            }
        ],
    }
    return parse_config(raw, base_dir=tmp_path)


def axes(units: tuple[str, str, str], velocity_mm_s: float) -> list[EmulatedChannel]:
    """acc_x: a 49.5 Hz tone of `velocity_mm_s` RMS, acc_y: small noise, acc_z: gravity and noise, each
    written in its declared unit (as the review's emulator did), with a raw step fine enough for it."""
    amplitude = velocity_mm_s * np.sqrt(2) / 1000 * 2 * np.pi * TONE_HZ  # m/s2 peak
    rng = np.random.default_rng(1)
    per_m_s2 = {"m/s2": 1.0, "m/s^2": 1.0, "g": 1 / G, "mg": 1000 / G, "mm/s2": 1000.0}

    def tone(k: float) -> Any:
        return lambda t: (
            k * amplitude * np.sin(2 * np.pi * TONE_HZ * t) + k * 0.02 * rng.standard_normal(len(t))
        )

    def noise(k: float, level: float) -> Any:
        return lambda t: k * level + k * 0.02 * rng.standard_normal(len(t))

    out = []
    for name, unit, make in zip(("acc_x", "acc_y", "acc_z"), units, (tone, None, None), strict=True):
        k = per_m_s2.get(unit, 1 / G)  # a unit the agent cannot convert: the firmware sends g
        scale = 5e-3 * k  # 5 mm/s2 a step, in the declared unit: gravity and the tone fit int16
        generator = make(k) if make is not None else noise(k, G if name == "acc_z" else 0.0)
        out.append(EmulatedChannel(ChannelSpec(name, unit, SampleType.INT16, RATE, scale), generator))
    return out


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[PtyDevice]:
    redact_identifiers({"fan-acc": PSEUDONYM})  # as the daemon does at start (conftest undoes it)
    dev = PtyDevice(tmp_path / PORT_NAME)
    dev.plug()
    yield dev
    dev.unplug()


def run(
    pty: PtyDevice, cfg: AgentConfig, channels: list[EmulatedChannel], device_s: float
) -> tuple[list[Reading], list[AlarmEvent]]:
    """The emulated device's first `device_s` seconds through the real source and pipeline."""
    emulator = SerialDeviceEmulator(pty.master, "acc-node-7", channels, speed=SPEED)
    stop = threading.Event()
    thread = threading.Thread(
        target=emulator.run, args=(stop,), kwargs={"answer_commands": True}, daemon=True
    )
    pipeline = Pipeline(cfg, lambda _: PSEUDONYM)

    async def main() -> tuple[list[Reading], list[AlarmEvent]]:
        readings: list[Reading] = []
        events: list[AlarmEvent] = []
        device = cfg.devices[0]
        async with SerialSource(device, expected_units=expected_units(cfg)) as source:
            thread.start()
            async with asyncio.timeout(30 + device_s / SPEED * 3):
                async for reading in source:
                    readings.append(reading)
                    events += pipeline.ingest([reading])
                    if sum(r.n_samples for r in readings) >= device_s * RATE:
                        break
        return readings, events

    try:
        return asyncio.run(main())
    finally:
        stop.set()
        thread.join(timeout=10)


def velocity_rms(readings: list[Reading]) -> Signal:
    """Per axis, the velocity RMS (mm/s) the detector (in g) sees in the last second of `readings`."""
    values = np.concatenate([r.values for r in readings])[-int(RATE) :]
    detector = VibrationDetector(
        "v", ("acc_x", "acc_y", "acc_z"), int(RATE), int(RATE), RATE, (1.12, 2.8, 7.1)
    )
    return np.asarray(detector.features(values[None]).velocity_rms[0])


def starts(events: list[AlarmEvent], condition: str) -> list[AlarmEvent]:
    return [e for e in events if e.phase is Phase.START and e.condition == condition]


@pytest.mark.parametrize("declared", ["m/s2", "m/s^2", "mg", "mm/s2"])
def test_a_zone_b_machine_declared_in_another_acceleration_unit_raises_no_alarm(
    tmp_path: Path, pty: PtyDevice, declared: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The review's case: 2.0 mm/s (zone B) declared in m/s2 alarmed at 19.6 mm/s; in mg at 0.02 mm/s."""
    with caplog.at_level(logging.INFO, logger="agent.sources.serial"):
        readings, events = run(pty, config(tmp_path), axes((declared,) * 3, 2.0), device_s=6.0)
    np.testing.assert_allclose(velocity_rms(readings)[0], 2.0, rtol=0.05)
    assert starts(events, "vibration_zone_c") == []
    told = [r.getMessage() for r in caplog.records if "are converted" in r.getMessage()]
    assert len(told) == 1  # once, not per block or per axis
    assert told[0].startswith(
        f'{PSEUDONYM}: the serial device\'s HELLO declares channels "acc_x", "acc_y", "acc_z" (stream "acc")'
        f' in "{declared}"; the samples are converted to "g" (x '
    )
    assert told[0].endswith(
        "the unit detector fan-vibration reads them in (detectors.fan-vibration.params.unit)"
    )


def test_a_zone_d_vibration_declared_in_m_s2_alarms_at_its_real_velocity(
    tmp_path: Path, pty: PtyDevice
) -> None:
    _, events = run(pty, config(tmp_path), axes(("m/s2",) * 3, 10.0), device_s=6.0)
    [start] = starts(events, "vibration_zone_c")
    assert start.value == pytest.approx(10.0, rel=0.05)  # not 98 mm/s: the m/s2 taken as g
    assert start.threshold == pytest.approx(2.8)


def test_a_device_in_mg_read_by_a_detector_in_m_s2(tmp_path: Path, pty: PtyDevice) -> None:
    readings, events = run(pty, config(tmp_path, "m/s^2"), axes(("mg",) * 3, 10.0), device_s=6.0)
    [start] = starts(events, "vibration_zone_c")
    assert start.value == pytest.approx(10.0, rel=0.05)
    gravity = np.mean(np.concatenate([r.values for r in readings])[:, 2])
    assert gravity == pytest.approx(G, rel=0.01)  # acc_z arrives in m/s2, the detector's unit


@pytest.mark.parametrize("declared", ["mV", "furlongs"])
def test_an_axis_in_a_unit_that_is_no_acceleration_is_told_and_not_judged(
    tmp_path: Path, pty: PtyDevice, declared: str, caplog: pytest.LogCaptureFixture
) -> None:
    """acc_z declared in mV (or a word the agent does not know): a zone-D vibration on acc_x must not be
    judged with acc_z taken as g; the axis is no value, signal_poor is raised, one warning says why."""
    with caplog.at_level(logging.INFO, logger="agent.sources.serial"):
        readings, events = run(pty, config(tmp_path), axes(("g", "g", declared), 10.0), device_s=14.0)
    assert np.isnan(np.concatenate([r.values for r in readings])[:, 2]).all()
    assert starts(events, "vibration_zone_c") == []
    assert len(starts(events, "signal_poor")) == 1
    told = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert told == [
        f'{PSEUDONYM}: the serial device\'s HELLO declares channel "acc_z" (stream "acc") in "{declared}",'
        ' which is not a unit convertible to "g", the unit it is read in'
        " (detectors.fan-vibration.params.unit): its samples are taken as no value (NaN), so they are not"
        " judged and the signal_poor alarm is raised; fix the firmware's unit (docs/serial-protocol.md,"
        " HELLO) or detectors.fan-vibration.params.unit"
    ]
    assert not [r for r in caplog.records if "are converted" in r.getMessage()]  # g is g


def test_an_empty_unit_keeps_the_detectors_unit(tmp_path: Path, pty: PtyDevice) -> None:
    """Firmware that declares no unit: the samples are taken in the detector's unit, as before."""
    channels = [EmulatedChannel(replace(c.spec, unit=""), c.generator) for c in axes(("g",) * 3, 10.0)]
    _, events = run(pty, config(tmp_path), channels, device_s=6.0)
    [start] = starts(events, "vibration_zone_c")
    assert start.value == pytest.approx(10.0, rel=0.05)


def test_told_once_per_hello_and_again_for_a_new_one(caplog: pytest.LogCaptureFixture) -> None:
    units = HelloUnits(PSEUDONYM, {("acc", "acc_x"): ExpectedUnit("g", "vib")})

    def hello(unit: str) -> Hello:
        return Hello("n", (1, 0, 0), (ChannelSpec("acc_x", unit, SampleType.INT16, RATE, 0.001),))

    with caplog.at_level(logging.INFO, logger="agent.sources.serial"):
        first = units.factors(hello("mV"), (0,), ("acc_x",), "acc")
        again = units.factors(hello("mV"), (0,), ("acc_x",), "acc")  # the same HELLO, sent again
        other = units.factors(hello("m/s2"), (0,), ("acc_x",), "acc")
        back = units.factors(hello("mV"), (0,), ("acc_x",), "acc")
    assert first is not None and again is not None and np.isnan(first).all() and np.isnan(again).all()
    assert other is not None and other[0] == pytest.approx(1 / G)
    assert back is not None and np.isnan(back).all()
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2  # the first mV HELLO, and the one after the m/s2 one
    assert units.factors(hello("m/s2"), (0,), ("acc_x",), "other") is None  # no detector reads it there


def test_two_detectors_reading_one_channel_in_two_units_is_a_config_error(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    other = replace(cfg.detectors[0], id="fan-vibration-2", params={"unit": "m/s2"})
    cfg = replace(cfg, detectors=(cfg.detectors[0], other))
    [problem] = check_wiring(cfg)
    assert problem.path == "detectors.fan-vibration-2.params.unit"
    assert "detector fan-vibration reads the same channels" in problem.problem


DAEMON_CONFIG = """
[gateway]
id = "gw-vib"
site = "rev"
heartbeat_interval_s = 10
state_dir = "state"
[mqtt]
url = "mqtt://127.0.0.1:{port}"
[outbox]
path = "state/outbox.sqlite"
[[devices]]
id = "fan-acc"
kind = "equipment"
transport = "serial"
[devices.serial]
port = "{link}"
[[detectors]]
id = "fan-vibration"
type = "vibration"
stream = "acc"
channels = ["acc_x", "acc_y", "acc_z"]
rate_hz = 3200
params = {{ machine_class = "II" }}
[[alarms]]
condition = "vibration_zone_c"
detector = "fan-vibration"
priority = "low"
min_duration_s = 2
unit = "mm/s"
"""


def test_the_daemon_converts_what_the_review_saw_alarm_at_ten_times_the_velocity(
    tmp_path: Path, pty: PtyDevice, mosquitto: LocalBroker
) -> None:
    """The review's daemon setup (its agent.toml), an m/s2 device at 10 mm/s (zone D): the published
    alarm says 10 mm/s, not 98. The session hands the config's expected units to the source."""
    config_file = tmp_path / "agent.toml"
    config_file.write_text(DAEMON_CONFIG.format(port=mosquitto.port, link=pty.link))
    agent = Agent(load_config(config_file))
    central = Subscriber(mosquitto, "edge/#")
    emulator = SerialDeviceEmulator(pty.master, "acc-node-7", axes(("m/s2",) * 3, 10.0))
    stop = threading.Event()
    thread = threading.Thread(
        target=emulator.run, args=(stop,), kwargs={"answer_commands": True}, daemon=True
    )

    def started(messages: list[Received]) -> bool:
        return any(m.topic.endswith("/alarm") and m.json()["phase"] == "start" for m in messages)

    async def main() -> list[Received]:
        runner = asyncio.create_task(agent.run())
        try:
            thread.start()
            return await asyncio.to_thread(central.wait_for, started, 30.0)
        finally:
            agent.stopping.set()
            await runner

    try:
        messages = asyncio.run(main())
    finally:
        stop.set()
        thread.join(timeout=10)
        central.close()
    [alarm] = [m.json() for m in messages if m.topic.endswith("/alarm")]
    assert alarm["condition"] == "vibration_zone_c"
    assert alarm["value"] == pytest.approx(10.0, rel=0.05)
