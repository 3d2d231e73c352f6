"""A damaged outbox file is refused when it is opened, with an error naming the file.

Before: a damaged index opened fine and `take` silently skipped the rows it no longer reached (or raised a
raw SQLite error mid-run, stopping the agent), and a schema whose text is not UTF-8 raised
UnicodeDecodeError instead of OutboxError (a traceback at start instead of a message)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

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
