"""State files a power cut left half made: the agent starts, says what it did, and repeats nothing.

- The pseudonym key is created, then written: a cut between the two leaves an empty file. It never
  pseudonymised anything, yet every start was refused (exit 2, "holds 0 bytes") and systemd restarted
  the agent into the same refusal. Now it is replaced, with a log line.
- A damaged `session` counter made the next start reuse the previous session's number without a word,
  so the central side took a restart for a reconnect. Now the count goes on from the session the last
  heartbeat (`last-heartbeat.json`) names, with a log line.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest
from test_operator_errors import AgentRun, write_config

from agent.privacy import load_or_create_key
from agent.state import next_session, write_atomic, write_json

UNUSED_PORT = 9  # no broker: the state is what is tested


def _session(agent: AgentRun) -> int:
    line = agent.wait_for(": 1 device(s)")
    found = re.search(r"session (\d+):", line)
    assert found is not None, line
    return int(found.group(1))


def test_an_empty_pseudonym_key_is_replaced_and_the_agent_starts(tmp_path: Path) -> None:
    config = write_config(tmp_path, UNUSED_PORT)
    (tmp_path / "state").mkdir(mode=0o700)
    key = tmp_path / "state" / "pseudonym.key"
    key.touch(mode=0o600)
    agent = AgentRun(config)
    try:
        warning = agent.wait_for("privacy.key_file")
        assert "is empty" in warning and "a new key replaces it" in warning
        _session(agent)
        assert len(key.read_bytes()) == 32
        assert agent.stop() == 0
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()


def test_a_short_key_is_still_refused_and_the_message_says_what_to_do(tmp_path: Path) -> None:
    key = tmp_path / "pseudonym.key"
    key.write_bytes(b"short")
    key.chmod(0o600)
    try:
        load_or_create_key(key)
    except Exception as exc:
        assert "holds 5 bytes" in str(exc) and "delete it" in str(exc)
    else:
        raise AssertionError("a 5-byte key was accepted")


def test_a_damaged_session_counter_counts_on_from_the_last_heartbeat(tmp_path: Path) -> None:
    config = write_config(tmp_path, UNUSED_PORT)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "session").write_text("7\n")
    write_json(state / "last-heartbeat.json", {"session": 7})  # as session 7 left it
    (state / "session").write_text("xx")  # then damaged
    agent = AgentRun(config)
    try:
        assert _session(agent) == 8
        assert "counting on from session 7" in agent.wait_for("the session counter")
        assert agent.stop() == 0
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
    assert (state / "session").read_text() == "8\n"


def test_the_session_counter_goes_on_past_the_last_heartbeats_session(tmp_path: Path) -> None:
    assert next_session(tmp_path) == 1
    (tmp_path / "session").write_text("")  # cut off while written
    write_json(tmp_path / "last-heartbeat.json", {"session": 1})
    assert next_session(tmp_path) == 2
    (tmp_path / "session").unlink()
    write_json(tmp_path / "last-heartbeat.json", {"session": True})  # not a session number
    assert next_session(tmp_path) == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_temporary_file_whose_mode_cannot_be_set_is_closed_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`fchmod` refused (a leftover temporary file of another user, for an agent not run as root):
    before, the descriptor was never closed, one more at each save of each file."""

    def refuse(fd: int, mode: int) -> None:
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))

    before = _open_fds()
    monkeypatch.setattr(os, "fchmod", refuse)
    for _ in range(3):
        with pytest.raises(PermissionError):
            write_atomic(tmp_path / "pipeline.json", b"{}")
    monkeypatch.undo()
    assert _open_fds() == before
    assert list(tmp_path.iterdir()) == []


def _open_fds() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())
