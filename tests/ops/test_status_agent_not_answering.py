"""`edge-agent status` when the agent does not answer (ops review F3 of 2026-11-30): with the daemon
stopped, killed or hung (SIGSTOP) it printed the last heartbeat as "(last heartbeat)", every device
"connected, 1.0 readings/s", and exited 0: a hung agent looked like a stopped one, and both like a
healthy one to a script. Now it says the agent did not answer and why (no socket, nobody listening,
no answer in time), gives the heartbeat's age, marks what it shows as the state at that time, and
exits 3 (not running) or 4 (did not answer: hung). Real daemon, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import test_daemon_lifecycle as lifecycle
from ports import RefusingPort

REPO = Path(__file__).resolve().parents[2]  # the daemon runs this checkout's code, whatever its cwd
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def status(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "status", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env=ENV,
    )


def start(config: Path, workdir: Path) -> subprocess.Popen[bytes]:
    log = (workdir / "agent.log").open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=ENV,
        )
    finally:
        log.close()


def live(config: Path) -> bool:
    return status(config).returncode == 0


def test_status_tells_a_stopped_a_killed_and_a_hung_agent_from_a_running_one(
    tmp_path: Path, refusing_port: RefusingPort
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(lifecycle.CONFIG.format(port=refusing_port.port, heartbeat=0.5))
    heartbeat = tmp_path / "state" / "last-heartbeat.json"
    proc = start(config, tmp_path)
    try:
        assert lifecycle.wait_until(lambda: heartbeat.exists() and live(config), 30)
        running = status(config)
        assert "(live)" in running.stdout and running.stderr == ""

        proc.send_signal(signal.SIGSTOP)  # hung: the kernel takes the connection, nobody answers
        time.sleep(1.0)
        hung = status(config)
        proc.send_signal(signal.SIGCONT)
        assert hung.returncode == 4, (hung.returncode, hung.stderr)
        assert "the agent did not answer on" in hung.stderr and "within 2 s: it is hung" in hung.stderr
        assert (
            "showing its last heartbeat, " in hung.stderr and "the state at that time, not now" in hung.stderr
        )
        title = hung.stdout.splitlines()[0]
        assert (
            title.startswith("edge-agent status (last heartbeat, ")
            and "s old: the state then, not now)" in title
        )
        age = float(title.split("last heartbeat, ")[1].split(" s old")[0])
        assert 1.0 <= age < 10.0, title  # frozen for a second after a heartbeat at most 0.5 s old

        proc.send_signal(signal.SIGTERM)  # stopped cleanly: the socket is removed
        assert proc.wait(30) == 0
        stopped = status(config)
        assert stopped.returncode == 3, (stopped.returncode, stopped.stderr)
        assert "the agent is not running (no socket" in stopped.stderr
        assert "(last heartbeat, " in stopped.stdout

        proc = start(config, tmp_path)
        assert lifecycle.wait_until(lambda: live(config), 30)
        proc.kill()  # SIGKILL: the socket file stays, nobody listens on it
        proc.wait(10)
        assert (tmp_path / "state" / "agent.sock").exists()
        killed = status(config)
        assert killed.returncode == 3, (killed.returncode, killed.stderr)
        assert "the agent is not running (nobody listens on" in killed.stderr
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait(10)
