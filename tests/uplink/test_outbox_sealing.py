"""Outbox encryption at rest: no plaintext in the files, round trip across reopen, wrong key and
tampering set rows aside (never sent, never deleted), key-file checks, and the v1 -> v2 migration."""

from __future__ import annotations

import base64
import logging
import os
import sqlite3
from pathlib import Path

import pytest

from agent.config.schema import OutboxConfig
from agent.errors import ConfigError
from agent.events import AlarmEvent, AlarmKind, Explanation, Phase, Priority
from agent.ids import uuid7
from agent.outbox import ROW_OVERHEAD, Kind, Outbox, OutboxError, OutboxItem, State
from agent.sealing import KEY_BYTES, SEAL_OVERHEAD, load_or_create_key, parse_key

PSEUDONYM = "p-zq7rk4mxw2ta"  # stands for anything in a payload that must not be readable at rest
TOPIC = "edge/site/gw/alarm"


def alarm(n: int) -> AlarmEvent:
    return AlarmEvent(
        id=str(uuid7()),
        seq=0,
        phase=Phase.START,
        gateway="gw1",
        device=PSEUDONYM,
        stream="vitals",
        condition="tachycardia",
        priority=Priority.HIGH,
        kind=AlarmKind.PHYSIOLOGICAL,
        onset_time=1_700_000_000.0 + n,
        detection_time=1_700_000_010.0 + n,
        value=142.0,
        threshold=120.0,
        unit="bpm",
        explanation=Explanation(detector="limit", score=142.0, threshold=120.0),
    )


def write_key(path: Path, key: bytes, form: str = "raw") -> Path:
    data = {"raw": key, "hex": key.hex().encode() + b"\n", "base64": base64.b64encode(key) + b"\n"}[form]
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def quoted(event_id: str) -> bytes:
    """How an event id appears inside a JSON payload (the row id column holds it unquoted)."""
    return b'"' + event_id.encode() + b'"'


def open_box(tmp_path: Path, key_file: Path | None) -> Outbox:
    return Outbox(OutboxConfig(tmp_path / "outbox.db", 1 << 20, 0.8, encryption_key_file=key_file))


def file_bytes(tmp_path: Path) -> bytes:
    """The outbox's bytes on disk: the database and, while open, its WAL and shared-memory files."""
    return b"".join(p.read_bytes() for p in sorted(tmp_path.glob("outbox.db*")))


def test_sealed_outbox_holds_no_plaintext_and_round_trips_across_reopen(tmp_path: Path) -> None:
    key_file = write_key(tmp_path / "outbox.key", os.urandom(KEY_BYTES))
    events = [alarm(n) for n in range(20)]
    payloads = {f"{e.id}:0": e.to_json() for e in events}
    with open_box(tmp_path, key_file) as box:
        assert box.sealer is not None
        box.put_alarms(events, TOPIC)
        for e in events:
            assert e.id.encode() in payloads[f"{e.id}:0"]  # the id is inside the payload too
        on_disk = file_bytes(tmp_path)  # database + WAL while open
        assert box.size_bytes() == sum(
            len(TOPIC) + len(p) + ROW_OVERHEAD + SEAL_OVERHEAD for p in payloads.values()
        )
    on_disk += file_bytes(tmp_path)  # after the checkpoint at close
    assert PSEUDONYM.encode() not in on_disk
    assert b"tachycardia" not in on_disk
    assert b'"onset_time"' not in on_disk
    # Row ids are stored in clear (receivers deduplicate by them), but not the payload's quoted copy.
    assert all(quoted(e.id) not in on_disk for e in events)

    with open_box(tmp_path, key_file) as box:
        taken = box.take(100)
        assert {i.id: i.payload for i in taken} == payloads
        assert box.get(taken[0].id) is not None and box.get(taken[0].id).payload == taken[0].payload  # type: ignore[union-attr]


def test_without_a_key_the_same_check_finds_the_plaintext(tmp_path: Path) -> None:
    """The control for the test above: the byte search does find payloads written in clear."""
    event = alarm(0)
    with open_box(tmp_path, None) as box:
        assert box.sealer is None
        box.put_alarms([event], TOPIC)
    on_disk = file_bytes(tmp_path)
    assert PSEUDONYM.encode() in on_disk and b"tachycardia" in on_disk and quoted(event.id) in on_disk


@pytest.mark.parametrize("form", ["raw", "hex", "base64"])
def test_key_file_forms_hold_the_same_key(tmp_path: Path, form: str) -> None:
    key = os.urandom(KEY_BYTES)
    with open_box(tmp_path, write_key(tmp_path / "a.key", key, "raw")) as box:
        box.put_alarms([alarm(1)], TOPIC)
    with open_box(tmp_path, write_key(tmp_path / f"{form}.key", key, form)) as box:
        assert len(box.take(10)) == 1 and box.undecryptable_count() == 0


