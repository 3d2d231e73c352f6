"""Source counters reach the device health: the daemon with a real serial device on a pseudo-terminal
that sends garbage between frames (or DATA without ever a HELLO), read back over the status socket
(what `edge-agent status` reads) and rendered as `edge-agent status` prints it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from src_pty import PtyDevice

from agent.config import load_config
from agent.daemon import Agent
from agent.localbroker import LocalBroker
from agent.status import LAST_HEARTBEAT, read_status, render
from firmware_bridge import encode_frame
from firmware_bridge.emulator import FaultPlan
from firmware_bridge.frame_messages import DataBlock, SampleType

DEADLINE_S = 15.0

CONFIG = """
[gateway]
id = "gw-serial"
site = "lab"
heartbeat_interval_s = 0.3
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:{port}"

[outbox]
path = "state/outbox.sqlite"

[[devices]]
id = "bed-7-monitor"
kind = "wearable"
transport = "serial"
[devices.serial]
port = "{link}"

[[detectors]]
id = "hr-high"
type = "limit"
stream = "vitals"
channels = ["hr"]
params = {{ above = 120 }}

[[alarms]]
condition = "tachycardia"
detector = "hr-high"
"""

Device = dict[str, Any]


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[PtyDevice]:
    dev = PtyDevice(tmp_path / "usb-Acme_Monitor_0001-if00-port0")
    yield dev
    dev.unplug()


async def device_health(state_dir: Path, until: Callable[[Device], bool]) -> Device:
    """The device's entry in the live status's last heartbeat, once `until` holds for it."""
    return (await live_status(state_dir, until))["heartbeat"]["devices"][0]  # type: ignore[no-any-return]


async def live_status(state_dir: Path, until: Callable[[Device], bool]) -> dict[str, Any]:
    """The live status, once `until` holds for its last heartbeat's (first) device."""
    last: Device = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while loop.time() < deadline:
        status = await asyncio.to_thread(read_status, state_dir)
        if status is not None and status.source == "live":
            devices = status.status["heartbeat"].get("devices", [])
            if devices:
                last = devices[0]
                if until(last):
                    return status.status
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition never held within {DEADLINE_S} s; last device health: {last}")


def rejected(device: Device) -> int:
    """The bad-frame kinds of a frames device's errors."""
    kinds = ("truncated", "bad_crc", "oversized", "bad_version", "bad_payload", "bad_blocks")
    return sum(device["errors"].get(kind, 0) for kind in kinds)


def test_heartbeat_and_status_carry_the_serial_sources_bad_frames_and_link_state(
    pty: PtyDevice, mosquitto: LocalBroker, tmp_path: Path
) -> None:
    pty.plug()
    config_file = tmp_path / "agent.toml"
    config_file.write_text(CONFIG.format(port=mosquitto.port, link=pty.link))
    config = load_config(config_file)
    state_dir = config.gateway.state_dir
    agent = Agent(config)

    async def scenario() -> None:
        # A garbage burst before every 3rd frame: the decoder rejects and resynchronises.
        emulator = pty.start(faults=FaultPlan(garbage_every=3, garbage_size=16, seed=1))
        flowing = await device_health(state_dir, lambda d: d["bad_frames"] > 0 and d["rate_hz"] > 0)
        assert flowing["connected"] is True
        assert flowing["device"].startswith("d-") and flowing["device"] != "bed-7-monitor"
        assert flowing["reconnects"] == 0
        assert emulator.counters.garbage_bytes > 0
        assert "desaturation_index_per_h" not in flowing  # no spo2_desaturation detector configured
        assert rejected(flowing) == flowing["bad_frames"]  # the kinds break the total down

        pty.unplug()  # the device's end of the pty goes away: EIO, the source closes its port
        lost = await device_health(state_dir, lambda d: d["connected"] is False)
        assert lost["bad_frames"] >= flowing["bad_frames"]  # counts survive the lost link

        pty.plug()  # the stable link now points at a new pty; the source reopens it
        pty.start()
        back = await device_health(state_dir, lambda d: d["connected"] is True and d["reconnects"] == 1)
        assert back["bad_frames"] >= lost["bad_frames"]
        assert rejected(back) == back["bad_frames"] and back["errors"]["link_failures"] == 1

    async def main() -> None:
        runner = asyncio.create_task(agent.run())
        try:
            await scenario()
        finally:
            agent.stopping.set()
            await runner

    asyncio.run(main())


