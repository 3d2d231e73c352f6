"""A detector reading a channel its serial device does not declare raises a technical alarm.

A frames device declared acc_x, acc_y, acc_z in its HELLO; the config's vibration detector read
["acc_x", "acc_y", "acc_w"] (one typo). check-config cannot know a HELLO's channels; the daemon logged
one WARNING, the detector saw acc_w as missing and judged nothing: 4.0 mm/s for 52 s raised no alarm
of any kind (new-user review S3). Now the device stream gets the technical alarm `channel_missing`,
naming the detector, the channel and what the device sends, once it has been blind for `GRACE_S`; it
ends after a reload with the fixed config. Real pseudo-terminal, firmware_bridge emulator, broker and
daemon (`Agent`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from src_pty import PtyDevice
from uplink_probe import Received, Subscriber

from agent.config import load_config
from agent.daemon import Agent
from agent.localbroker import LocalBroker
from agent.pipeline.blind import GRACE_S
from firmware_bridge.emulator import EmulatedChannel, SerialDeviceEmulator
from firmware_bridge.frame_messages import ChannelSpec, SampleType

RATE = 400.0
PORT_NAME = "usb-Acme_Vib_0042-if00-port0"
DEVICE_ID = "pump1-vib-0042"
TYPO = ("acc_x", "acc_y", "acc_w")
RIGHT = ("acc_x", "acc_y", "acc_z")
# From the daemon's start: the port opens at once, GRACE_S of blindness, a monitor tick, delivery.
STARTS_WITHIN_S = GRACE_S + 8.0

CONFIG = """\
[gateway]
id = "gw-pumproom"
site = "plant"
heartbeat_interval_s = 60
state_dir = "{state}"

[mqtt]
url = "mqtt://127.0.0.1:{port}"

[outbox]
path = "{state}/outbox.sqlite"

[[devices]]
id = "{device}"
kind = "equipment"
transport = "serial"
[devices.serial]
port = "{link}"
protocol = "frames"

[[detectors]]
id = "vib"
type = "vibration"
stream = "acc"
channels = [{channels}]
rate_hz = {rate}
params = {{ machine_class = "II", unit = "g" }}

