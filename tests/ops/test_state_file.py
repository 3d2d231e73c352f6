"""agent.state_file: pipeline.json is sealed with the outbox key, migrated from plaintext, and a file
that cannot be opened is kept aside, never silently overwritten."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import pytest
from daemon_session import CONFIG, session

from agent.sealing import Sealer
from agent.state import write_json
from agent.state_file import read_state, sealed_path, write_state

STATE = {"detectors": {"hr": {"baseline": [72.125]}}, "alarms": {"hr/tachycardia": {"peak": 151.375}}}


def sealer() -> Sealer:
    return Sealer(secrets.token_bytes(32))


def test_sealed_state_round_trips_and_holds_no_value_in_the_clear(tmp_path: Path) -> None:
    path, key = tmp_path / "pipeline.json", sealer()
    write_state(path, STATE, key)
    assert not path.exists()
    stored = sealed_path(path).read_bytes()
    assert b"72.125" not in stored and b"151.375" not in stored and b"baseline" not in stored
    assert read_state(path, key) == STATE


def test_plaintext_state_is_read_once_then_replaced_by_the_sealed_file(tmp_path: Path) -> None:
    path, key = tmp_path / "pipeline.json", sealer()
    write_json(path, STATE)  # a run before encryption was turned on
    assert read_state(path, key) == STATE
    write_state(path, STATE | {"journal": "g2"}, key)
    assert not path.exists()
    assert read_state(path, key) == STATE | {"journal": "g2"}


def test_a_sealed_state_under_another_key_is_set_aside_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "pipeline.json"
    write_state(path, STATE, sealer())
    original = sealed_path(path).read_bytes()
    with caplog.at_level(logging.ERROR, logger="agent.state"):
        assert read_state(path, sealer()) is None
    aside = tmp_path / "pipeline.json.sealed.unreadable"
    assert aside.read_bytes() == original  # kept, byte for byte
    assert not sealed_path(path).exists()
    assert "does not open with the configured key" in caplog.text


def test_a_sealed_state_without_a_configured_key_is_set_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "pipeline.json"
    write_state(path, STATE, sealer())
    with caplog.at_level(logging.ERROR, logger="agent.state"):
        assert read_state(path, None) is None
    assert (tmp_path / "pipeline.json.sealed.unreadable").exists()
    assert "outbox.encryption_key_file is not configured" in caplog.text


def test_without_a_key_the_state_stays_plain_json(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.json"
    write_state(path, STATE, None)
    assert b"72.125" in path.read_bytes()
    assert read_state(path, None) == STATE


def test_the_daemon_saves_its_state_sealed_when_the_outbox_is_encrypted(tmp_path: Path) -> None:
    sealed = {**CONFIG, "outbox": {"path": "outbox.sqlite", "encryption_key_file": "outbox.key"}}
    run = session(tmp_path, sealed)
    run.save_state()
    run.outbox.close()
    assert not (tmp_path / "pipeline.json").exists()
    assert run.outbox.sealer is not None
    saved = read_state(tmp_path / "pipeline.json", run.outbox.sealer)
    assert saved is not None and set(saved) >= {"detectors", "alarms", "journal"}
