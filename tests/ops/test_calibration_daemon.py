"""Live calibration in the running daemon: `edge-agent status` and the published heartbeat show the
baseline's progress, then the calibrated threshold, which a restart takes back from the state folder."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.localbroker import LocalBroker

CONFIG = """
[gateway]
id = "gw-cal"
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
seed = 4
speed = 40.0

[[detectors]]
id = "hr-change"
type = "robust_z"
stream = "vitals"
channels = ["hr"]
params = {{ window_s = 30, hop_s = 1 }}
calibration = {{ baseline_s = 120, target_false_alarms_per_hour = 36 }}

[[alarms]]
condition = "hr_change"
detector = "hr-change"
"""

CALIBRATED = re.compile(r"calibration hr-change: calibrated threshold (\S+) at (\S+)")


def wait_for(probe: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := probe():
            return found
        time.sleep(0.1)
    return probe()


def status_text(config: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "status", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.stdout


def live_status_text(config: Path) -> str:
    """The status from the running agent's socket; "" while only the last heartbeat file answers."""
    text = status_text(config)
    return text if "(live)" in text else ""


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        cwd=config.parent,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_status_and_heartbeat_show_calibration_which_survives_a_restart(
    tmp_path: Path, mosquitto: LocalBroker
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG.format(port=mosquitto.port))
    beats: list[dict[str, Any]] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cal-watch", protocol=mqtt.MQTTv5)
    client.on_message = lambda _c, _u, m: beats.append(json.loads(m.payload))
    client.on_connect = lambda c, *_a: c.subscribe("edge/lab/gw-cal/heartbeat", qos=1)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    log = tmp_path / "agent.log"
    proc = start(config, log)
    try:
        learning = wait_for(
            lambda: re.search(
                r"calibration hr-change: learning \d+ of 120 s \((\d+) %\)", status_text(config)
            ),
            20,
        )
        assert learning, log.read_text()
        calibrated = wait_for(lambda: CALIBRATED.search(status_text(config)), 30)
        assert calibrated, log.read_text()
        threshold, at = calibrated.groups()
        assert float(threshold) != 6.0  # the configured robust_z threshold
        assert "detector hr-change calibrated: threshold" in log.read_text()
        published = wait_for(
            lambda: [
                b for b in beats if b.get("calibration", {}).get("hr-change", {}).get("state") == "calibrated"
            ],
            10,
        )
        assert published and published[-1]["calibration"]["hr-change"]["at"] == at
        assert any(b.get("calibration", {}).get("hr-change", {}).get("state") == "learning" for b in beats)
        stop(proc)
        assert proc.returncode == 0

        # A new process takes the result back from state/pipeline.json: its first live status already
        # shows the same threshold and time, before it could have learned anything itself.
        proc = start(config, log)
        first_live = wait_for(lambda: live_status_text(config), 20)
        assert first_live, log.read_text()
        restored = CALIBRATED.search(first_live)
        assert restored and restored.groups() == (threshold, at), first_live
        assert log.read_text().count("detector hr-change calibrated") == 1
    finally:
        stop(proc)
        client.loop_stop()
        client.disconnect()