def test_missing_key_file_is_created_0600_as_base64_and_reused(tmp_path: Path) -> None:
    key_file = tmp_path / "outbox.key"
    with open_box(tmp_path, key_file) as box:
        box.put_alarms([alarm(2)], TOPIC)
    assert key_file.stat().st_mode & 0o777 == 0o600
    text = key_file.read_bytes()
    assert len(text) == 45 and parse_key(text) == base64.b64decode(text)
    assert load_or_create_key(key_file) == base64.b64decode(text)
    with open_box(tmp_path, key_file) as box:
        assert len(box.take(10)) == 1


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    key_file = write_key(tmp_path / "outbox.key", os.urandom(KEY_BYTES))
    key_file.chmod(mode)
    with pytest.raises(ConfigError) as caught:
        open_box(tmp_path, key_file)
    assert caught.value.path == "outbox.encryption_key_file"
    assert f"mode {mode:o}" in str(caught.value) and "chmod 600" in str(caught.value)
    assert not (tmp_path / "outbox.db").exists()  # refused before anything was written


def test_key_file_without_a_key_is_refused(tmp_path: Path) -> None:
    key_file = write_key(tmp_path / "outbox.key", b"not a key\n")
    with pytest.raises(ConfigError, match="holds no AES-256 key") as caught:
        open_box(tmp_path, key_file)
    assert caught.value.path == "outbox.encryption_key_file"


def test_wrong_key_sets_rows_aside_with_an_error_naming_the_file_and_the_right_key_recovers_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key_a = write_key(tmp_path / "a.key", os.urandom(KEY_BYTES))
    key_b = write_key(tmp_path / "b.key", os.urandom(KEY_BYTES))
    old = [alarm(n) for n in range(3)]
    with open_box(tmp_path, key_a) as box:
        box.put_alarms(old, TOPIC)

    with caplog.at_level(logging.ERROR, logger="agent.outbox"), open_box(tmp_path, key_b) as box:
        assert box.take(10) == []  # nothing sent...
        assert box.undecryptable_count() == 3 and box.depth() == 0 and box.oldest_age() is None
        assert box.stats().undecryptable == 3
        new = alarm(9)
        box.put_alarms([new], TOPIC)  # ...and new alarms still flow under the configured key
        assert [i.id for i in box.take(10)] == [f"{new.id}:0"]
        box.delivered(f"{new.id}:0")
        with pytest.raises(OutboxError, match="cannot be decrypted"):
            box.get(f"{old[0].id}:0")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert str(tmp_path / "outbox.db") in errors[0] and "3 row(s) cannot be decrypted" in errors[0]
    assert "encryption_key_file" in errors[0]
    assert PSEUDONYM not in errors[0]

    # Nothing was deleted: back on the right key, the set-aside rows are delivered after a restart.
    with open_box(tmp_path, key_a) as box:
        taken = box.take(10)
        assert sorted(i.id for i in taken) == sorted(f"{e.id}:0" for e in old)
        assert {i.payload for i in taken} == {e.to_json() for e in old}
        assert box.undecryptable_count() == 0


def test_tampered_or_swapped_payloads_are_set_aside_and_the_rest_is_sent(tmp_path: Path) -> None:
    key_file = write_key(tmp_path / "outbox.key", os.urandom(KEY_BYTES))
    events = [alarm(n) for n in range(5)]
    ids = [f"{e.id}:0" for e in events]
    with open_box(tmp_path, key_file) as box:
        box.put_alarms(events, TOPIC)
    with sqlite3.connect(tmp_path / "outbox.db") as db:
        blob = bytearray(db.execute("SELECT payload FROM outbox WHERE id=?", (ids[0],)).fetchone()[0])
        blob[20] ^= 0x01
        db.execute("UPDATE outbox SET payload=? WHERE id=?", (bytes(blob), ids[0]))
        one, two = (db.execute("SELECT payload FROM outbox WHERE id=?", (i,)).fetchone()[0] for i in ids[1:3])
        db.execute("UPDATE outbox SET payload=? WHERE id=?", (two, ids[1]))
        db.execute("UPDATE outbox SET payload=? WHERE id=?", (one, ids[2]))
    db.close()
    with open_box(tmp_path, key_file) as box:
        sent = box.take(10)
        assert sorted(i.id for i in sent) == sorted(ids[3:])
        assert box.undecryptable_count() == 3
        assert box.get(ids[3]) is not None  # in flight, still there
        for item_id in ids[3:]:
            box.delivered(item_id)
        assert box.depth() == 0 and box.undecryptable_count() == 3  # the bad rows stay for the operator


