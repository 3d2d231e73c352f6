"""Why is it quiet, in the running daemon: a gated pump switched off, then running while its rule learns.
`edge-agent status` shows the machine's state and the rule's learning live; the published heartbeat
carries both; after the agent stops, `status` shows them from the last heartbeat."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from test_calibration_daemon import live_status_text, start, stop, wait_for

from agent.localbroker import LocalBroker

CONFIG = """
[gateway]
id = "gw-pump"
site = "lab"
heartbeat_interval_s = 0.5
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:{port}"

[outbox]
path = "state/outbox.sqlite"

[[devices]]
id = "pump-7"
kind = "equipment"
transport = "simulator"
running_when = {{ channel = "motor_current", above = 1.0, settle_s = 30 }}
[devices.simulator]
seed = 21
speed = 20.0
episodes = [{{ condition = "stopped", start_s = 0, duration_s = 200 }}]

[[detectors]]
id = "pump-wear"
type = "window_pca"
stream = "machine"
channels = ["vibration_rms", "motor_current"]
params = {{ window_s = 10, hop_s = 1, adapt_rows = 600 }}

[[alarms]]
condition = "equipment_anomaly"
detector = "pump-wear"
priority = "low"
"""

MACHINE = re.compile(r"  machine (d-\w+/machine) \(pump-7\): (off|settling|running)")
LEARNING = re.compile(r"  learning pump-wear on d-\w+/machine \(pump-7\): (\d+) of 600 s, no verdict from it")


def machine_off(text: str) -> re.Match[str] | None:
    found = MACHINE.search(text)
    return found if found and found.group(2) == "off" else None


def learning_begun(text: str) -> re.Match[str] | None:
    found = LEARNING.search(text)
    return found if found and int(found.group(1)) > 0 else None


def test_status_and_heartbeat_tell_a_stopped_pump_and_a_learning_rule(
    tmp_path: Path, mosquitto: LocalBroker
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG.format(port=mosquitto.port))
    beats: list[dict[str, Any]] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pump-watch", protocol=mqtt.MQTTv5)
    client.on_message = lambda _c, _u, m: beats.append(json.loads(m.payload))
    client.on_connect = lambda c, *_a: c.subscribe("edge/lab/gw-pump/heartbeat", qos=1)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    log = tmp_path / "agent.log"
    proc = start(config, log)
    try:
        off = wait_for(lambda: machine_off(live_status_text(config)), 20)
        assert off, log.read_text()
        stream = off.group(1)
        # running after 200 simulated seconds (10 s here), then 30 s of settling, then learning rows
        learning = wait_for(lambda: learning_begun(live_status_text(config)), 30)
        assert learning, log.read_text()
        assert "(paused" not in learning.group(0)
        published = [b for b in beats if "learning" in b and b.get("running", {}).get(stream)]
        assert published, beats[-1:]
        states = {b["running"][stream]["state"] for b in beats if "running" in b}
        assert {"off", "running"} <= states, states
        assert "pump-7" not in json.dumps(beats)  # devices by pseudonym only
        stop(proc)
        assert proc.returncode == 0

        # Not running: the last heartbeat, which says the same, with its age.
        result = subprocess.run(
            [sys.executable, "-m", "agent.cli", "status", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 3, result.stderr
        assert "(last heartbeat," in result.stdout
        assert f"  machine {stream} (pump-7): running since " in result.stdout
        assert LEARNING.search(result.stdout), result.stdout
    finally:
        stop(proc)
        client.loop_stop()
        client.disconnect()
