"""Source counters reach the device health: the daemon with a real serial device on a pseudo-terminal
that sends garbage between frames, read back over the status socket (what `edge-agent status` reads)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from src_pty import PtyDevice

from agent.config import load_config
from agent.daemon import Agent
from agent.localbroker import LocalBroker
from agent.status import read_status
from firmware_bridge.emulator import FaultPlan

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
    last: Device = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while loop.time() < deadline:
        status = await asyncio.to_thread(read_status, state_dir)
        if status is not None and status[0] == "live":
            devices = status[1]["heartbeat"].get("devices", [])
            if devices:
                last = devices[0]
                if until(last):
                    return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition never held within {DEADLINE_S} s; last device health: {last}")


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

        pty.unplug()  # the device's end of the pty goes away: EIO, the source closes its port
        lost = await device_health(state_dir, lambda d: d["connected"] is False)
        assert lost["bad_frames"] >= flowing["bad_frames"]  # counts survive the lost link

        pty.plug()  # the stable link now points at a new pty; the source reopens it
        pty.start()
        back = await device_health(state_dir, lambda d: d["connected"] is True and d["reconnects"] == 1)
        assert back["bad_frames"] >= lost["bad_frames"]

    async def main() -> None:
        runner = asyncio.create_task(agent.run())
        try:
            await scenario()
        finally:
            agent.stopping.set()
            await runner

    asyncio.run(main())
