"""A dead MQTT network thread is a technical alarm, not silence (review link F1).

The agent runs in-process against a real, persistent mosquitto with a persistent central subscriber.
While the broker is down, `time.sleep` raises EINVAL in the gateway's paho thread only (what libfaketime
did to the review's agent): paho's reconnect wait ends the thread. The agent must log it once, raise
`uplink_failing` (high), restart the thread, and, the broker back, deliver the alarm's start and end.
Before, the thread died unseen and nothing was ever sent again.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from uplink_probe import Received, Subscriber

from agent.config import load_config
from agent.daemon import Agent
from agent.localbroker import LocalBroker

BrokerFactory = Callable[..., LocalBroker]
GATEWAY = "gw-uf"

CONFIG = """
[gateway]
id = "gw-uf"
site = "lab"
heartbeat_interval_s = 0.5
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:{port}"

[outbox]
path = "state/outbox.sqlite"

[[devices]]
id = "wearable-1"
kind = "wearable"
transport = "simulator"
[devices.simulator]
seed = 2
speed = 5.0

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


class SleepFailsInTheGatewaysPaho:
    """`time.sleep` raising EINVAL in the gateway's paho thread while `failing`; everyone else sleeps."""

    def __init__(self) -> None:
        self.failing = False
        self._real = time.sleep

    def __call__(self, seconds: float) -> None:
        if self.failing and threading.current_thread().name == f"paho-mqtt-client-{GATEWAY}":
            raise OSError(errno.EINVAL, "Invalid argument")
        self._real(seconds)


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


@pytest.fixture
def agent_lines() -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger("agent")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield handler
    logger.setLevel(level)
    logger.removeHandler(handler)


async def until(predicate: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout_s:.0f} s: {what}")


def uplink_failing(messages: list[Received]) -> list[str]:
    return [
        m.json()["phase"]
        for m in messages
        if m.topic.endswith("/alarm") and m.json()["condition"] == "uplink_failing"
    ]


def test_a_dead_network_thread_raises_uplink_failing_and_the_agent_delivers_again(
    tmp_path: Path, make_broker: BrokerFactory, agent_lines: Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleep = SleepFailsInTheGatewaysPaho()
    monkeypatch.setattr(time, "sleep", sleep)
    broker = make_broker(persistence=True)
    central = Subscriber(broker, "edge/#", client_id="central", persistent=True)
    path = tmp_path / "agent.toml"
    path.write_text(CONFIG.format(port=broker.port))
    agent = Agent(load_config(path))

    def logged(text: str) -> bool:
        return any(text in line for line in agent_lines.lines)

    async def main() -> None:
        task = asyncio.create_task(agent.run())
        try:
            await until(lambda: logged("connected to 127.0.0.1"), "the first connection")
            sleep.failing = True
            await asyncio.to_thread(broker.stop)  # paho's reconnect wait now raises EINVAL
            await until(lambda: logged("MQTT network thread stopped"), "the death told")
            await until(lambda: logged("alarm start high uplink_failing"), "uplink_failing raised")
            sleep.failing = False
            await asyncio.to_thread(broker.start)
            await asyncio.to_thread(central.wait_for, lambda m: uplink_failing(m) == ["start", "end"], 40)
        finally:
            agent.stopping.set()
            await asyncio.wait_for(task, 30)

    try:
        asyncio.run(main())
    finally:
        central.close()
    alarms = [m.json() for m in central.snapshot() if m.topic.endswith("/alarm")]
    start = next(a for a in alarms if a["condition"] == "uplink_failing")
    assert (start["priority"], start["kind"], start["stream"]) == ("high", "technical", "uplink")
    assert "network thread stopped" in start["explanation"]["text"]
    errors = [line for line in agent_lines.lines if line.startswith("ERROR") and "network thread" in line]
    assert len(errors) == 1, errors  # once, however often it died meanwhile
    assert "Invalid argument" in errors[0] and "restarting it" in errors[0]
