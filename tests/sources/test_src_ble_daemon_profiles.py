"""A BLE profile that stops while the device's other one talks, through the real daemon to a real mosquitto:
the other profile's values still alarm, and a technical alarm names the profile that stopped.

The daemon runs as its own process (`ble_daemon_driver.py`: only the BLE finder and the connector's client
are the fake radio's). Review of 2026-11-30 (BLE wearables), finding 2: with the HR stopped, an oximeter's
SpO2 80 % raised no spo2_low, only a device_lost "no data from the device" 30 s later while the heartbeat
said connected; with the PLX stopped (finger out) nothing was raised at all."""

from __future__ import annotations

import json
import os
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

DRIVER = Path(__file__).parent / "ble_daemon_driver.py"
ROOT = Path(__file__).parents[2]  # the checkout whose agent the daemon runs
DEADLINE_S = 45.0

CONFIG = """
[gateway]
id = "gw-ble"
site = "ward-7"
heartbeat_interval_s = 1.0
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:{port}"
topic_prefix = "edge"

[outbox]
path = "state/outbox.sqlite"

[[devices]]
id = "bed-7-oximeter"
kind = "wearable"
transport = "ble"
lost_after_s = 5
[devices.ble]
address = "C4:7C:8D:6A:12:34"
profiles = ["heart_rate", "plx"]
connect_timeout_s = 5

[[detectors]]
id = "spo2-low"
type = "limit"
stream = "vitals"
channels = ["spo2"]
params = { below = 90 }

[[alarms]]
condition = "spo2_low"
detector = "spo2-low"
priority = "high"
min_duration_s = 5
clear_after_s = 10
"""


class Alarms:
    """Every alarm event the central side receives."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def starts(self) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e["phase"] == "start"]

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.starts()):
                return True
            time.sleep(0.2)
        return predicate(self.starts())


@pytest.fixture
def alarms(mosquitto: LocalBroker) -> Iterator[Alarms]:
    seen = Alarms()
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="central", protocol=mqtt.MQTTv5)

    def on_message(_c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic.endswith("/alarm"):
            with seen.lock:
                seen.events.append(json.loads(message.payload))

    client.on_message = on_message
    client.on_subscribe = lambda *_args: subscribed.set()
    client.on_connect = lambda c, *_args: c.subscribe("edge/ward-7/gw-ble/#", qos=1)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    assert subscribed.wait(10), "the subscriber got no SUBACK"
    yield seen
    client.disconnect()
    client.loop_stop()


def run_daemon(tmp_path: Path, port: int, scenario: str, text: str = CONFIG) -> subprocess.Popen[str]:
    config = tmp_path / "agent.toml"
    config.write_text(text.replace("{port}", str(port)))
    return subprocess.Popen(
        [sys.executable, str(DRIVER), scenario, str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)},
    )


def stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def silent(profile: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda starts: any(
        e["condition"] == "profile_silent" and e["stream"] == f"profile:{profile}" for e in starts
    )


def test_spo2_80_alarms_and_the_stopped_heart_rate_is_named(
    tmp_path: Path, mosquitto: LocalBroker, alarms: Alarms
) -> None:
    proc = run_daemon(tmp_path, mosquitto.port, "hr_stops")
    try:
        done = alarms.wait_for(
            lambda s: silent("heart_rate")(s) and any(e["condition"] == "spo2_low" for e in s), DEADLINE_S
        )
    finally:
        log = stop(proc)
    assert done, (alarms.starts(), log[-3000:])
    starts = {e["condition"]: e for e in alarms.starts()}
    assert starts["spo2_low"]["priority"] == "high" and starts["spo2_low"]["value"] == 80.0
    text = starts["profile_silent"]["explanation"]["text"]
    assert "BLE profile heart_rate (Heart Rate Measurement (0x2A37); hr) sent nothing for 5 s" in text
    assert "device_lost" not in starts  # the oximeter talks: the device is not lost
    assert "no Heart Rate Measurement (0x2A37) notification for 5 s" in log  # the link rebuilt once


def test_a_plx_that_stops_after_sensor_unconnected_is_named(
    tmp_path: Path, mosquitto: LocalBroker, alarms: Alarms
) -> None:
    proc = run_daemon(tmp_path, mosquitto.port, "plx_stops")
    try:
        done = alarms.wait_for(silent("plx"), DEADLINE_S)
    finally:
        log = stop(proc)
    assert done, (alarms.starts(), log[-3000:])
    (start,) = [e for e in alarms.starts() if e["condition"] == "profile_silent"]
    assert start["priority"] == "medium" and "spo2, pr" in start["explanation"]["text"]
    assert "device_lost" not in {e["condition"] for e in alarms.starts()}


def test_a_plx_that_stops_under_an_active_spo2_low_is_as_high_and_names_it(
    tmp_path: Path, mosquitto: LocalBroker, alarms: Alarms
) -> None:
    # IEC 60601-1-8: a technical alarm's priority matches what it keeps from being monitored
    proc = run_daemon(tmp_path, mosquitto.port, "plx_stops_while_low")
    try:
        done = alarms.wait_for(silent("plx"), DEADLINE_S)
    finally:
        log = stop(proc)
    assert done, (alarms.starts(), log[-3000:])
    starts = {e["condition"]: e for e in alarms.starts()}
    assert starts["spo2_low"]["priority"] == "high"
    assert starts["profile_silent"]["priority"] == "high"
    assert starts["profile_silent"]["explanation"]["text"].endswith(
        "open and not judged meanwhile: spo2_low (high)"
    )
