"""The shipped unit's `ExecStartPre` puts no configured value into the journal.

Found in a privacy review: the unit ran `edge-agent check-config FILE`, whose "ok" line lists every
device id (`bed-3-john-smith (wearable, simulator), …`) on each start, and whose problems quote the bad
file's values (a replay path naming a patient), repeated every `RestartSec` by `Restart=on-failure`;
systemd keeps an `ExecStartPre`'s output in the journal. The command line is taken from
deploy/edge-agent.service as shipped and run through the real CLI, with only the installed paths
replaced by this checkout's.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "edge-agent.service"
INSTALLED_COMMAND = "/usr/local/bin/edge-agent"
INSTALLED_CONFIG = "/etc/edge-agent/agent.toml"

CONFIG = """
[gateway]
id = "gw-priv-01"
site = "site-01"
state_dir = "state"
[mqtt]
url = "mqtt://127.0.0.1:1883"
[outbox]
path = "state/outbox.sqlite"
[[devices]]
id = "bed-3-john-smith"
kind = "wearable"
transport = "simulator"
patient = "MRN-0099887-Doe-Jane"
[[devices]]
id = "bed-6-anna-kowalski"
kind = "wearable"
transport = "replay"
[devices.replay]
path = "{recording}"
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
SECRETS = ["john-smith", "0099887", "kowalski", "nowak", "0066666"]


def exec_start_pre() -> list[str]:
    (line,) = [line for line in UNIT.read_text().splitlines() if line.startswith("ExecStartPre=")]
    return shlex.split(line.removeprefix("ExecStartPre="))


def run_as_the_unit_does(config: Path) -> subprocess.CompletedProcess[str]:
    command = exec_start_pre()
    assert command[0] == INSTALLED_COMMAND and INSTALLED_CONFIG in command, command
    here = [
        sys.executable,
        "-m",
        "agent.cli",
        *(str(config) if a == INSTALLED_CONFIG else a for a in command[1:]),
    ]
    return subprocess.run(here, capture_output=True, text=True, cwd=config.parent, timeout=120, check=False)


def test_the_units_check_prints_no_device_id_on_success(tmp_path: Path) -> None:
    recording = tmp_path / "rec" / "MRN-0055555_Kowalski_Anna"
    recording.mkdir(parents=True)
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG.format(recording=recording))
    done = run_as_the_unit_does(config)
    assert done.returncode == 0, done.stderr
    journal = (done.stdout + done.stderr).lower()
    assert not [s for s in SECRETS if s in journal], journal
    assert str(tmp_path / "rec") not in journal


def test_the_units_check_withholds_a_bad_files_values_and_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG.format(recording=tmp_path / "rec" / "MRN-0066666_Nowak_Piotr"))
    done = run_as_the_unit_does(config)
    assert done.returncode == 2
    journal = done.stdout + done.stderr
    assert not [s for s in SECRETS if s in journal.lower()], journal
    assert done.stderr.splitlines() == [
        f"{config}: devices[1].replay.path: no recording file or folder: … (values withheld: "
        f"edge-agent check-config {config} shows them)"
    ]


def test_by_hand_check_config_still_shows_the_values_to_the_one_who_runs_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    missing = tmp_path / "rec" / "MRN-0066666_Nowak_Piotr"
    config.write_text(CONFIG.format(recording=missing))
    assert main(["check-config", str(config)]) == 2
    assert str(missing) in capsys.readouterr().err
    config.write_text(CONFIG.format(recording=tmp_path))
    assert main(["check-config", str(config)]) == 0
    assert "bed-3-john-smith (wearable, simulator)" in capsys.readouterr().out
