"""agent.state_saver: a save written in a thread loses no journal note, and saves land in order."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from agent import state_file, state_journal, state_saver
from agent.alarms import StreamRef
from agent.config.schema import OutboxConfig
from agent.events import AlarmEvent, Priority
from agent.outbox import Kind, Outbox, OutboxItem
from agent.outbox import notes as notes_module
from agent.pipeline.technical import ThresholdAlarm
from agent.state_file import read_state
from agent.state_saver import StateSaver

TOPIC = "edge/s/gw/alarm"
REF = StreamRef("d-abc", "device")


def lost_device() -> ThresholdAlarm:
    return ThresholdAlarm("device_lost", Priority.MEDIUM, "gw", "cfg")


def commit(outbox: Outbox, events: list[AlarmEvent]) -> None:
    """As the session commits a turn's events: with the journal's note, in one transaction."""
    outbox.put_alarms(events, TOPIC, note=state_journal.EpisodeJournal([]).note(events))


def restarted_rows(tmp_path: Path, outbox: Outbox, key: str) -> list[dict[str, Any]]:
    """The rows a restarted agent loads: pipeline.json with the notes above its mark laid over it."""
    saved = read_state(tmp_path / state_journal.STATE_FILE, None) or {}
    rows: list[dict[str, Any]] = state_journal.saved_alarms(saved, outbox.notes(state_journal.NOTE))[key][
        "streams"
    ]
    return rows


def test_a_note_committed_while_a_save_is_written_survives_it(tmp_path: Path) -> None:
    alarm = lost_device()
    with Outbox(OutboxConfig(tmp_path / "outbox.sqlite")) as outbox:
        saver = StateSaver(tmp_path / state_journal.STATE_FILE, outbox)
        commit(outbox, alarm.check([REF], [45.0], [30.0], 1_000.0))  # note 0: the START
        snapshot = saver.snapshot({}, {alarm.key: [alarm.snapshot()]})  # on the loop
        commit(outbox, alarm.check([REF], [0.0], [30.0], 1_010.0))  # note 1, while the thread writes
        saver.save(snapshot)
        assert [n for n, _ in outbox.notes(state_journal.NOTE)] == [1]  # note 0 is in the file now
        [row] = restarted_rows(tmp_path, outbox, alarm.key)
    assert row["state"] == "NORMAL" and "episode" not in row  # the END of note 1, over the saved START
    saved = read_state(tmp_path / state_journal.STATE_FILE, None)
    assert saved is not None and saved[state_journal.JOURNAL] == 0
    [saved_row] = saved["alarms"][alarm.key]["streams"]
    assert saved_row["state"] == "ACTIVE"  # the snapshot's state, not the live book's


def test_a_save_that_fails_drops_no_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    alarm = lost_device()
    with Outbox(OutboxConfig(tmp_path / "outbox.sqlite")) as outbox:
        saver = StateSaver(tmp_path / state_journal.STATE_FILE, outbox)
        commit(outbox, alarm.check([REF], [45.0], [30.0], 1_000.0))

        def disk_full(*_: Any) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(state_saver, "write_state", disk_full)
        saver.save(saver.snapshot({}, {alarm.key: [alarm.snapshot()]}))  # survived, not raised
        assert [n for n, _ in outbox.notes(state_journal.NOTE)] == [0]
        [row] = restarted_rows(tmp_path, outbox, alarm.key)
    assert row["state"] == "ACTIVE"


def test_a_snapshot_older_than_the_last_written_is_not_written(tmp_path: Path) -> None:
    alarm = lost_device()
    path = tmp_path / state_journal.STATE_FILE
    with Outbox(OutboxConfig(tmp_path / "outbox.sqlite")) as outbox:
        saver = StateSaver(path, outbox)
        commit(outbox, alarm.check([REF], [45.0], [30.0], 1_000.0))
        heartbeat = saver.snapshot({}, {alarm.key: [alarm.snapshot()]})  # its thread is slow to start
        commit(outbox, alarm.check([REF], [0.0], [30.0], 1_010.0))
        shutdown = saver.snapshot({}, {alarm.key: [alarm.snapshot()]})
        saver.save(shutdown)
        saver.save(heartbeat)
    saved = read_state(path, None)
    assert saved is not None and saved[state_journal.JOURNAL] == 1
    [row] = saved["alarms"][alarm.key]["streams"]
    assert row["state"] == "NORMAL"


def test_notes_of_a_replaced_outbox_are_numbered_above_the_saved_mark(tmp_path: Path) -> None:
    """The outbox file was damaged and replaced (or every note dropped): numbering must not restart
    below what pipeline.json says it includes, or the new notes would be ignored after a crash."""
    alarm = lost_device()
    (tmp_path / state_journal.STATE_FILE).write_text(json.dumps({"alarms": {}, state_journal.JOURNAL: 41}))
    with Outbox(OutboxConfig(tmp_path / "fresh.sqlite")) as outbox:
        saved = read_state(tmp_path / state_journal.STATE_FILE, None) or {}
        outbox.number_notes_after(state_journal.NOTE, state_journal.notes_included(saved))
        commit(outbox, alarm.check([REF], [45.0], [30.0], 1_000.0))
        assert [n for n, _ in outbox.notes(state_journal.NOTE)] == [42]
        assert outbox.last_note(state_journal.NOTE) == 42
        [row] = restarted_rows(tmp_path, outbox, alarm.key)
    assert row["state"] == "ACTIVE"


def test_the_heartbeat_save_is_written_off_the_event_loop_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writers: list[int] = []

    def recording(*args: Any) -> None:
        writers.append(threading.get_ident())
        state_file.write_state(*args)

    monkeypatch.setattr(state_saver, "write_state", recording)
    alarm = lost_device()
    with Outbox(OutboxConfig(tmp_path / "outbox.sqlite")) as outbox:
        saver = StateSaver(tmp_path / state_journal.STATE_FILE, outbox)
        commit(outbox, alarm.check([REF], [45.0], [30.0], 1_000.0))
        asyncio.run(saver.save_in_thread(saver.snapshot({}, {alarm.key: [alarm.snapshot()]})))
        assert outbox.notes(state_journal.NOTE) == []
    assert len(writers) == 1 and writers[0] != threading.get_ident()


@pytest.mark.parametrize("chunk", [1, 2, 3, 500])
def test_the_state_is_encoded_in_pieces_exactly_as_one_call_would(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state_file, "CHUNK", chunk)
    value = {
        "b": [{"z": 1.5, "a": None, "s": "é\n"}, [1, [2, 3]], True, float("nan")],
        "a": {f"k{i}": {"x": [i] * i, "y": {}} for i in range(7)},
        "c": [],
        "d": {},
        "e": [[]] * 5,
    }
    expected = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    pieces: list[None] = []
    assert state_file.encode_state(value, lambda: pieces.append(None)) == expected
    assert (len(pieces) > 0) == (chunk < 7)  # given way between pieces, only where there are pieces


def test_notes_are_dropped_in_batches_up_to_the_number_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notes_module, "DROP_BATCH", 2)
    with Outbox(OutboxConfig(tmp_path / "outbox.sqlite")) as outbox:
        for i in range(7):
            item = OutboxItem(f"n{i}", TOPIC, b"p", Kind.ALARM, 0, 1000.0)
            outbox.put_many([item], note=(state_journal.NOTE, f"note {i}"))
        outbox.put_many([OutboxItem("other", TOPIC, b"p", Kind.ALARM, 0, 1000.0)], note=("other", "kept"))
        outbox.drop_notes(state_journal.NOTE, through=4)
        assert outbox.notes(state_journal.NOTE) == [(5, "note 5"), (6, "note 6")]
        outbox.drop_notes(state_journal.NOTE)
        assert outbox.notes(state_journal.NOTE) == []
        assert outbox.notes("other") == [(0, "kept")]
