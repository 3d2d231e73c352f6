"""The state folder and its files are the agent's user's only, also when an admin made the folder 0755
beforehand and the agent runs under umask 022: the real `edge-agent run` against a real mosquitto."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_daemon_lifecycle import CONFIG, wait_until

from agent.localbroker import LocalBroker
from agent.state import ensure_state_dir


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_an_open_state_folder_is_made_private_and_every_state_file_is_0600(
    tmp_path: Path, mosquitto: LocalBroker
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG.format(port=mosquitto.port, heartbeat=0.5))
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o755)  # `mkdir -p /var/lib/edge-agent` by an admin
    # Files an older version left 0644: the session counter, and a damaged saved state that is set aside.
    for name, text in (("session", "3\n"), ("pipeline.json", "{not json")):
        (state / name).write_text(text)
        (state / name).chmod(0o644)
    log = (tmp_path / "agent.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        preexec_fn=lambda: os.umask(0o022),  # the umask an admin shell has
    )
    try:
        wanted = ("last-heartbeat.json", "pipeline.json", "pipeline.json.unreadable", "session")
        assert wait_until(lambda: all((state / name).exists() for name in wanted), 30)
        assert wait_until(lambda: (state / "session").read_text() == "4\n", 5)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        log.close()
    assert mode(state) == 0o700
    files = {p.name: mode(p) for p in state.iterdir() if p.is_file()}
    assert set(wanted) <= set(files)
    assert {name: m for name, m in files.items() if m != 0o600} == {}
    text = (tmp_path / "agent.log").read_text()
    assert f"gateway.state_dir {state} was mode 755, open to group or others: made 0700" in text


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the folder to another user")
def test_a_state_folder_of_another_user_is_warned_about_by_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    os.chown(state, 65534, 65534)  # nobody: root may write in it, not chmod it as its owner would
    with caplog.at_level(logging.WARNING, logger="agent.state"):
        ensure_state_dir(state)
    assert mode(state) == 0o755
    assert [r.getMessage() for r in caplog.records] == [
        f"gateway.state_dir {state} is mode 755 and owned by another user (uid 65534): group or others "
        "may read the agent's state (patient values); chown it to the agent's user or chmod 700 it"
    ]
