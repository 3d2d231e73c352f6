"""The daemon under a service manager: READY and WATCHDOG over NOTIFY_SOCKET, `status`, SIGHUP reload
(a bad file refused, a good one taken, its clean offline saying "reload"), SIGTERM ending with a clean
offline status ("stop") and exit code 0."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.localbroker import LocalBroker

CONFIG = """
[gateway]
id = "gw-ops"
site = "lab"
heartbeat_interval_s = {heartbeat}
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


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


class Notifications:
    """A stand-in for systemd's notify socket: records every datagram the agent sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.lines: list[str] = []
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                self.lines += self.sock.recv(4096).decode().splitlines()
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


class Statuses:
    def __init__(self, port: int) -> None:
        self.messages: list[dict[str, Any]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ops-watch", protocol=mqtt.MQTTv5)
        self.client.on_message = lambda _c, _u, m: self.messages.append(json.loads(m.payload))
        self.client.on_connect = lambda c, *_a: c.subscribe("edge/lab/gw-ops/status", qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def statuses(mosquitto: LocalBroker) -> Iterator[Statuses]:
    watcher = Statuses(mosquitto.port)
    yield watcher
    watcher.close()


def status_of(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "status", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_notify_status_reload_and_clean_stop(
    tmp_path: Path, mosquitto: LocalBroker, statuses: Statuses
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG.format(port=mosquitto.port, heartbeat=0.5))
    notifications = Notifications(tmp_path / "notify.sock")
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),  # this checkout's code, from tmp_path
        "NOTIFY_SOCKET": str(notifications.path),
        "WATCHDOG_USEC": "1000000",
    }
    log = (tmp_path / "agent.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert wait_until(lambda: "READY=1" in notifications.lines, 30), notifications.lines
        assert wait_until(lambda: "WATCHDOG=1" in notifications.lines, 10), notifications.lines
        assert wait_until(lambda: any(m["state"] == "online" for m in statuses.messages), 10)

        # `status` reads the live socket once a heartbeat has been made.
        assert wait_until(lambda: (tmp_path / "state" / "last-heartbeat.json").exists(), 10)
        live = status_of(config)
        assert live.returncode == 0 and "(live)" in live.stdout and "gateway gw-ops, session 1" in live.stdout
        assert "uplink: connected" in live.stdout

        # A bad new file is refused, the agent keeps running with the old one.
        good_text = config.read_text()
        config.write_text(good_text.replace("heartbeat_interval_s = 0.5", 'heartbeat_interval_s = "often"'))
        proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "reload refused" in (tmp_path / "agent.log").read_text(), 10)
        assert "gateway.heartbeat_interval_s: expected a number" in (tmp_path / "agent.log").read_text()
        time.sleep(1)
        assert proc.poll() is None
        assert [m["session"] for m in statuses.messages if m["state"] == "online"] == [1]

        # A good new file is taken: a new session starts with the new settings.
        config.write_text(good_text.replace("heartbeat_interval_s = 0.5", "heartbeat_interval_s = 0.7"))
        proc.send_signal(signal.SIGHUP)
        assert wait_until(
            lambda: any(m["state"] == "online" and m["session"] == 2 for m in statuses.messages), 30
        )
        assert "RELOADING=1" in notifications.lines
        # The reload's goodbye says it is one (crash/outage review, finding 4): a back end tells the
        # offline of a reload (an online of the next session follows at once) from a stop.
        (reloaded,) = [m for m in statuses.messages if m["state"] == "offline"]
        assert (reloaded["session"], reloaded["clean"], reloaded["reason"]) == (1, True, "reload")

        # SIGTERM: clean offline status, STOPPING, exit code 0.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert wait_until(lambda: any(m["state"] == "offline" for m in statuses.messages), 10)
        offline = [m for m in statuses.messages if m["state"] == "offline"]
        assert offline[-1]["clean"] is True and offline[-1]["session"] == 2
        assert offline[-1]["reason"] == "stop"
        assert "STOPPING=1" in notifications.lines

        # With the agent gone, `status` falls back to the last heartbeat on disk, says so, exits 3.
        last = status_of(config)
        assert last.returncode == 3 and "(last heartbeat, " in last.stdout
        assert "the agent is not running (no socket" in last.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        notifications.close()
        log.close()


def test_status_without_any_agent(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "status", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1 and "no running agent" in result.stderr
