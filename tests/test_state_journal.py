"""agent.state_journal: after a crash at any step of a turn, the saved episodes match the outbox."""

from __future__ import annotations

import json
import time
from pathlib import Path

from agent import state_journal
from agent.config.schema import OutboxConfig
from agent.outbox import Kind, Outbox, OutboxItem

OLD = {"alarms": {"tachycardia": {"streams": []}}}
NEW = {"alarms": {"tachycardia": {"streams": [{"episode": {"id": "ep1", "next_seq": 1}}]}}}


def saved(state_dir: Path) -> object:
    state = json.loads((state_dir / state_journal.STATE_FILE).read_text())
    state.pop(state_journal.IDS_KEY, None)
    return state


def start_event(outbox: Outbox) -> None:
    outbox.put(OutboxItem("ep1:0", "edge/s/g/alarm", b"{}", Kind.ALARM, 1, time.time()))


def test_crash_after_the_commit_keeps_the_new_episodes(tmp_path: Path) -> None:
    (tmp_path / state_journal.STATE_FILE).write_text(json.dumps(OLD))
    with Outbox(OutboxConfig(tmp_path / "outbox.sqlite")) as outbox:
        state_journal.write_pending(tmp_path, NEW, ["ep1:0"])
        start_event(outbox)
        # killed here, before promote_pending: the start is committed, so the episode must be remembered
        assert state_journal.recover(tmp_path, lambda i: outbox.get(i) is not None)
    assert saved(tmp_path) == NEW
    assert not (tmp_path / state_journal.PENDING_FILE).exists()


def test_crash_before_the_commit_keeps_the_old_episodes(tmp_path: Path) -> None:
    (tmp_path / state_journal.STATE_FILE).write_text(json.dumps(OLD))
    with Outbox(OutboxConfig(tmp_path / "outbox.sqlite")) as outbox:
        state_journal.write_pending(tmp_path, NEW, ["ep1:0"])
        # killed here: the start was never committed, so no episode may be remembered for it
        assert not state_journal.recover(tmp_path, lambda i: outbox.get(i) is not None)
    assert saved(tmp_path) == OLD
    assert not (tmp_path / state_journal.PENDING_FILE).exists()


def test_a_completed_turn_leaves_no_pending_file(tmp_path: Path) -> None:
    with Outbox(OutboxConfig(tmp_path / "outbox.sqlite")) as outbox:
        state_journal.write_pending(tmp_path, NEW, ["ep1:0"])
        start_event(outbox)
        state_journal.promote_pending(tmp_path)
        assert not state_journal.recover(tmp_path, lambda i: outbox.get(i) is not None)
    assert saved(tmp_path) == NEW


def test_an_unreadable_pending_file_is_dropped(tmp_path: Path) -> None:
    (tmp_path / state_journal.STATE_FILE).write_text(json.dumps(OLD))
    (tmp_path / state_journal.PENDING_FILE).write_text('{"state": ')
    assert not state_journal.recover(tmp_path, lambda i: True)
    assert saved(tmp_path) == OLD
    assert not (tmp_path / state_journal.PENDING_FILE).exists()


def test_nothing_pending_changes_nothing(tmp_path: Path) -> None:
    assert not state_journal.recover(tmp_path, lambda i: True)
    assert not (tmp_path / state_journal.STATE_FILE).exists()