def test_sealed_rows_opened_without_a_key_are_set_aside_not_sent_as_ciphertext(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key_file = write_key(tmp_path / "outbox.key", os.urandom(KEY_BYTES))
    with open_box(tmp_path, key_file) as box:
        box.put_alarms([alarm(0), alarm(1)], TOPIC)
    with caplog.at_level(logging.ERROR, logger="agent.outbox"), open_box(tmp_path, None) as box:
        assert box.take(10) == []
        assert box.undecryptable_count() == 2
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "no outbox.encryption_key_file is configured" in messages
    assert str(tmp_path / "outbox.db") in messages


def test_plaintext_rows_are_sealed_and_scrubbed_when_a_key_is_configured(tmp_path: Path) -> None:
    delivered, pending = alarm(0), alarm(1)
    beat = b'{"hb": "' + PSEUDONYM.encode() + b'"}'
    # A file with 4 KiB pages (SQLite's default, the outbox's before it used 1 KiB): the deleted row
    # shares its page with the others, so SQLite does not rebuild the page and its bytes stay behind.
    with sqlite3.connect(tmp_path / "outbox.db") as db:
        db.execute("PRAGMA page_size=4096")
        db.execute("CREATE TABLE scratch (x)")  # the page size of a file is set by its first write
        db.execute("DROP TABLE scratch")
    db.close()
    with open_box(tmp_path, None) as box:
        box.put_alarms([delivered, pending], TOPIC)
        box.put(OutboxItem("hb-1", "edge/site/gw/heartbeat", beat, Kind.HEARTBEAT, 3, 1_700_000_000.0))
    # A delivery made by an SQLite build without secure_delete leaves the payload in free space.
    with sqlite3.connect(tmp_path / "outbox.db") as db:
        db.execute("PRAGMA secure_delete=OFF")
        db.execute("DELETE FROM outbox WHERE id=?", (f"{delivered.id}:0",))
    db.close()
    assert quoted(delivered.id) in file_bytes(tmp_path)  # the precondition: plaintext left behind

    key_file = write_key(tmp_path / "outbox.key", os.urandom(KEY_BYTES))
    with open_box(tmp_path, key_file) as box:
        on_disk = file_bytes(tmp_path)
        assert PSEUDONYM.encode() not in on_disk and b"tachycardia" not in on_disk
        assert delivered.id.encode() not in on_disk  # the delivered row's free space was rewritten too
        taken = {i.id: i.payload for i in box.take(10)}
        assert taken == {f"{pending.id}:0": pending.to_json(), "hb-1": beat}
        topics = len(TOPIC) + len("edge/site/gw/heartbeat")
        assert box.size_bytes() == topics + sum(len(p) for p in taken.values()) + 2 * (
            ROW_OVERHEAD + SEAL_OVERHEAD
        )
    assert PSEUDONYM.encode() not in file_bytes(tmp_path)


V1_DDL = """
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('alarm', 'technical', 'heartbeat')),
    rank INTEGER NOT NULL,
    created REAL NOT NULL,
    expiry_s INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'inflight', 'refused')),
    reason_code INTEGER,
    size INTEGER NOT NULL
);
CREATE INDEX outbox_drain ON outbox (state, rank, created, seq);
CREATE INDEX outbox_evict ON outbox (kind, seq);
PRAGMA user_version=1;
"""


def test_a_version_1_outbox_is_migrated_keeping_rows_order_and_refusals(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "outbox.db")
    db.executescript(V1_DDL)
    rows = [
        ("late", TOPIC, b"{}", "alarm", 0, 20.0, None, 1, "inflight", None, len(TOPIC) + 2 + ROW_OVERHEAD),
        ("early", TOPIC, b"{}", "alarm", 0, 10.0, None, 0, "pending", None, len(TOPIC) + 2 + ROW_OVERHEAD),
        ("acl", TOPIC, b"{}", "alarm", 0, 5.0, None, 1, "refused", 135, len(TOPIC) + 2 + ROW_OVERHEAD),
    ]
    db.executemany(
        "INSERT INTO outbox (id, topic, payload, kind, rank, created, expiry_s, attempts, state, "
        "reason_code, size) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    db.commit()
    db.close()
    with open_box(tmp_path, None) as box:
        assert [i.id for i in box.take(10)] == ["early", "late"]
        assert [(i.id, i.state, i.reason_code) for i in box.refused_items()] == [("acl", State.REFUSED, 135)]
        assert box.size_bytes() == sum(r[-1] for r in rows)  # type: ignore[misc]
        assert box.integrity_check() == "ok"
    with sqlite3.connect(tmp_path / "outbox.db") as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == 2
    check.close()
