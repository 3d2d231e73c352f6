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
from agent.pipeline.technical import TECHNICAL_COOLDOWN_S, ThresholdAlarm

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
        state_journal.saved_alarms(saved, outbox.notes(state_journal.NOTE))[KEY]
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
    episode = {"id": "01a2-ep1", "next_seq": 1, "priority": "medium", "unjudged_s": 0.0}
    assert book.state()["streams"][0]["episode"] == episode


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


def test_each_turn_appends_only_its_own_rows_and_a_drop_empties_the_notes(tmp_path: Path) -> None:
    with Outbox(OutboxConfig(tmp_path / "outbox.sqlite")) as outbox:
        journal = state_journal.EpisodeJournal([RULE])
        start, end = [event(Phase.START, 0)], [event(Phase.END, 1)]
        outbox.put_alarms(start, "edge/s/gw/alarm", note=journal.note(start))
        outbox.put_alarms(end, "edge/s/gw/alarm", note=journal.note(end))
        notes = outbox.notes(state_journal.NOTE)
        assert [n for n, _ in notes] == [0, 1]
        assert [[r["state"] for r in json.loads(t)["rows"]] for _, t in notes] == [["ACTIVE"], ["NORMAL"]]
        outbox.drop_notes(state_journal.NOTE)
        assert outbox.notes(state_journal.NOTE) == []
    with Outbox(OutboxConfig(tmp_path / "outbox.sqlite")) as outbox:  # numbering goes on after a restart
        later = [event(Phase.START, 0, episode="01a2-ep2")]
        outbox.put_alarms(start, "edge/s/gw/alarm", note=journal.note(start))
        outbox.put_alarms(later, "edge/s/gw/alarm", note=journal.note(later))
        ids = [json.loads(t)["rows"][0]["episode"]["id"] for _, t in outbox.notes(state_journal.NOTE)]
    assert ids == ["01a2-ep1", "01a2-ep2"]


def test_notes_the_last_full_save_includes_are_ignored(tmp_path: Path) -> None:
    """A crash after a full save but before its notes were dropped (or a drop the disk lost)."""
    with Outbox(OutboxConfig(tmp_path / "outbox.sqlite")) as outbox:
        journal = state_journal.EpisodeJournal([RULE])
        start = [event(Phase.START, 0)]
        outbox.put_alarms(start, "edge/s/gw/alarm", note=journal.note(start))
        # The episode ended and a full save that includes note 0 recorded it; note 0 is still there.
        saved = {"alarms": {KEY: {"condition": "tachycardia", "streams": []}}, state_journal.JOURNAL: 0}
        assert state_journal.saved_alarms(saved, outbox.notes(state_journal.NOTE)) == saved["alarms"]
        later = [event(Phase.START, 0, episode="01a2-ep2")]
        outbox.put_alarms(later, "edge/s/gw/alarm", note=journal.note(later))
        [row] = state_journal.saved_alarms(saved, outbox.notes(state_journal.NOTE))[KEY]["streams"]
    assert row["episode"]["id"] == "01a2-ep2"


def test_a_state_saved_before_notes_were_numbered_takes_the_notes_of_its_generation(tmp_path: Path) -> None:
    """pipeline.json and notes left by the previous version (a random generation instead of a number)."""
    start, later = [event(Phase.START, 0)], [event(Phase.START, 0, episode="01a2-ep2")]
    with Outbox(OutboxConfig(tmp_path / "outbox.sqlite")) as outbox:
        for events, generation in ((start, "g1"), (later, "g2")):
            rows = json.loads(state_journal.EpisodeJournal([RULE]).note(events)[1])["rows"]
            outbox.put_alarms(
                events,
                "edge/s/gw/alarm",
                note=(state_journal.NOTE, json.dumps({"generation": generation, "rows": rows})),
            )
        saved = {"alarms": OLD["alarms"], state_journal.JOURNAL: "g2"}
        [row] = state_journal.saved_alarms(saved, outbox.notes(state_journal.NOTE))[KEY]["streams"]
    assert row["episode"]["id"] == "01a2-ep2"
    assert state_journal.notes_included(saved) == -1  # the start-up save then numbers from what is there


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
        [(_, note)] = outbox.notes(state_journal.NOTE)
    assert json.loads(note)["rows"][0]["episode"]["id"] == "01a2-ep1"
    with Outbox(OutboxConfig(tmp_path / "outbox.sqlite")) as keyless:  # a sealed note without the key
        assert keyless.notes(state_journal.NOTE) == []


def test_a_builtin_technical_alarm_keeps_its_30_s_cooldown_through_a_crash(tmp_path: Path) -> None:
    lost = ThresholdAlarm("device_lost", Priority.MEDIUM, "gw", "cfg")
    ref = StreamRef("d-abc", "device")
    start = lost.check([ref], [45.0], [30.0], 1_000.0)
    end = lost.check([ref], [0.0], [30.0], 1_010.0)
    assert [e.phase for e in start + end] == [Phase.START, Phase.END]
    journal = state_journal.EpisodeJournal([RULE])  # configured rules only: built-ins are known anyway
    with Outbox(OutboxConfig(tmp_path / "outbox.sqlite")) as outbox:
        outbox.put_alarms(start, "edge/s/gw/alarm", note=journal.note(start))
        outbox.put_alarms(end, "edge/s/gw/alarm", note=journal.note(end))
        alarms = state_journal.saved_alarms({}, outbox.notes(state_journal.NOTE))  # killed before a save
    [row] = alarms[lost.key]["streams"]
    assert row["cooldown_until"] == 1_010.0 + TECHNICAL_COOLDOWN_S
    restarted = ThresholdAlarm("device_lost", Priority.MEDIUM, "gw", "cfg")
    restarted.load_state(alarms[lost.key])
    # lost again within the cooldown: a recurrence of the journalled episode, which clears after 30 s
    (again,) = restarted.check([ref], [45.0], [30.0], 1_020.0)
    assert again.phase is Phase.START and again.recurrence_of == start[0].id
    checks = [(t, restarted.check([ref], [0.0], [30.0], float(t))) for t in range(1_021, 1_060)]
    ends = [(t, e.phase) for t, events in checks for e in events]
    assert ends == [(1_051, Phase.END)]  # clear from 1021, 30 s (not the rule's clear_after_s 0)
