"""A replayed recording's damage is logged without its path or its content.

Found in a privacy review: `edge-agent run` replaying `rec2/MRN-0055555_Kowalski_Anna` with one bad
line logged, at WARNING, ``/…/MRN-0055555_Kowalski_Anna/readings-000001.jsonl:301: bad recorded reading
skipped (could not convert string to float: '98 Jane Doe')``: the folder named the patient and the
exception quoted the recorded value. The real daemon (JSON logs at DEBUG) replays such a folder here;
its log must name the device by pseudonym, the file by its index and the line by its number only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
from waiting import wait_until

from agent.localbroker import LocalBroker
from agent.privacy import Pseudonymizer
from agent.readings import Reading
from agent.sources.record import ReadingRecorder, recording_files

DEVICE = "bed-6-anna-kowalski"
PATIENT = "MRN-0055555-Kowalski"
FOLDER = "MRN-0055555_Kowalski_Anna"
SECRETS = ["kowalski", "0055555", "jane doe", "98 jane", "anna"]

CONFIG = """
[gateway]
id = "gw-priv"
site = "lab"
heartbeat_interval_s = 1.0
state_dir = "state"
[mqtt]
url = "mqtt://127.0.0.1:{port}"
[outbox]
path = "state/outbox.sqlite"
[[devices]]
id = "{device}"
kind = "wearable"
transport = "replay"
patient = "{patient}"
[devices.replay]
path = "{recording}"
speed = 0
"""


def damaged_recording(folder: Path) -> None:
    """Two files: the first with a line whose value is text (line 301) and a line that is not JSON
    (line 602); the second not a recording at all (its first line names the patient)."""
    with ReadingRecorder(folder) as recorder:
        for i in range(600):
            values = np.array([[78.0, 98.0, 34.87]])
            recorder.write(
                Reading(f"{DEVICE}/vitals", ("hr", "spo2", "skin_temp"), values, 1.8e9 + i, float(i))
            )
    (first,) = recording_files(folder)
    lines = first.read_text().splitlines(keepends=True)
    bad = lines[300].replace("98.0", '"98 Jane Doe"', 1)
    assert bad != lines[300]
    lines[300] = bad  # file line 301 (the header is line 1)
    lines.append("Kowalski Anna, not JSON\n")  # line 602
    first.write_text("".join(lines))
    (folder / "readings-000002.jsonl").write_text('{"patient": "Kowalski Anna"}\n')


def test_a_damaged_replay_is_logged_by_pseudonym_file_index_and_line_only(
    tmp_path: Path, mosquitto: LocalBroker
) -> None:
    recording = tmp_path / "rec2" / FOLDER
    damaged_recording(recording)
    config = tmp_path / "agent.toml"
    config.write_text(
        CONFIG.format(port=mosquitto.port, device=DEVICE, patient=PATIENT, recording=recording),
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "--log-level",
            "DEBUG",
            "--log-json",
            "run",
            "--config",
            str(config),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        wait_until(
            lambda: sum("skipped" in line for line in lines) >= 3 or proc.poll() is not None,
            30,
            "the daemon to log the three damaged places",
        )
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        proc.wait(20)
        reader.join(10)
    log = "".join(lines)
    skipped = [line for line in lines if "skipped" in line]
    assert len(skipped) == 3, log
    leaked = [s for s in SECRETS if s in log.lower()]
    assert not leaked, f"{leaked} in the log:\n{log}"
    assert str(tmp_path / "rec2") not in log
    ref = Pseudonymizer((tmp_path / "state" / "pseudonym.key").read_bytes())(DEVICE)
    assert all(ref in line for line in skipped), skipped
    assert "recording file 1 of 2, line 301: bad recorded reading skipped (ValueError)" in skipped[0]
    assert "recording file 1 of 2, line 602: bad recorded reading skipped (JSONDecodeError)" in skipped[1]
    assert "recording file 2 of 2: not an edge-agent recording, skipped" in skipped[2]
