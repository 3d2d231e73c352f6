"""A second agent on a running agent's state folder is refused at once, naming the folder and the
first one's pid: before, the two shared the outbox and pipeline.json and took the MQTT client id from
each other every second (integrator review)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from test_operator_errors import AgentRun, write_config

from agent.errors import ConfigError
from agent.localbroker import LocalBroker
from agent.state_lock import StateLock


def test_a_second_agent_on_the_same_state_folder_is_refused(
    make_broker: Callable[..., LocalBroker], tmp_path: Path
) -> None:
    broker = make_broker()
    config = write_config(tmp_path, broker.port)
    first = AgentRun(config)
    try:
        first.wait_for("connected to")
        second = subprocess.run(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert second.returncode == 2, second.stderr
        assert f"another edge-agent (pid {first.proc.pid}) runs with" in second.stderr
        assert "gateway.state_dir" in second.stderr
        assert first.proc.poll() is None  # the first goes on, untouched
        assert first.stop() == 0
        # Once it has stopped, the folder is free again.
        again = AgentRun(config)
        again.wait_for("connected to")
        assert again.stop() == 0
    finally:
        if first.proc.poll() is None:
            first.proc.kill()


def test_the_lock_is_let_go_on_release(tmp_path: Path) -> None:
    lock = StateLock(tmp_path)
    with pytest.raises(ConfigError, match="one agent per state folder"):
        StateLock(tmp_path)
    lock.release()
    StateLock(tmp_path).release()
    assert (tmp_path / "agent.lock").stat().st_mode & 0o777 == 0o600
