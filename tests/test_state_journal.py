"""agent.state_journal: after a crash at any point, the saved episodes match the outbox's events."""

from __future__ import annotations

import json
import time
from pathlib import Path

from agent import state_journal
from agent.alarms import StreamRef
from agent.alarms.book import AlarmBook
from agent.alarms.machine import AlarmState
from agent.config.schema import AlarmRuleConfig, OutboxConfig
from agent.events import AlarmEvent, AlarmKind, Explanation, Phase, Priority
from agent.outbox import Outbox

RULE = AlarmRuleConfig(condition="tachycardia", detector="hr-high", cooldown_s=30.0)
KEY = "hr-high/tachycardia"
STREAM = StreamRef("d-abc", "vitals")
OLD = {"alarms": {KEY: {"condition": "tachycardia", "streams": []}}}


def event(phase: Phase, seq: int, episode: str = "01a2-ep1") -> AlarmEvent:
    now = time.time()
    return AlarmEvent(
        id=episode,
        seq=seq,
        phase=phase,
        gateway="gw",
        device=STREAM.device_pseudonym,
        stream=STREAM.stream,
        condition=RULE.condition,
        priority=Priority.MEDIUM,
        kind=AlarmKind.PHYSIOLOGICAL,
        onset_time=now - 12,
        detection_time=now - 2,
        value=131.0,
        threshold=120.0,
        unit="bpm",
        explanation=Explanation(detector="hr-high", score=11.0, threshold=0.0),
        end_time=now if phase is Phase.END else None,
    )


def restarted_book(state_dir: Path, outbox: Outbox) -> AlarmBook:
    """What a restarted agent loads: pipeline.json with the outbox's episode note laid over it."""
    saved = json.loads((state_dir / state_journal.STATE_FILE).read_text())
    book = AlarmBook(RULE, "gw", "cfg", ("hr",))
    book.load_state(
        state_journal.saved_alarms(saved, outbox.note(state_journal.NOTE))[KEY]
    )  # raises if malformed
    return book


def test_a_committed_start_is_remembered_without_a_full_save(tmp_path: Path) -> None:
    (tmp_path / state_journal.STATE_FILE).write_text(json.dumps(OLD))  # the last full save
    with Outbox(OutboxConfig(tmp_path / "outbox.sqlite")) as outbox:
        journal = state_journal.EpisodeJournal([RULE])
        start = [event(Phase.START, 0)]
        outbox.put_alarms(start, "edge/s/gw/alarm", note=journal.note(start))
    with Outbox(OutboxConfig(tmp_path / "outbox.sqlite")) as outbox:  # killed, restarted
        book = restarted_book(tmp_path, outbox)
    assert book.state_of(STREAM) is AlarmState.ACTIVE
    assert book.state()["streams"][0]["episode"] == {"id": "01a2-ep1", "next_seq": 1, "priority": "medium"}


def test_an_ended_episode_stays_ended_with_its_cooldown_after_its_events_were_delivered(
    tmp_path: Path,
) -> None:
    (tmp_path / state_journal.STATE_FILE).write_text(json.dumps(OLD))
    with Outbox(OutboxConfig(tmp_path / "outbox.sqlite")) as outbox:
        journal = state_journal.EpisodeJournal([RULE])
        start, end = [event(Phase.START, 0)], [event(Phase.END, 1)]
        outbox.put_alarms(start, "edge/s/gw/alarm", note=journal.note(start))
        outbox.put_alarms(end, "edge/s/gw/alarm", note=journal.note(end))
        outbox.delivered("01a2-ep1:0")
        outbox.delivered("01a2-ep1:1")  # both sent and acknowledged: gone from the outbox, the note stays
        book = restarted_book(tmp_path, outbox)
    [row] = book.state()["streams"]
    assert row["state"] == "NORMAL" and "episode" not in row
    assert end[0].end_time is not None and row["cooldown_until"] == end[0].end_time + RULE.cooldown_s


def test_a_full_save_makes_the_note_redundant(tmp_path: Path) -> None:
    with Outbox(OutboxConfig(tmp_path / "outbox.sqlite")) as outbox:
        journal = state_journal.EpisodeJournal([RULE])
        start = [event(Phase.START, 0)]
        outbox.put_alarms(start, "edge/s/gw/alarm", note=journal.note(start))
        journal.saved_in_full()
        outbox.drop_note(state_journal.NOTE)
        assert outbox.note(state_journal.NOTE) is None
        later = [event(Phase.START, 0, episode="01a2-ep2")]
        outbox.put_alarms(later, "edge/s/gw/alarm", note=journal.note(later))
        note = outbox.note(state_journal.NOTE)
    assert note is not None and [r["episode"]["id"] for r in json.loads(note)] == ["01a2-ep2"]


def test_an_unreadable_note_changes_nothing() -> None:
    assert state_journal.saved_alarms(OLD, '[{"key": ') == OLD["alarms"]
    assert state_journal.saved_alarms(OLD, None) == OLD["alarms"]


def test_with_encryption_at_rest_the_note_is_sealed_and_opens(tmp_path: Path) -> None:
    config = OutboxConfig(tmp_path / "outbox.sqlite", encryption_key_file=tmp_path / "outbox.key")
    journal = state_journal.EpisodeJournal([RULE])
    start = [event(Phase.START, 0)]
    with Outbox(config) as outbox:
        outbox.put_alarms(start, "edge/s/gw/alarm", note=journal.note(start))
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("outbox.sqlite*"))
    assert STREAM.device_pseudonym.encode() not in on_disk
    assert b'"episode"' not in on_disk and b"tachycardia" not in on_disk
    with Outbox(config) as outbox:
        note = outbox.note(state_journal.NOTE)
    assert note is not None and json.loads(note)[0]["episode"]["id"] == "01a2-ep1"
    with Outbox(OutboxConfig(tmp_path / "outbox.sqlite")) as keyless:  # a sealed note without the key
        assert keyless.note(state_journal.NOTE) is None
