"""The disk under the outbox fills up while the agent runs (an SD card full of logs): no alarm is lost.

The real agent runs with a simulated wearable whose tachycardia starts and ends while its files may
not grow: the process's file-size limit (RLIMIT_FSIZE, set with `prlimit` on the running process) is
lowered to 1 KiB once it is connected, so every outbox commit fails the way SQLite fails on a full
disk. The agent must keep running, hold the episode's START and END in memory and say so in its
log and status, then deliver both, and its `outbox_unwritable` technical alarm, once the limit is
lifted. Before this, the first failed commit ended the agent (with exit status 0, so systemd's
Restart=on-failure did not even restart it) and the events of that turn were gone.
"""

from __future__ import annotations

import asyncio
import json
import resource
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from daemon_session import session
from paho.mqtt.enums import CallbackAPIVersion
from test_operator_errors import AgentRun, status_json
from waiting import wait_until

from agent.daemon import Agent
from agent.localbroker import LocalBroker

CONFIG = """
[gateway]
id = "gw-disk"
site = "lab"
heartbeat_interval_s = 1
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:{port}"

[outbox]
path = "state/outbox.sqlite"

[[devices]]
id = "monitor-bed-5"
kind = "wearable"
transport = "simulator"
[devices.simulator]
seed = 5
speed = 20.0
episodes = [{{ condition = "tachycardia", start_s = 200, duration_s = 120 }}]

[[detectors]]
id = "hr-high"
type = "limit"
stream = "vitals"
channels = ["hr"]
params = {{ above = 120 }}

[[alarms]]
condition = "tachycardia"
detector = "hr-high"
priority = "medium"
min_duration_s = 5
clear_after_s = 5
"""


class Central:
    """A subscriber to the gateway's alarm topic, keeping (condition, phase) of what arrives."""

    def __init__(self, broker: LocalBroker) -> None:
        self.alarms: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *_: c.subscribe("edge/lab/gw-disk/alarm", qos=1)
        self.client.on_subscribe = lambda *_: ready.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert ready.wait(10), "the central subscriber could not subscribe"

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        payload = json.loads(msg.payload)
        with self._lock:
            self.alarms.append((payload["condition"], payload["phase"]))

    def of(self, condition: str) -> list[str]:
        with self._lock:
            return [phase for c, phase in self.alarms if c == condition]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _file_size_limit(pid: int, soft: int) -> None:
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, resource.RLIM_INFINITY))


def _until(predicate: Callable[[], bool], agent: AgentRun, what: str, timeout_s: float = 30.0) -> None:
    wait_until(lambda: predicate() or agent.proc.poll() is not None, timeout_s, what)
    assert agent.proc.poll() is None, "the agent stopped:\n" + "\n".join(agent.lines[-30:])


def test_a_full_disk_holds_the_alarms_in_memory_and_loses_none_once_space_is_back(
    make_broker: Callable[..., LocalBroker], tmp_path: Path
) -> None:
    broker = make_broker()
    central = Central(broker)
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG.format(port=broker.port))
    agent = AgentRun(config)
    try:
        agent.wait_for("connected to")
        _file_size_limit(agent.proc.pid, 1024)  # the disk is full from now on

        # The episode (10 s in at 20x speed) starts and ends while nothing can be written.
        agent.wait_for("cannot write the outbox")
        _until(lambda: status_json(config)["outbox"]["held_in_memory"] >= 2, agent, "START and END held")
        assert central.of("tachycardia") == []
        told = "".join(agent.having("cannot write the outbox"))
        assert "alarm event(s) held in memory" in told
        assert "disk" in told and "cannot rollback" not in told  # SQLite's own words, not a follow-on error

        _file_size_limit(agent.proc.pid, resource.RLIM_INFINITY)  # space is back
        _until(lambda: central.of("tachycardia") == ["start", "end"], agent, "the held episode delivered")
        _until(lambda: central.of("outbox_unwritable") == ["start", "end"], agent, "outbox_unwritable")
        assert agent.having("takes writes again")
        assert status_json(config)["outbox"]["held_in_memory"] == 0
        assert agent.stop() == 0
    finally:
        central.close()
        if agent.proc.poll() is None:
            agent.proc.kill()


def test_a_worker_that_ends_on_its_own_makes_the_agent_exit_with_a_failure(tmp_path: Path) -> None:
    """systemd's Restart=on-failure restarts only a failure: a worker that ends must not mean exit 0."""
    run = session(tmp_path)
    agent = Agent(run.cfg)

    async def worker_that_fails() -> None:
        raise RuntimeError("a bug")

    async def main() -> None:
        task = asyncio.create_task(worker_that_fails(), name="heartbeats")
        await run._until_stop_or_accepted_reload(agent, [task])

    asyncio.run(main())
    assert agent.stopping.is_set()
    assert agent.failed == "heartbeats"
