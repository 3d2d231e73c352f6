"""A device's `units` key: the unit of channels that do not declare it themselves, for any transport.

Until 2026-12-01 only a serial HELLO's units were converted: a CSV, JSON-lines or Modbus accelerometer
sending m/s2 (or mg) to a vibration detector in g was judged 9.81 times too high (or 1000 times too
low), and a replay of a recorded HELLO device lost its units. Real pseudo-terminals for serial, real
files for the CSV / JSON lines a device writes and for recordings, pymodbus's server for Modbus.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from src_pty import PtyDevice, take
from test_src_modbus import Pump, free_port

from agent.config import parse_config
from agent.config.schema import AgentConfig, DeviceConfig, ModbusConfig, ModbusRegisterConfig
from agent.errors import ConfigError, InvalidConfigError
from agent.logs import redact_identifiers
from agent.pipeline.wiring import check_wiring, expected_units
from agent.readings import Reading
from agent.sources import open_source
from agent.sources.declared_units import DeclaredUnits
from agent.sources.modbus import ModbusSource
from agent.sources.record import ReadingRecorder, read_recording
from agent.sources.replay import ReplaySource
from agent.sources.serial import SerialSource
from agent.units import ExpectedUnit
from firmware_bridge.emulator import EmulatedChannel, SerialDeviceEmulator
from firmware_bridge.frame_messages import ChannelSpec, SampleType

G = 9.80665
PSEUDONYM = "d-accunitspseudo"
AXES = ("acc_x", "acc_y", "acc_z")


def raw_config(tmp_path: Path, device: dict[str, Any], detector_unit: str = "g") -> dict[str, Any]:
    """One equipment device (`device`'s keys over a serial one's) and a vibration detector in `detector_unit`
    on its three axes, on the stream equipment sends to (`machine`; frames at 100 Hz: `acc`)."""
    stream = (
        "acc"
        if device.get("serial", {}).get("protocol", "frames") == "frames"
        and (device.get("transport", "serial") == "serial")
        else "machine"
    )
    return {
        "gateway": {"id": "gw", "site": "s"},
        "mqtt": {"url": "mqtt://127.0.0.1:1883"},
        "outbox": {"path": "outbox.sqlite"},
        "devices": [{"id": "fan-acc", "kind": "equipment", "transport": "serial", **device}],
        "detectors": [
            {
                "id": "fan-vibration",
                "type": "vibration",
                "stream": stream,
                "channels": list(AXES),
                "rate_hz": 100.0,
                "params": {"unit": detector_unit, "iso_high_hz": 40.0},
            }
        ],
    }


def line_device(tmp_path: Path, protocol: str, units: dict[str, str] | None) -> dict[str, Any]:
    serial: dict[str, Any] = {
        "port": str(tmp_path / "tty-acc"),
        "protocol": protocol,
        "channels": list(AXES),
        "rate_hz": 100.0,
    }
    return {"serial": serial, **({"units": units} if units is not None else {})}


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[PtyDevice]:
    redact_identifiers({"fan-acc": PSEUDONYM})
    dev = PtyDevice(tmp_path / "tty-acc")
    dev.plug()
    yield dev
    dev.unplug()


ROWS = [(0.5, -0.25, 9.80665), (1.0, 0.0, 9.9), (-0.5, 0.125, 9.7)]  # what the device measured, m/s2


def written(tmp_path: Path, protocol: str) -> Path:
    """The file a device's firmware writes its lines from: a CSV header and rows, or JSON lines."""
    path = tmp_path / f"device.{protocol}"
    if protocol == "csv":
        path.write_text(",".join(AXES) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in ROWS))
    else:
        path.write_text("".join(json.dumps(dict(zip(AXES, r, strict=True))) + "\n" for r in ROWS))
    return path


def read_lines(pty: PtyDevice, cfg: AgentConfig, lines: Path) -> list[Reading]:
    async def main() -> list[Reading]:
        async with SerialSource(cfg.devices[0], expected_units=expected_units(cfg)) as source:
            task = asyncio.create_task(take(source, len(ROWS)))
            await asyncio.sleep(0.2)  # the port is open
            pty.write(lines.read_bytes())
            return await task

    return asyncio.run(main())


