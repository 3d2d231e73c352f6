"""Damaged files in the state folder cost what they held, not the gateway: a saved pipeline.json that is
valid JSON but cannot be restored (wrong types after a version change or a hand edit) and a damaged
outbox are set aside, and the agent starts fresh. Before, both stopped the session's start: the agent
never ran, and systemd restarted it into the same files."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from agent.config import AgentConfig, load_config
from agent.daemon import Agent
from agent.localbroker import LocalBroker
from agent.status import read_status

CONFIG = """
[gateway]
id = "gw-restore"
site = "lab"
heartbeat_interval_s = 0.3
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:{port}"

[outbox]
path = "state/outbox.sqlite"

[[devices]]
id = "bed-9"
kind = "wearable"
transport = "simulator"

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


def agent_config(tmp_path: Path, port: int) -> AgentConfig:
    """The config above against the broker on `port`, with its state folder made."""
    config_file = tmp_path / "agent.toml"
    config_file.write_text(CONFIG.format(port=port))
    config = load_config(config_file)
    config.gateway.state_dir.mkdir(parents=True, exist_ok=True)
    return config


def run_until_live(config: AgentConfig) -> None:
    """Run the agent until it serves its live status (it started), then stop it."""
    agent = Agent(config)
    state_dir = config.gateway.state_dir

    async def main() -> None:
        runner = asyncio.create_task(agent.run())
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15.0
            while loop.time() < deadline and not runner.done():
                status = await asyncio.to_thread(read_status, state_dir)
                if status is not None and status.source == "live":
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"the agent never served its status; runner done: {runner.done()}")
        finally:
            agent.stopping.set()
            await runner

    asyncio.run(main())


WRONG_SHAPES = {
    "alarm_row_text": {
        "alarms": {
            "hr-high/tachycardia": {"condition": "tachycardia", "streams": [{"device": "d", "history": "x"}]}
        }
    },
    "alarms_a_list": {"alarms": [1, 2, 3]},
    "detectors_a_number": {"detectors": 7},
}


@pytest.mark.parametrize("name", list(WRONG_SHAPES))
def test_a_state_that_cannot_be_restored_is_set_aside_and_the_agent_runs(
    name: str, mosquitto: LocalBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = agent_config(tmp_path, mosquitto.port)
    state_dir = config.gateway.state_dir
    damaged = json.dumps(WRONG_SHAPES[name]).encode()
    (state_dir / "pipeline.json").write_bytes(damaged)
    with caplog.at_level(logging.ERROR, logger="agent.state"):
        run_until_live(config)
    assert (state_dir / "pipeline.json.unreadable").read_bytes() == damaged  # kept, byte for byte
    assert "cannot be restored" in caplog.text and "fresh state" in caplog.text
    saved = json.loads((state_dir / "pipeline.json").read_text())  # the fresh session saved its own
    assert saved["detectors"]["hr-high"]["type"] == "limit"


def test_one_detectors_state_that_does_not_fit_costs_that_detector_only(
    mosquitto: LocalBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A detector's saved state of the wrong shape: it starts fresh, the file is not set aside (audit audml,
    finding 2: the other detectors' baselines and the open episodes were lost with it)."""
    config = agent_config(tmp_path, mosquitto.port)
    state_dir = config.gateway.state_dir
    damaged = {"detectors": {"hr-high": {"type": "limit", "id": "hr-high", "threshold": "high"}}}
    (state_dir / "pipeline.json").write_text(json.dumps(damaged))
    with caplog.at_level(logging.WARNING):
        run_until_live(config)
    assert not (state_dir / "pipeline.json.unreadable").exists()
    assert "detector hr-high: its saved state does not fit it" in caplog.text
    saved = json.loads((state_dir / "pipeline.json").read_text())
    assert saved["detectors"]["hr-high"]["threshold"] == 0.0  # the configured one again (not "high")


def test_a_damaged_outbox_is_set_aside_and_the_agent_runs(
    mosquitto: LocalBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = agent_config(tmp_path, mosquitto.port)
    state_dir = config.gateway.state_dir
    (state_dir / "outbox.sqlite").write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 64)  # garbage
    with caplog.at_level(logging.ERROR, logger="agent.outbox"):
        run_until_live(config)  # it used to stop at start, naming the file, and systemd to restart it
    (aside,) = state_dir.glob("outbox.sqlite.damaged-*")
    assert aside.read_bytes().startswith(b"SQLite format 3\x00") and "is damaged" in caplog.text