[[alarms]]
condition = "vibration_zone_c"
detector = "vib"
priority = "high"
min_duration_s = 10
unit = "mm/s"
"""


def write_config(path: Path, tmp_path: Path, port: int, link: Path, channels: tuple[str, ...]) -> None:
    path.write_text(
        CONFIG.format(
            state=tmp_path / "state",
            port=port,
            device=DEVICE_ID,
            link=link,
            channels=", ".join(f'"{c}"' for c in channels),
            rate=RATE,
        )
    )


def accelerometer() -> list[EmulatedChannel]:
    """acc_x, acc_y, acc_z in g: the review's 50 Hz tone of 4.0 mm/s RMS (zone C, class II) on x and y,
    gravity on z."""
    peak_g = 4.0e-3 * 2 * np.pi * 50 * np.sqrt(2) / 9.80665

    def tone(phase: float) -> Any:
        return lambda t: peak_g * np.sin(2 * np.pi * 50 * t + phase)

    gens = (tone(0.0), tone(1.0), lambda t: 1.0 + 0.0 * t)
    return [
        EmulatedChannel(ChannelSpec(name, "g", SampleType.INT16, RATE, 1e-4), gen)
        for name, gen in zip(RIGHT, gens, strict=True)
    ]


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[PtyDevice]:
    dev = PtyDevice(tmp_path / PORT_NAME)
    dev.plug()
    yield dev
    dev.unplug()


def blind_events(messages: list[Received]) -> list[dict[str, Any]]:
    return [
        m.json()
        for m in messages
        if m.topic.endswith("/alarm") and m.json()["condition"] == "channel_missing"
    ]


def run_daemon(
    pty: PtyDevice,
    config_file: Path,
    broker: LocalBroker,
    until: Any,
    timeout_s: float,
    fixed: Path | None = None,
    until_fixed: Any = None,
    linger_s: float = 0.0,
    fixed_timeout_s: float = 30.0,
) -> tuple[list[Received], float]:
    """Run the daemon on `config_file` with the emulated device until `until(messages)` (or
    `timeout_s`), then `linger_s` more; with `fixed`, then copy that config over and reload, until
    `until_fixed`. Returns the messages and the seconds from the start to `until`."""
    agent = Agent(load_config(config_file))
    central = Subscriber(broker, "edge/#")
    emulator = SerialDeviceEmulator(pty.master, "vib-sn-001", accelerometer(), block_seconds=0.1)
    stop = threading.Event()
    thread = threading.Thread(
        target=emulator.run, args=(stop,), kwargs={"answer_commands": True}, daemon=True
    )
    took = float("nan")

    async def main() -> list[Received]:
        nonlocal took
        runner = asyncio.create_task(agent.run())
        try:
            thread.start()
            loop = asyncio.get_running_loop()
            start = loop.time()
            try:
                messages = await asyncio.to_thread(central.wait_for, until, timeout_s)
            except TimeoutError:
                messages = central.snapshot()
            took = loop.time() - start
            if linger_s:
                await asyncio.sleep(linger_s)
                messages = central.snapshot()
            if fixed is not None:
                config_file.write_text(fixed.read_text())
                agent.reloading.set()
                try:
                    messages = await asyncio.to_thread(central.wait_for, until_fixed, fixed_timeout_s)
                except TimeoutError:
                    messages = central.snapshot()
            return messages
        finally:
            agent.stopping.set()
            await runner

    try:
        messages = asyncio.run(main())
    finally:
        stop.set()
        thread.join(timeout=10)
        central.close()
    return messages, took


def test_a_typo_against_the_hello_raises_channel_missing_and_a_fixing_reload_ends_it(
    tmp_path: Path, pty: PtyDevice, mosquitto: LocalBroker, caplog: pytest.LogCaptureFixture
) -> None:
    config_file, fixed = tmp_path / "agent.toml", tmp_path / "fixed.toml"
    write_config(config_file, tmp_path, mosquitto.port, pty.link, TYPO)
    write_config(fixed, tmp_path, mosquitto.port, pty.link, RIGHT)

    def started(messages: list[Received]) -> bool:
        return any(e["phase"] == "start" for e in blind_events(messages))

    def ended(messages: list[Received]) -> bool:
        return any(e["phase"] == "end" for e in blind_events(messages))

    with caplog.at_level(logging.INFO):
        messages, took = run_daemon(pty, config_file, mosquitto, started, 40.0, fixed, ended)
    events = blind_events(messages)
    start = next(e for e in events if e["phase"] == "start")
    assert took <= STARTS_WITHIN_S
    assert start["kind"] == "technical"
    assert start["stream"] == "acc"
    assert start["priority"] == "high"  # the priority of the vibration rule it blinds
    text = start["explanation"]["text"]
    assert 'detector vib reads channel "acc_w"' in text
    assert "it sends acc_x, acc_y, acc_z" in text
    assert 'did you mean "acc_' in text
    assert "detectors.vib.channels" in text
    assert any(e["phase"] == "end" for e in events)  # after the reload with the fixed config
    assert [e["phase"] for e in events] == ["start", "end"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    told = [line for line in errors if '"acc_w"' in line]
    assert len(told) == 1
    assert "fix detectors.vib.channels" in told[0]
    # Privacy: the device is named by its pseudonym, never by its id or port path (in the line as
    # formatted, before the log's redaction, which is a safety net only).
    for line in (told[0], text):
        assert DEVICE_ID not in line and PORT_NAME not in line, line
    assert "device d-" in told[0]


def test_the_right_channels_raise_no_channel_missing_and_the_vibration_alarms(
    tmp_path: Path, pty: PtyDevice, mosquitto: LocalBroker
) -> None:
    """The control: the same device and config with the right names alarms on the vibration (the
    detector judges), and no channel_missing comes in the time it would have started in."""
    config_file = tmp_path / "agent.toml"
    write_config(config_file, tmp_path, mosquitto.port, pty.link, RIGHT)

    def judged_past_the_grace(messages: list[Received]) -> bool:
        return bool(blind_events(messages)) or (
            any(m.topic.endswith("/alarm") and m.json()["condition"] == "vibration_zone_c" for m in messages)
        )

    linger_s = 5.0
    messages, took = run_daemon(pty, config_file, mosquitto, judged_past_the_grace, 40.0, linger_s=linger_s)
    assert blind_events(messages) == []
    assert any(m.topic.endswith("/alarm") and m.json()["condition"] == "vibration_zone_c" for m in messages)
    assert took + linger_s > GRACE_S + 4  # channel_missing would have come by now


def test_a_reload_that_keeps_the_typo_keeps_the_episode_open(
    tmp_path: Path, pty: PtyDevice, mosquitto: LocalBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """The next session goes on with the restored episode while the stream is still blind: no END and
    no new START after another grace (a reload of an unrelated change must not flap the alarm)."""
    config_file, other = tmp_path / "agent.toml", tmp_path / "other.toml"
    write_config(config_file, tmp_path, mosquitto.port, pty.link, TYPO)
    write_config(other, tmp_path, mosquitto.port, pty.link, TYPO)
    other.write_text(other.read_text().replace("heartbeat_interval_s = 60", "heartbeat_interval_s = 30"))

    def started(messages: list[Received]) -> bool:
        return any(e["phase"] == "start" for e in blind_events(messages))

    def ended(messages: list[Received]) -> bool:
        return any(e["phase"] == "end" for e in blind_events(messages))

    with caplog.at_level(logging.INFO):
        messages, _ = run_daemon(
            pty, config_file, mosquitto, started, 40.0, other, ended, fixed_timeout_s=GRACE_S + 6
        )
    assert any("session 2:" in r.getMessage() for r in caplog.records)  # the reload happened
    assert [e["phase"] for e in blind_events(messages)] == ["start"]
