"""The whole job, end to end: a simulated wearable with an injected tachycardia episode, the agent
as its own process, a real mosquitto broker, and a subscriber standing in for the central side."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.localbroker import LocalBroker

SPEED = 20.0  # simulated seconds per real second
EPISODE_START_S, EPISODE_S = 30.0, 60.0

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
patient = "MRN-99887766"
[devices.simulator]
seed = 11
speed = {SPEED}
episodes = [{{ condition = "tachycardia", start_s = {EPISODE_START_S}, duration_s = {EPISODE_S} }}]

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
hysteresis = 5
unit = "bpm"
"""

ALARM_FIELDS = {
    "schema",
    "id",
    "seq",
    "phase",
    "gateway",
    "device",
    "stream",
    "condition",
    "priority",
    "kind",
    "onset_time",
    "detection_time",
    "end_time",
    "value",
    "threshold",
    "unit",
    "explanation",
    "config_hash",
    "model_hash",
    "unjudged_s",
    "end_cause",
    "clock_synced",
    "recurrence_of",
}
EXPLANATION_FIELDS = {"detector", "score", "threshold", "top_channels", "baseline", "signal_quality", "text"}


@dataclass
class Central:
    """The central side: a persistent MQTT v5 subscriber recording every message by topic leaf."""

    messages: list[tuple[str, dict[str, Any], float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of(self, leaf: str) -> list[dict[str, Any]]:
        with self.lock:
            return [p for t, p, _ in self.messages if t.endswith("/" + leaf)]

    def times(self, leaf: str) -> list[float]:
        with self.lock:
            return [at for t, _, at in self.messages if t.endswith("/" + leaf)]

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.1)
        return predicate()


@pytest.fixture
def central(mosquitto: LocalBroker) -> Iterator[Central]:
    central = Central()
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="central", protocol=mqtt.MQTTv5)

    def on_message(_c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        with central.lock:
            central.messages.append((message.topic, json.loads(message.payload), time.monotonic()))

    client.on_message = on_message
    client.on_subscribe = lambda *_args: subscribed.set()
    client.on_connect = lambda c, *_args: c.subscribe("edge/ward-7/gw-e2e/#", qos=1)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    assert subscribed.wait(10), "central subscriber did not get its SUBACK"
    yield central
    client.disconnect()
    client.loop_stop()


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
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def test_tachycardia_episode_gives_one_start_one_end_heartbeats_and_a_will(
    central: Central, agent_process: subprocess.Popen[str], tmp_path: Path
) -> None:
    # The episode ends at 90 simulated s (4.5 s real at 20x) and clears 10 simulated s later.
    ended = central.wait_for(lambda: any(p["phase"] == "end" for p in central.of("alarm")), timeout=120)
    assert agent_process.poll() is None, agent_process.stdout.read() if agent_process.stdout else ""
    assert ended, f"no END event; alarms so far: {central.of('alarm')}"
    time.sleep(2.0)  # anything extra that would arrive late (a second episode, a duplicate start)

    alarms = central.of("alarm")
    assert [a["phase"] for a in alarms] == ["start", "end"], alarms
    start, end = alarms
    assert start["id"] == end["id"] and (start["seq"], end["seq"]) == (0, 1)
    assert (start["end_cause"], end["end_cause"]) == (None, "cleared")
    for event in (start, end):
        assert set(event) == ALARM_FIELDS
        assert set(event["explanation"]) == EXPLANATION_FIELDS
        assert event["schema"] == "edge-agent/alarm/1"
        assert event["condition"] == "tachycardia" and event["priority"] == "medium"
        assert event["kind"] == "physiological" and event["stream"] == "vitals"
        assert event["gateway"] == "gw-e2e" and event["unit"] == "bpm"
        assert event["threshold"] == 120 and event["value"] > 120
        assert event["device"].startswith("d-") and event["device"] != "wearable-bed-4"
        assert event["explanation"]["detector"] == "hr-high"
    assert start["explanation"]["top_channels"][0]["channel"] == "hr"
    assert (
        start["explanation"]["text"].startswith("hr ")
        and "above limit 120 bpm" in start["explanation"]["text"]
    )
    assert "peak" in end["explanation"]["text"]
    # Onset to end spans the injected episode (60 simulated s) within the ramps and confirmation times.
    onset = _unix(start["onset_time"])
    assert _unix(start["detection_time"]) - onset >= 10 - 1e-3  # minimum duration before confirming
    assert 40 <= _unix(end["end_time"]) - onset <= 80

    # Heartbeats arrive at the configured 1 s interval (real time).
    beats = central.of("heartbeat")
    assert len(beats) >= 3
    gaps = [b - a for a, b in zip(central.times("heartbeat"), central.times("heartbeat")[1:], strict=False)]
    assert 0.7 <= statistics.median(gaps) <= 1.5, gaps
    assert beats[-1]["schema"] == "edge-agent/heartbeat/1" and beats[-1]["devices"][0]["rate_hz"] > 0

    # Birth was published retained; SIGKILL makes the broker publish the Will with the same session.
    births = [s for s in central.of("status") if s["state"] == "online"]
    assert births, central.of("status")
    os.kill(agent_process.pid, signal.SIGKILL)
    agent_process.wait(10)
    assert central.wait_for(lambda: any(s["state"] == "offline" for s in central.of("status")), timeout=60)
    will = next(s for s in central.of("status") if s["state"] == "offline")
    assert will["clean"] is False and will["session"] == births[0]["session"]

    # Nothing that identifies the device or the patient left the gateway.
    with central.lock:
        raw = json.dumps([m[1] for m in central.messages])
    assert "wearable-bed-4" not in raw and "MRN-99887766" not in raw


def _unix(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
