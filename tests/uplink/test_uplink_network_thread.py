"""paho's network thread ends on any exception but the OSError it retries on; the uplink must notice,
say so once, and start it again, or no alarm is ever sent and nothing says why.

The trigger is the one the uplink review met (review link F1): under libfaketime with
FAKETIME_DONT_FAKE_MONOTONIC=1, `time.sleep` raised EINVAL in paho's reconnect wait, and the thread
died silently; the agent ran on, DISCONNECTED with no problem told, and never reconnected. Here
`time.sleep` raises EINVAL in paho's threads only (the test's own sleeps are untouched). Real mosquitto.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from ports import RefusingPort
from uplink_probe import mqtt_config

from agent.config.schema import OutboxConfig
from agent.localbroker import LocalBroker
from agent.outbox import Kind, Outbox, OutboxItem
from agent.uplink.mqtt import MqttUplink
from agent.uplink.topics import Topics

BrokerFactory = Callable[..., LocalBroker]
TOPICS = Topics("edge", "site1", "gw1")
LOGGER = "agent.uplink.mqtt"


@dataclass(frozen=True)
class Address:
    host: str
    port: int


class SleepFailsInPaho:
    """`time.sleep` that raises EINVAL in paho's network threads while `failing` (as libfaketime's did)."""

    def __init__(self) -> None:
        self.failing = True
        self.raised = 0
        self._real = time.sleep

    def __call__(self, seconds: float) -> None:
        if self.failing and threading.current_thread().name.startswith("paho-mqtt-client-"):
            self.raised += 1
            raise OSError(errno.EINVAL, "Invalid argument")
        self._real(seconds)


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not condition():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {timeout_s:.0f} s: {what}") from None


def test_a_network_thread_that_dies_is_told_once_restarted_and_delivers_once_the_broker_is_back(
    make_broker: BrokerFactory,
    refusing_port: RefusingPort,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sleep = SleepFailsInPaho()
    monkeypatch.setattr(time, "sleep", sleep)
    outbox = Outbox(OutboxConfig(tmp_path / "o.db"))
    outbox.put(OutboxItem("a1", TOPICS.alarm, json.dumps({"id": "a1"}).encode(), Kind.ALARM, 0, 0.0))
    config = mqtt_config(Address("127.0.0.1", refusing_port.port))
    uplink = MqttUplink(config, TOPICS, outbox, 1, poll_s=0.1, backoff_min_s=0.05, backoff_max_s=0.2)

    async def main() -> None:
        task = asyncio.create_task(uplink.run())
        try:
            # getattr: before the fix the uplink had no such flag, and the wait timed out either way
            await until(lambda: getattr(uplink, "network_failed", False), "the dead network thread noticed")
            # Status tells the last failure: this death, or the refused attempt of a restarted thread.
            await until(lambda: "network thread" in (uplink.counters().problem or ""), "status says why")
            assert "Invalid argument" in (uplink.counters().problem or "")
            await until(lambda: sleep.raised >= 3, "the thread restarted (and dead again) twice")
            sleep.failing = False
            await until(lambda: uplink.counters().failed_attempts >= 5, "a restarted thread retrying")
            await asyncio.to_thread(make_broker, port=refusing_port.release())
            await until(lambda: outbox.depth() == 0, "the waiting alarm delivered")
            assert not uplink.network_failed and uplink.counters().problem is None
        finally:
            await uplink.stop(timeout_s=1.0)
            await asyncio.wait_for(task, 10)

    with caplog.at_level(logging.INFO, logger=LOGGER):
        asyncio.run(main())
    errors = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]  # once, not once per death
    (error,) = errors
    assert "network thread" in error.getMessage() and "restart" in error.getMessage()
    assert error.exc_info is not None  # the traceback once, for a bug report
    assert uplink.counters().delivered == 1
