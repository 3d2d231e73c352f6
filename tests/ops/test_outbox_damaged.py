"""A damaged outbox file is refused when it is opened, with an error naming the file.

Before: a damaged index opened fine and `take` silently skipped the rows it no longer reached (or raised a
raw SQLite error mid-run, stopping the agent), and a schema whose text is not UTF-8 raised
UnicodeDecodeError instead of OutboxError (a traceback at start instead of a message)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from daemon_session import CONFIG, session

from agent.config import parse_config
from agent.config.schema import OutboxConfig
from agent.outbox import Kind, Outbox, OutboxDamagedError, OutboxError, OutboxItem

ROWS = 300


def written_outbox(path: Path) -> None:
    with Outbox(OutboxConfig(path)) as outbox:
        for i in range(ROWS):
            kind = Kind.HEARTBEAT if i % 2 else Kind.ALARM
            outbox.put(OutboxItem(f"id{i}", "edge/s/gw/alarm", b"p" * 200, kind, i % 4, 1000.0 + i))
    with sqlite3.connect(path) as db:  # everything into the main file, as after a clean stop
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def test_an_outbox_with_a_damaged_index_is_refused_not_drained_short(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    written_outbox(path)
    with sqlite3.connect(path) as db:
        (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name='outbox_drain'").fetchone()
        (page,) = db.execute("PRAGMA page_size").fetchone()
    data = bytearray(path.read_bytes())
    start = (root - 1) * page
    data[start + 100 : start + page] = bytes(page - 100)  # the drain index's cells gone, header kept
    path.write_bytes(bytes(data))
    with pytest.raises(OutboxError) as info:  # opened before, and take() returned 148 of 300 rows
        Outbox(OutboxConfig(path))
    assert info.value.path == path and "damaged" in info.value.reason


def test_an_outbox_whose_schema_is_not_utf8_is_an_outbox_error(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    written_outbox(path)
    data = bytearray(path.read_bytes())
    at = data.find(b"CREATE INDEX outbox_evict ON outbox (kind, seq)")
    data[at + 40] = 0xB0
    path.write_bytes(bytes(data))
    with pytest.raises(OutboxError) as info:
        Outbox(OutboxConfig(path))
    assert info.value.path == path


def test_a_sound_outbox_opens_and_drains_every_row(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    written_outbox(path)
    with Outbox(OutboxConfig(path)) as outbox:
        assert outbox.integrity_check() == "ok"
        assert len(outbox.take(ROWS + 10)) == ROWS


def damage_index(path: Path) -> None:
    with sqlite3.connect(path) as db:
        (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name='outbox_drain'").fetchone()
        (page,) = db.execute("PRAGMA page_size").fetchone()
    data = bytearray(path.read_bytes())
    data[(root - 1) * page + 100 : root * page] = bytes(page - 100)
    path.write_bytes(bytes(data))


def test_the_agent_sets_a_damaged_outbox_aside_and_opens_a_fresh_one(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    written_outbox(path)
    damage_index(path)
    damaged = path.read_bytes()
    outbox, aside = Outbox.open_or_replace(OutboxConfig(path))
    with outbox:
        assert aside is not None and aside.name.startswith("outbox.sqlite.damaged-")
        assert aside.read_bytes() == damaged  # kept for recovery, byte for byte
        assert outbox.take(10) == []
        outbox.put(OutboxItem("new", "edge/s/gw/alarm", b"p", Kind.ALARM, 0, 2000.0))
        assert [i.id for i in outbox.take(10)] == ["new"]
    sound, none = Outbox.open_or_replace(OutboxConfig(path))  # the fresh file is sound: left as it is
    with sound:
        assert none is None and len(sound.take(10)) == 1


def test_an_outbox_that_cannot_be_opened_is_not_taken_for_damaged(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    path.mkdir()  # not a file at all: an error to report, not bytes to set aside
    with pytest.raises(OutboxError) as info:
        Outbox.open_or_replace(OutboxConfig(path))
    assert not isinstance(info.value, OutboxDamagedError)
    assert path.is_dir() and list(tmp_path.iterdir()) == [path]


# A row whose text is not UTF-8 (SQLite does not check cell contents, so integrity_check passes). Before the
# fix, take() raised sqlite3.OperationalError "Could not decode to UTF-8" on it: the uplink task died and
# systemd restarted the agent into the same file (1 of 400 damaged copies in the fuzz run).


def damage_text(path: Path, text: bytes) -> None:
    """Every on-disk copy of `text` (the table's cell and, for an id, its index entry) gets a last byte
    that is not UTF-8: consistent copies, so `PRAGMA integrity_check` still says ok."""
    data = bytearray(path.read_bytes())
    at = data.find(text)
    assert at >= 0
    while at >= 0:
        data[at + len(text) - 1] = 0xFF
        at = data.find(text, at + 1)
    path.write_bytes(bytes(data))


def test_a_row_whose_text_is_not_utf8_is_set_aside_and_the_others_are_delivered_in_order(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.sqlite"
    with Outbox(OutboxConfig(path)) as outbox:
        for i in range(40):
            outbox.put(
                OutboxItem(f"row-{i:04d}", f"edge/s/gw/topic-{i:04d}", b"p" * 50, Kind.ALARM, 0, 1000.0 + i)
            )
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    damage_text(path, b"edge/s/gw/topic-0007")  # a topic: not indexed, one copy
    damage_text(path, b"row-0039")  # an id: in the table and in its unique index
    with Outbox(OutboxConfig(path)) as outbox:
        assert outbox.integrity_check() == "ok"
        assert outbox.depth() == 40 and outbox.oldest_age(2000.0) == 1000.0
        taken = outbox.take(15) + outbox.take(100)
        expected = [f"row-{i:04d}" for i in range(39) if i != 7]
        assert [i.id for i in taken] == expected  # every other row, in order
        assert outbox.undecryptable_count() == 2 and outbox.stats().undecryptable == 2
        for item in taken:
            outbox.delivered(item.id)
        assert outbox.depth() == 0 and outbox.oldest_age() is None and outbox.take(10) == []
        outbox.put(OutboxItem("new", "edge/s/gw/alarm", b"p", Kind.ALARM, 0, 3000.0))
        assert [i.id for i in outbox.take(10)] == ["new"]
        outbox.delivered("new")
    with Outbox(OutboxConfig(path)) as outbox:  # set aside, not deleted: back at the next start, aside again
        assert outbox.take(10) == [] and outbox.undecryptable_count() == 2


def test_a_heartbeat_whose_text_is_not_utf8_can_still_be_evicted_for_room(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    config = OutboxConfig(path, max_bytes=64 * 1024)
    with Outbox(config) as outbox:
        for i in range(20):
            outbox.put(
                OutboxItem(f"hb-{i:04d}", f"edge/s/gw/hb-{i:04d}", b"h" * 1000, Kind.HEARTBEAT, 3, 1000.0 + i)
            )
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    damage_text(path, b"hb-0019")  # an id, which eviction reads (the last: its index order holds)
    with Outbox(config) as outbox:
        for i in range(62):  # fills past the bound: every heartbeat, the damaged one too, goes
            outbox.put(OutboxItem(f"a-{i:04d}", "edge/s/gw/alarm", b"a" * 1000, Kind.ALARM, 0, 2000.0 + i))
        assert outbox.stats().evicted == 20


def test_a_note_whose_text_is_not_utf8_is_left_out(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with Outbox(OutboxConfig(path)) as outbox:
        for i, text in enumerate(("first-note", "second-note", "third-note")):
            item = OutboxItem(f"n{i}", "edge/s/gw/alarm", b"p", Kind.ALARM, 0, 1000.0)
            outbox.put_many([item], note=("episodes", text))
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    damage_text(path, b"second-note")
    with Outbox(OutboxConfig(path)) as outbox:
        assert outbox.notes("episodes") == [(0, "first-note"), (2, "third-note")]
        outbox.put_many(
            [OutboxItem("n3", "edge/s/gw/alarm", b"p", Kind.ALARM, 0, 1000.0)], note=("episodes", "4th")
        )
        assert outbox.notes("episodes") == [(0, "first-note"), (2, "third-note"), (3, "4th")]


def test_a_damaged_row_raises_the_outbox_unreadable_alarm(tmp_path: Path) -> None:
    with Outbox(parse_config(CONFIG, base_dir=tmp_path).outbox) as outbox:
        outbox.put(OutboxItem("ev1", "edge/s/gw/alarm-ev1", b"{}", Kind.ALARM, 0, 1_000.0))
        outbox.put(OutboxItem("ev2", "edge/s/gw/alarm-ev2", b"{}", Kind.ALARM, 0, 1_001.0))
    path = tmp_path / "outbox.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    damage_text(path, b"edge/s/gw/alarm-ev1")

    run = session(tmp_path)  # the agent starts: the file passes its integrity check
    assert [i.id for i in run.outbox.take(10)] == ["ev2"]  # the uplink's take goes on past the bad row
    run.outbox.delivered("ev2")
    run.check_gateway(2_000.0, 0.0)
    (item,) = run.outbox.take(10)
    alarm = json.loads(item.payload)
    assert (alarm["condition"], alarm["phase"], alarm["priority"]) == ("outbox_unreadable", "start", "high")
    assert "damaged" in alarm["explanation"]["text"]
