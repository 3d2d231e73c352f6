"""Contact lost 9 s of every 10, through the real daemon to a real mosquitto (review "ble", F3, 2026-11-30).

A simulated wearable loses contact 9 s of every 10 for 200 simulated seconds, then keeps it. The review's
daemon run of this pattern put nothing at all on MQTT; the central side now gets one `sensor_off` START
that says the loss is intermittent and, 10 s after contact is steady, its END."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.localbroker import LocalBroker

ROOT = Path(__file__).resolve().parents[2]
PYTHONPATH = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
SPEED = 20.0  # simulated seconds per real second
FIRST_S, CYCLES, LOST_S, CYCLE_S = 20, 20, 9, 10  # contact lost [20, 29), [30, 39), ... [210, 219)
STEADY_FROM_S = FIRST_S + (CYCLES - 1) * CYCLE_S + LOST_S
EPISODES = ", ".join(
    f'{{ condition = "contact_loss", start_s = {FIRST_S + k * CYCLE_S}, duration_s = {LOST_S} }}'
    for k in range(CYCLES)
)

CONFIG = f"""
[gateway]
id = "gw-e2e"
site = "ward-7"
heartbeat_interval_s = 1.0
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:{{port}}"
topic_prefix = "edge"

[outbox]
path = "state/outbox.sqlite"

[[devices]]
id = "wearable-bed-4"
kind = "wearable"
transport = "simulator"
[devices.simulator]
seed = 11
speed = {SPEED}
episodes = [{EPISODES}]

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
min_duration_s = 10
clear_after_s = 10
unit = "bpm"
"""


class Central:
    """A persistent MQTT v5 subscriber keeping every alarm payload."""

    def __init__(self, broker: LocalBroker) -> None:
        self.alarms: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="central", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_args: subscribed.set()
        self.client.on_connect = lambda c, *_args: c.subscribe("edge/ward-7/gw-e2e/#", qos=1)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert subscribed.wait(10), "central subscriber did not get its SUBACK"

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic.endswith("/alarm"):
            with self.lock:
                self.alarms.append(json.loads(message.payload))

    def seen(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.alarms)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def central(mosquitto: LocalBroker) -> Iterator[Central]:
    central = Central(mosquitto)
    yield central
    central.close()


@pytest.fixture
def agent_process(tmp_path: Path, mosquitto: LocalBroker) -> Iterator[subprocess.Popen[str]]:
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG.replace("{port}", str(mosquitto.port)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        # the code under test, not whichever checkout the environment's editable install points at
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), *PYTHONPATH])},
    )
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def _unix(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_contact_lost_9_s_of_every_10_gives_one_sensor_off_start_and_end(
    central: Central, agent_process: subprocess.Popen[str]
) -> None:
    # 230 simulated seconds are 11.5 s real at 20x; a slow start-up gets the rest.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not any(a["phase"] == "end" for a in central.seen()):
        assert agent_process.poll() is None, agent_process.stdout.read() if agent_process.stdout else ""
        time.sleep(0.1)
    time.sleep(2.0)  # anything extra that would arrive late (a second episode, a duplicate start)
    alarms = central.seen()
    assert [(a["phase"], a["condition"]) for a in alarms] == [("start", "sensor_off"), ("end", "sensor_off")]
    start, end = alarms
    assert start["id"] == end["id"] and start["kind"] == "technical" and start["priority"] == "medium"
    assert (start["value"], start["threshold"]) == (1, 0.5)
    assert "intermittently" in start["explanation"]["text"]
    assert _unix(start["detection_time"]) - _unix(start["onset_time"]) == pytest.approx(10, abs=0.01)
    # Times are the simulation's: the onset is the start of the k-th loss (FIRST_S + k CYCLE_S), the end
    # the moment contact became steady (STEADY_FROM_S). Started within 90 s of the first loss: k <= 7.
    lasted = _unix(end["end_time"]) - _unix(start["onset_time"])
    k = (STEADY_FROM_S - FIRST_S - lasted) / CYCLE_S
    assert k == pytest.approx(round(k), abs=0.01) and 0 <= round(k) <= 7, lasted
