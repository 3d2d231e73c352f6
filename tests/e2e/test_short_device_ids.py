"""Short device ids ("12": a bed number) never reach a log line (outside review, finding 2). The log
redaction cannot hide them in free text (it would replace every "12" in every number), so the code
itself names a device by its pseudonym (`agent.logs.device_name`). The real daemon (`edge-agent run`,
JSON lines at DEBUG) with a serial device whose port is missing and a simulated wearable whose ECG is
turned into beats: the lines that named the raw id before (the serial port that does not open, the
device's own 'rr' readings replaced) come, with the pseudonym."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from ports import RefusingPort

from agent.privacy import Pseudonymizer

CONFIG = """
[gateway]
id = "gw-short"
site = "lab"
heartbeat_interval_s = 1
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:{port}"

[outbox]
path = "state/outbox.sqlite"

[[devices]]
id = "12"
kind = "wearable"
transport = "serial"
patient = "P7"
[devices.serial]
port = "{missing_port}"

[[devices]]
id = "b7"
kind = "wearable"
transport = "simulator"
[devices.simulator]
seed = 3
speed = 10
ecg = true
[devices.beats]

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
unit = "bpm"
"""
# The id as a log line would carry it: "12: ...", "12/vitals", "'12'", "devices.12" (not "19:12", "0.12").
RAW_ID = re.compile(r"(?<![\w.:/-])(?:12|b7|P7)(?=[:/'\"\],)]|$)|devices\.(?:12|b7)\b", re.IGNORECASE)


def test_short_device_ids_are_in_no_log_line_of_a_real_run(
    tmp_path: Path, refusing_port: RefusingPort
) -> None:
    config = tmp_path / "agent.toml"
    missing_port = tmp_path / "usb-FTDI_FT232R_USB_UART_A5069RR4-if00-port0"
    config.write_text(CONFIG.format(port=refusing_port.port, missing_port=missing_port))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "--log-json",
            "--log-level",
            "DEBUG",
            "run",
            "--config",
            str(config),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    try:
        time.sleep(8.0)  # the port's first failures, the ECG's first beats, heartbeats
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    entries = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    texts = [f"{e['message']} {e.get('exception', '')}" for e in entries]
    key = Pseudonymizer((tmp_path / "state" / "pseudonym.key").read_bytes())
    serial, wearable = key("12"), key("b7")
    assert any(t.startswith(f"{serial}: cannot open serial port {serial}:port") for t in texts), output
    assert any(t.startswith(f"{wearable}: the device's own 'rr' readings") for t in texts), output
    leaks = [t for t in texts if RAW_ID.search(t)]
    assert not leaks, leaks
    assert str(missing_port) not in output
