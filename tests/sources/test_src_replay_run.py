"""`edge-agent run` with a replayed recording as its device: a recorded tachycardia comes out as alarms."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.config.schema import DeviceConfig, EpisodeConfig, SimulatorConfig
from agent.localbroker import LocalBroker
from agent.simulation.source import simulate
from agent.sources.record import ReadingRecorder

CONFIG = """
[gateway]
id = "gw-replay"
site = "lab"
heartbeat_interval_s = 1.0
state_dir = "state"
[mqtt]
url = "mqtt://127.0.0.1:{port}"
[outbox]
path = "state/outbox.sqlite"
[[devices]]
id = "replayed-bed"
kind = "wearable"
transport = "replay"
[devices.replay]
path = "{recording}"
speed = 0
[[detectors]]
id = "hr-high"
type = "limit"
stream = "vitals"
channels = ["hr"]
params = {{ above = 120 }}
[[alarms]]
condition = "tachycardia"
detector = "hr-high"
min_duration_s = 10
clear_after_s = 10
hysteresis = 5
unit = "bpm"
"""


def test_run_takes_a_replayed_recording_as_a_device(tmp_path: Path, mosquitto: LocalBroker) -> None:
    simulated = DeviceConfig(
        id="bed-4",
        kind="wearable",
        transport="simulator",
        simulator=SimulatorConfig(seed=11, episodes=(EpisodeConfig("tachycardia", 30.0, 60.0),)),
    )
    readings, _ = simulate(simulated, 200.0, 1_700_000_000.0)
    recording = tmp_path / "recording"
    with ReadingRecorder(recording) as recorder:
        for reading in readings:
            recorder.write(reading)

    alarms: list[dict[str, Any]] = []
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="central", protocol=mqtt.MQTTv5)
    client.on_message = lambda _c, _u, m: alarms.append(json.loads(m.payload))
    client.on_subscribe = lambda *_args: subscribed.set()
    client.on_connect = lambda c, *_args: c.subscribe("edge/lab/gw-replay/alarm", qos=1)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    assert subscribed.wait(10)

    config = tmp_path / "agent.toml"
    config.write_text(CONFIG.format(port=mosquitto.port, recording=recording), encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(a["phase"] == "end" for a in alarms):
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.1)
        phases = [a["phase"] for a in alarms]
        assert phases == ["start", "end"], alarms
        assert all(a["condition"] == "tachycardia" and a["stream"] == "vitals" for a in alarms)
        # alarm times are the recording's times: the episode started 30 s into it
        assert alarms[0]["onset_time"].startswith("2023-11-14T22:")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        proc.wait(20)
        client.disconnect()
        client.loop_stop()
