"""A configuration with no alarm rule, or no detector, can alarm on nothing but technical alarms: check-config
and every session's start (a start or a reload) say so in a warning (new-user review M2: check-config said
"ok — 2 detector(s), 0 alarm rule(s)" and the agent logged nothing). A warning, not a refusal: a gateway
may forward technical alarms only while its rules are written."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import load_config
from agent.daemon import Agent
from agent.localbroker import LocalBroker
from agent.status import read_status

CONFIG = """
[gateway]
id = "gw-quiet"
site = "lab"
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:{port}"

[outbox]
path = "state/outbox.sqlite"

[[devices]]
id = "bed-9"
kind = "wearable"
transport = "simulator"
"""

DETECTOR = """
[[detectors]]
id = "hr-high"
type = "limit"
stream = "vitals"
channels = ["hr"]
params = { above = 120 }
"""

RULE = """
[[alarms]]
condition = "tachycardia"
detector = "hr-high"
"""

NO_RULE = "1 detector(s) but no [[alarms]] rule: their scores start no alarm, only technical alarms"
NO_DETECTOR = "no [[detectors]] and so no alarm rule: only technical alarms"


def write(tmp_path: Path, port: int, body: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(CONFIG.format(port=port) + body)
    return path


@pytest.mark.parametrize(("body", "told"), [(DETECTOR, NO_RULE), ("", NO_DETECTOR), (DETECTOR + RULE, None)])
def test_check_config_warns_when_nothing_can_alarm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, told: str | None
) -> None:
    path = write(tmp_path, 1883, body)
    assert main(["check-config", str(path)]) == 0  # still ok: a warning
    out, err = capsys.readouterr()
    assert out.startswith(f"{path}: ok")
    if told is None:
        assert "warning" not in err
    else:
        assert f"{path}: warning: {told}" in err


def test_the_session_start_warns_when_nothing_can_alarm(
    mosquitto: LocalBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(write(tmp_path, mosquitto.port, DETECTOR))
    config.gateway.state_dir.mkdir(parents=True, exist_ok=True)
    agent = Agent(config)

    async def run_until_live() -> None:
        runner = asyncio.create_task(agent.run())
        try:
            async with asyncio.timeout(15):
                while (status := await asyncio.to_thread(read_status, config.gateway.state_dir)) is None or (
                    status.source != "live"
                ):
                    assert not runner.done()
                    await asyncio.sleep(0.05)
        finally:
            agent.stopping.set()
            await runner

    with caplog.at_level(logging.WARNING, logger="agent"):
        asyncio.run(run_until_live())
    assert f"session 1: {NO_RULE}" in caplog.text