@pytest.mark.parametrize("protocol", ["csv", "jsonl"])
def test_a_line_device_in_m_s2_is_converted_to_the_detectors_g(
    tmp_path: Path, pty: PtyDevice, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    raw = raw_config(tmp_path, line_device(tmp_path, protocol, dict.fromkeys(AXES, "m/s^2")))
    cfg = parse_config(raw, base_dir=tmp_path)
    assert check_wiring(cfg) == []
    with caplog.at_level(logging.INFO, logger="agent.sources.units"):
        readings = read_lines(pty, cfg, written(tmp_path, protocol))
    got = np.concatenate([r.values for r in readings])
    np.testing.assert_allclose(got, np.array(ROWS) / G, rtol=1e-12)  # before: the m/s2 taken as g
    assert all(r.units == ("g", "g", "g") for r in readings)
    told = [r.getMessage() for r in caplog.records if "converted" in r.getMessage()]
    assert len(told) == 3  # once per channel, not per line
    assert all(
        PSEUDONYM in t and "units.acc_" in t and "detectors.fan-vibration.params.unit" in t for t in told
    )


def test_a_line_device_in_mg_read_by_a_detector_in_m_s2(tmp_path: Path, pty: PtyDevice) -> None:
    raw = raw_config(tmp_path, line_device(tmp_path, "csv", {"acc_x": "mg"}), detector_unit="m/s2")
    cfg = parse_config(raw, base_dir=tmp_path)
    readings = read_lines(pty, cfg, written(tmp_path, "csv"))
    got = np.concatenate([r.values for r in readings])
    expected = np.array(ROWS)
    expected[:, 0] *= G / 1000  # only acc_x declared: the others are taken in the detector's unit
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_a_line_device_without_the_key_is_read_as_before(tmp_path: Path, pty: PtyDevice) -> None:
    cfg = parse_config(raw_config(tmp_path, line_device(tmp_path, "csv", None)), base_dir=tmp_path)
    readings = read_lines(pty, cfg, written(tmp_path, "csv"))
    np.testing.assert_array_equal(np.concatenate([r.values for r in readings]), np.array(ROWS))
    assert all(r.units == () for r in readings)


def test_without_the_key_or_recorded_units_a_reading_is_passed_on_untouched() -> None:
    units = DeclaredUnits(PSEUDONYM, {}, {("machine", "acc_x"): expected_unit()})
    reading = Reading("fan-acc/machine", ("acc_x",), np.array([[1.5]]), 1.0, 1.0)
    assert units.apply(reading) is reading


def expected_unit() -> ExpectedUnit:
    return ExpectedUnit("g", "fan-vibration")


# --- Modbus -------------------------------------------------------------------------------------


def test_a_modbus_register_in_mg_is_converted_to_the_detectors_g(tmp_path: Path) -> None:
    """The server's float32 41.5 at register 2 (test_src_modbus): declared mg, the detector in g reads
    0.0415."""
    port = free_port()
    registers = {"registers": [{"name": "acc_z", "address": 2, "type": "float32"}]}
    device = {"transport": "modbus", "modbus": {"host": "127.0.0.1", "port": port, **registers}}
    raw = raw_config(tmp_path, {**device, "units": {"acc_z": "mg"}})
    raw["detectors"][0]["channels"] = ["acc_z"]
    cfg = parse_config(raw, base_dir=tmp_path)
    assert check_wiring(cfg) == []
    device_cfg = replace(
        cfg.devices[0],
        modbus=replace(cfg.devices[0].modbus, poll_interval_s=0.05, timeout_s=0.5),  # type: ignore[type-var]
    )

    async def main() -> list[Reading]:
        pump = Pump(port)
        await pump.start()
        try:
            # as the session opens it (agent.session._pump): open_source hands the units on
            async with open_source(device_cfg, expected_units=expected_units(cfg)) as source:
                assert isinstance(source, ModbusSource)
                return await take(source, 2)
        finally:
            await pump.stop()

    readings = asyncio.run(main())
    for reading in readings:
        assert reading.channels == ("acc_z",)
        assert reading.values[0, 0] == pytest.approx(41.5e-3)  # before: 41.5 g
        assert reading.units == ("g",)


def test_a_modbus_unit_without_the_key_is_read_as_before() -> None:
    async def main(port: int) -> list[Reading]:
        pump = Pump(port)
        await pump.start()
        try:
            config = ModbusConfig(
                (ModbusRegisterConfig("acc_z", 2, type="float32"),),
                host="127.0.0.1",
                port=port,
                poll_interval_s=0.05,
                timeout_s=0.5,
            )
            device = DeviceConfig(id="fan-acc", kind="equipment", transport="modbus", modbus=config)
            expected = {("machine", "acc_z"): expected_unit()}
            async with ModbusSource(device, expected_units=expected) as source:
                return await take(source, 1)
        finally:
            await pump.stop()

    (reading,) = asyncio.run(main(free_port()))
    assert reading.values[0, 0] == 41.5 and reading.units == ()


# --- serial frames: the config's unit over the HELLO's ---------------------------------------------


def frames_config(tmp_path: Path, units: dict[str, str] | None) -> AgentConfig:
    device: dict[str, Any] = {"serial": {"port": str(tmp_path / "tty-acc")}}
    if units is not None:
        device["units"] = units
    return parse_config(raw_config(tmp_path, device), base_dir=tmp_path)


def hello_axes(unit: str) -> list[EmulatedChannel]:
    """Three 100 Hz axes declaring `unit`, each a constant 4.0 in it."""
    return [
        EmulatedChannel(ChannelSpec(a, unit, SampleType.INT16, 100.0, 0.01), lambda t: 4.0 + 0.0 * t)
        for a in AXES
    ]


def read_frames(pty: PtyDevice, cfg: AgentConfig, unit: str, n: int = 5) -> list[Reading]:
    emulator = SerialDeviceEmulator(pty.master, "acc-node-7", hello_axes(unit), speed=1.0)
    stop = threading.Event()
    thread = threading.Thread(
        target=emulator.run, args=(stop,), kwargs={"answer_commands": True}, daemon=True
    )

    async def main() -> list[Reading]:
        async with SerialSource(cfg.devices[0], expected_units=expected_units(cfg)) as source:
            thread.start()
            return await take(source, n)

    try:
        return asyncio.run(main())
    finally:
        stop.set()
        thread.join(timeout=10)


def test_the_config_wins_over_a_hello_that_disagrees_told_once(
    tmp_path: Path, pty: PtyDevice, caplog: pytest.LogCaptureFixture
) -> None:
    """The HELLO says m/s2, the config says mg: the samples (4.0) are taken in mg, 0.004 g."""
    cfg = frames_config(tmp_path, {"acc_x": "mg"})
    with caplog.at_level(logging.INFO, logger="agent.sources.serial"):
        readings = read_frames(pty, cfg, "m/s2")
    values = np.concatenate([r.values for r in readings])
    np.testing.assert_allclose(values[:, 0], 4.0e-3, rtol=1e-6)  # mg, the config's
    np.testing.assert_allclose(values[:, 1:], 4.0 / G, rtol=1e-6)  # m/s2, the HELLO's
    assert readings[-1].units == ("g", "g", "g")
    disagree = [r.getMessage() for r in caplog.records if "the config wins" in r.getMessage()]
    assert len(disagree) == 1
    assert '"m/s2"' in disagree[0] and '"mg"' in disagree[0] and "units.acc_x" in disagree[0]
    assert PSEUDONYM in disagree[0]


def test_a_hello_that_agrees_with_the_config_in_another_spelling_is_not_told(
    tmp_path: Path, pty: PtyDevice, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = frames_config(tmp_path, {"acc_x": "m/s^2"})
    with caplog.at_level(logging.INFO, logger="agent.sources.serial"):
        readings = read_frames(pty, cfg, "m/s2")
    np.testing.assert_allclose(np.concatenate([r.values for r in readings]), 4.0 / G, rtol=1e-6)
    assert not [r for r in caplog.records if "the config wins" in r.getMessage()]


def test_the_config_declares_what_a_hello_leaves_empty(tmp_path: Path, pty: PtyDevice) -> None:
    cfg = frames_config(tmp_path, {"acc_y": "mg"})
    readings = read_frames(pty, cfg, "")
    values = np.concatenate([r.values for r in readings])
    np.testing.assert_allclose(values[:, 1], 4.0e-3, rtol=1e-6)
    np.testing.assert_allclose(values[:, [0, 2]], 4.0, rtol=1e-6)  # no unit: the detector's, as before


# --- replays keep the units -----------------------------------------------------------------------


def test_a_replayed_recording_of_a_hello_device_is_converted_as_the_live_one(
    tmp_path: Path, pty: PtyDevice
) -> None:
    """`edge-agent record` opens sources without the detectors' units: the HELLO's m/s2 values are
    recorded as they come, with their unit; the replay converts them to the detector's g."""
    live_cfg = frames_config(tmp_path, None)
    recording = tmp_path / "recording"
    recorded = read_frames(pty, replace(live_cfg, detectors=()), "m/s2")  # as `record` reads: no units
    assert recorded[0].units == ("m/s2", "m/s2", "m/s2")
    np.testing.assert_allclose(recorded[0].values, 4.0, rtol=1e-6)
    with ReadingRecorder(recording) as recorder:
        for reading in recorded:
            recorder.write(reading)
    assert '"u":["m/s2","m/s2","m/s2"]' in next(recording.iterdir()).read_text()

    replayed = replay(tmp_path, recording, {}, len(recorded), live_cfg)
    np.testing.assert_allclose(np.concatenate([r.values for r in replayed]), 4.0 / G, rtol=1e-6)
    assert all(r.units == ("g", "g", "g") for r in replayed)
    # the replay device's own `units` win over the recorded ones, as over a HELLO
    mg = replay(tmp_path, recording, {"acc_x": "mg"}, len(recorded), live_cfg)
    np.testing.assert_allclose(np.concatenate([r.values for r in mg])[:, 0], 4.0e-3, rtol=1e-6)


def replay(
    tmp_path: Path, recording: Path, units: dict[str, str], n: int, live: AgentConfig
) -> list[Reading]:
    raw = raw_config(tmp_path, {"transport": "replay", "replay": {"path": str(recording), "speed": 0}})
    raw["detectors"][0]["stream"] = "acc"
    raw["devices"][0].update({"units": units} if units else {})
    cfg = parse_config(raw, base_dir=tmp_path)
    assert expected_units(cfg) == expected_units(live)

    async def main() -> list[Reading]:
        async with open_source(cfg.devices[0], expected_units=expected_units(cfg)) as source:
            return [r async for r in source]

    out = asyncio.run(main())
    assert len(out) == n
    return out


def test_a_recording_without_units_replays_bit_identically(tmp_path: Path) -> None:
    recording = tmp_path / "old"
    reading = Reading("fan-acc/acc", AXES, np.array([[0.1, 0.2, 9.81]]), 1.7e9, 5.0, 0.01)
    with ReadingRecorder(recording) as recorder:
        recorder.write(reading)
    text = next(recording.iterdir()).read_text()
    assert '"u"' not in text  # the line as before the units
    (back,) = read_recording(recording)
    assert back.units == ()
    raw = raw_config(tmp_path, {"transport": "replay", "replay": {"path": str(recording), "speed": 0}})
    raw["detectors"][0]["stream"] = "acc"
    cfg = parse_config(raw, base_dir=tmp_path)

    async def main() -> list[Reading]:
        async with ReplaySource(cfg.devices[0], expected_units=expected_units(cfg)) as source:
            return [r async for r in source]

    (replayed,) = asyncio.run(main())
    assert replayed.values.tobytes() == reading.values.tobytes()


# --- refused before start, naming the key and the device -------------------------------------------


def wiring_problems(tmp_path: Path, device: dict[str, Any], detector_unit: str = "g") -> list[ConfigError]:
    return check_wiring(parse_config(raw_config(tmp_path, device, detector_unit), base_dir=tmp_path))


def test_a_unit_of_another_quantity_is_refused_naming_the_key_device_and_detector(tmp_path: Path) -> None:
    """A vibration velocity ("mm/s") on an axis the detector reads as acceleration: no factor turns
    one into the other, and taking it as g would misjudge it by orders of magnitude."""
    (problem,) = wiring_problems(tmp_path, line_device(tmp_path, "csv", {"acc_x": "g", "acc_z": "mm/s"}))
    assert problem.path == "devices[0].units.acc_z"
    assert '"mm/s"' in problem.problem and '"g"' in problem.problem
    assert "fan-vibration" in problem.problem and "detectors.fan-vibration.params.unit" in problem.problem


def test_a_unit_for_a_channel_the_device_does_not_send_is_refused(tmp_path: Path) -> None:
    (problem,) = wiring_problems(tmp_path, line_device(tmp_path, "jsonl", {"acc_zz": "g"}))
    assert problem.path == "devices[0].units.acc_zz"
    assert 'sends no channel "acc_zz"' in problem.problem and 'did you mean "acc_z"' in problem.problem


def test_a_frames_device_may_declare_any_channel_its_hello_may_name(tmp_path: Path) -> None:
    device = {"serial": {"port": str(tmp_path / "tty-acc")}, "units": {"acc_x": "mg", "temp_c": "g"}}
    assert wiring_problems(tmp_path, device) == []
    wrong = {**device, "units": {"acc_x": "in/s"}}
    assert [p.path for p in wiring_problems(tmp_path, wrong)] == ["devices[0].units.acc_x"]


@pytest.mark.parametrize(
    ("units", "transport", "expected"),
    [
        ({"acc_x": "furlongs"}, "serial", 'devices[0].units.acc_x: unknown unit "furlongs" (one of g, mg,'),
        ({"acc_x": 9.81}, "serial", "devices[0].units.acc_x: expected a string"),
        ({"acc_x": " "}, "serial", "devices[0].units.acc_x: must not be empty"),
        ({"hr": "g"}, "ble", 'devices[0].units: not for transport "ble": its channels\' units are fixed'),
    ],
)
def test_the_loader_refuses_what_is_no_unit_naming_the_key_and_device(
    tmp_path: Path, units: dict[str, Any], transport: str, expected: str
) -> None:
    device: dict[str, Any] = {"serial": {"port": "/dev/null"}, "units": units}
    if transport == "ble":
        device = {"transport": "ble", "ble": {"address": "AA:BB:CC:DD:EE:FF"}, "units": units}
    with pytest.raises(InvalidConfigError) as caught:
        parse_config(raw_config(tmp_path, device), base_dir=tmp_path)
    (problem,) = caught.value.errors  # one line: not also "unknown unit" for an empty one
    assert str(problem).startswith(expected), problem


CHECKED = """
[gateway]
id = "gw-1"
site = "plant"
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:1883"

[outbox]
path = "state/outbox.sqlite"

[[devices]]
id = "fan-acc"
kind = "equipment"
transport = "serial"
units = {{ acc_x = "{unit}" }}
[devices.serial]
port = "/dev/ttyUSB9"
protocol = "csv"
channels = ["acc_x"]
rate_hz = 100

[[detectors]]
id = "fan-vibration"
type = "vibration"
stream = "machine"
channels = ["acc_x"]
rate_hz = 100
params = {{ iso_high_hz = 40 }}

[[alarms]]
condition = "vibration_high"
detector = "fan-vibration"
"""


@pytest.mark.parametrize(("unit", "code"), [("m/s2", 0), ("mm/s", 2)])
def test_check_config_refuses_an_unconvertible_unit_and_passes_a_convertible_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], unit: str, code: int
) -> None:
    from agent.cli import main

    path = tmp_path / "agent.toml"
    path.write_text(CHECKED.format(unit=unit))
    assert main(["check-config", str(path)]) == code
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    if code:
        assert len(err) == 1 and "devices[0].units.acc_x: " in err[0], err
        assert "fan-acc" not in err[0]  # the device is named by its place, never its id
    else:
        assert err == []