def test_a_device_that_sends_data_but_no_hello_shows_its_dropped_frames_in_heartbeat_and_status(
    pty: PtyDevice, mosquitto: LocalBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Firmware that announces itself only at boot, after a gateway restart: it streams DATA and ignores
    SEND_HELLO. Every frame is dropped; before, the device read 'connected, bad frames 0' and nothing
    said why no reading came (audit auddev, finding 7)."""
    pty.plug()
    config_file = tmp_path / "agent.toml"
    config_file.write_text(CONFIG.format(port=mosquitto.port, link=pty.link))
    config = load_config(config_file)
    state_dir = config.gateway.state_dir
    agent = Agent(config)
    caplog.set_level(logging.INFO, logger="agent.sources.serial")
    stop = threading.Event()

    def firmware() -> None:  # never reads its input, so never answers SEND_HELLO
        seq = 0
        while not stop.wait(0.05):
            block = DataBlock(seq * 50_000, SampleType.INT16, (1, 2), np.array([[720, 975]]))
            pty.write(encode_frame(block, seq, seq * 50_000))
            seq += 1

    async def scenario() -> None:
        await live_status(state_dir, lambda d: d["connected"] is True)  # the port is open: bytes stay
        sender = threading.Thread(target=firmware, daemon=True)
        sender.start()
        try:
            status = await live_status(state_dir, lambda d: d.get("errors", {}).get("waiting_hello", 0) >= 80)
        finally:
            stop.set()
            sender.join()
        (health,) = status["heartbeat"]["devices"]
        assert health["last_seen"] is None and health["bad_frames"] == 0  # dropped, not rejected
        assert set(health["errors"]) == {"waiting_hello"}  # only the kinds that happened
        text = render("live", status)
        assert f"    errors since start: waiting_hello {health['errors']['waiting_hello']}" in text
        assert "DATA arrives but no HELLO" in text
        told = [r.getMessage() for r in caplog.records if "no HELLO" in r.getMessage()]
        assert len(told) == 1 and "they are dropped (errors waiting_hello)" in told[0]

    async def main() -> None:
        runner = asyncio.create_task(agent.run())
        try:
            await scenario()
        finally:
            agent.stopping.set()
            await runner

    asyncio.run(main())


async def next_heartbeat(state_dir: Path, after: str | None, deadline_s: float = 15.0) -> dict[str, Any]:
    """The first heartbeat the agent wrote (the file `edge-agent status` falls back to) after the one at
    time `after`. (The live status shows figures of the moment until the first heartbeat.)"""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while loop.time() < deadline:
        with contextlib.suppress(OSError, ValueError):
            beat: dict[str, Any] = json.loads((state_dir / LAST_HEARTBEAT).read_text())
            if beat["time"] != after:
                return beat
        await asyncio.sleep(0.02)
    raise AssertionError(f"no heartbeat after {after} within {deadline_s} s")


def test_rate_after_a_reconnect_is_over_the_time_the_device_was_connected(
    pty: PtyDevice, mosquitto: LocalBroker, tmp_path: Path
) -> None:
    """A device unplugged for 1 s of a 5 s heartbeat interval and reopened some seconds later: its rate
    is its real one, not its readings spread over the whole interval (audit auddev: 0.40/s for a 1 Hz
    device 7 s after reopening)."""
    pty.plug()
    config_file = tmp_path / "agent.toml"
    config_file.write_text(
        CONFIG.format(port=mosquitto.port, link=pty.link).replace(
            "heartbeat_interval_s = 0.3", "heartbeat_interval_s = 5"
        )
    )
    config = load_config(config_file)
    state_dir = config.gateway.state_dir
    agent = Agent(config)

    async def scenario() -> None:
        # Five times real time: 55 readings a second (vitals at 1 Hz and ECG in 0.1 s blocks, device
        # time), which the emulator writes in bursts; faster bursts, so a few seconds hold many.
        pty.start(speed=5.0)
        first = await next_heartbeat(state_dir, None)
        full = await next_heartbeat(state_dir, first["time"])  # connected all along
        (steady,) = full["devices"]
        assert steady["connected"] and 45.0 < steady["rate_hz"] < 65.0
        pty.unplug()  # just after a heartbeat
        await asyncio.sleep(1.0)
        pty.plug()
        pty.start(speed=5.0)
        after = await next_heartbeat(state_dir, full["time"])
        (device,) = after["devices"]
        assert device["reconnects"] == 1 and device["connected"]
        # Readings over the seconds connected (seen: 96-100 % of the steady rate); before, over all
        # 5 s: 76 %.
        assert 0.88 * steady["rate_hz"] < device["rate_hz"] < 1.15 * steady["rate_hz"], (steady, device)

    async def main() -> None:
        runner = asyncio.create_task(agent.run())
        try:
            await scenario()
        finally:
            agent.stopping.set()
            await runner

    asyncio.run(main())
