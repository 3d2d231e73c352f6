"""A crashing agent leaves no core dump: its memory holds the configured device and patient ids.

Found in a privacy review: `edge-agent run` under `ulimit -c unlimited`, killed by SIGSEGV, left a
98 MB `core` holding `DeviceConfig(id='bed-3-john-smith', ..., patient='MRN-0099887-Doe-Jane')` 14
times. The real daemon is started here with the core size unlimited, as a shell or a service manager
may leave it, then crashed the same way.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
from configparser import ConfigParser
from pathlib import Path

from waiting import wait_until

from agent.localbroker import LocalBroker

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "edge-agent.service"
CONFIG = """
[gateway]
id = "gw-core"
site = "lab"
state_dir = "state"
[mqtt]
url = "mqtt://127.0.0.1:{port}"
[outbox]
path = "state/outbox.sqlite"
[[devices]]
id = "bed-3-john-smith"
kind = "wearable"
transport = "simulator"
patient = "MRN-0099887-Doe-Jane"
"""


def unlimited_cores() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def core_size_limits(pid: int) -> list[str]:
    (line,) = [line for line in Path(f"/proc/{pid}/limits").read_text().splitlines() if "core file" in line]
    return line.split()[4:6]  # "Max core file size  <soft> <hard> bytes"


def test_a_crashed_daemon_writes_no_core_file(tmp_path: Path, mosquitto: LocalBroker) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG.format(port=mosquitto.port))
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,  # where core_pattern "core" puts the dump
        preexec_fn=unlimited_cores,
    )
    lines: list[str] = []
    out = proc.stdout
    assert out is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(out.readline, "")), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("session 1:" in line for line in lines), 30, "the daemon's first session")
        limits = core_size_limits(proc.pid)
        os.kill(proc.pid, signal.SIGSEGV)
        assert proc.wait(30) == -signal.SIGSEGV
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(20)
        reader.join(10)
        for core in tmp_path.glob("core*"):
            core.unlink()  # patient data: never left behind, also when the test fails
            raise AssertionError(f"a core file was written: {core.name}")
    assert limits == ["0", "0"], limits


def test_the_unit_sets_no_core_size() -> None:
    unit = ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment, method-assign]  # keys are case-sensitive
    unit.read_string(UNIT.read_text())
    assert unit["Service"]["LimitCORE"] == "0"
