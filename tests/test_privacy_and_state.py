"""Pseudonyms are stable, keyed and unlinkable; state files survive restarts; the session counts up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.privacy import Pseudonymizer, load_or_create_key
from agent.state import next_session, read_json, write_json


def test_key_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "pseudonym.key"
    key = load_or_create_key(path)
    assert len(key) == 32 and (path.stat().st_mode & 0o777) == 0o600
    assert load_or_create_key(path) == key


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pseudonym.key"
    path.write_bytes(os.urandom(32))
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=r"privacy\.key_file: .* readable by group or others"):
        load_or_create_key(path)


def test_pseudonyms_are_stable_per_key_and_hide_the_id() -> None:
    a, b = Pseudonymizer(b"k" * 32), Pseudonymizer(b"j" * 32)
    assert a("bed-12-strap") == a("bed-12-strap") == Pseudonymizer(b"k" * 32)("bed-12-strap")
    assert a("bed-12-strap") != a("bed-13-strap")
    assert a("bed-12-strap") != b("bed-12-strap")  # another site cannot link them
    assert "bed" not in a("bed-12-strap") and a("bed-12-strap").startswith("d-")
    assert a("gw", "g").startswith("g-") and a("gw", "g") != a("gw")


def test_session_counter_counts_up_across_restarts(tmp_path: Path) -> None:
    assert [next_session(tmp_path) for _ in range(3)] == [1, 2, 3]
    (tmp_path / "session").write_text("garbage")
    assert next_session(tmp_path) == 1  # a damaged counter restarts rather than stopping the agent


def test_json_state_round_trip_and_missing(tmp_path: Path) -> None:
    assert read_json(tmp_path / "none.json") is None
    write_json(tmp_path / "s.json", {"hr-high": {"threshold": 0.0}})
    assert read_json(tmp_path / "s.json") == {"hr-high": {"threshold": 0.0}}
    assert not list(tmp_path.glob(".*.tmp"))
