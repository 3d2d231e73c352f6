"""Outbox writes to the disk: rows in flight live in memory, acknowledged rows may be deleted in batches,
and new files use small pages, with the same guarantees (nothing lost on a crash, drain order, eviction,
refused rows kept). Commits are counted from a second connection (`PRAGMA data_version`); crashes are
real SIGKILLs of a writer process."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import agent.outbox.draining as draining_module  # DELETE_AT, DELETE_AFTER_S are read there
import agent.outbox.expiring as expiring_module  # EXPIRED_SCAN_S is read there
import agent.outbox.store as store_module  # PAGE_SIZE is read there
from agent.config.schema import OutboxConfig
from agent.outbox import HEARTBEAT_RANK, ROW_OVERHEAD, Kind, Outbox, OutboxItem, State

T0 = 1_700_000_000.0


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Watcher:
    """A second connection to the file: its rows as stored, and how many commits it has seen."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.version = self._version()
        self.commits = 0

    def _version(self) -> int:
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def count(self) -> int:
        """Commits since the last call (0 or 1: data_version only says whether something changed)."""
        version = self._version()
        changed = int(version != self.version)
        self.version = version
        self.commits += changed
        return changed

    def rows(self) -> dict[str, tuple[str, int]]:
        return {i: (s, a) for i, s, a in self.db.execute("SELECT id, state, attempts FROM outbox")}

    def stored_size(self) -> int:
        return int(self.db.execute("SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()[0])

    def close(self) -> None:
        self.db.close()


def item(
    item_id: str, created: float, kind: Kind = Kind.ALARM, size: int = 100, expiry_s: int | None = None
) -> OutboxItem:
    rank = HEARTBEAT_RANK if kind is Kind.HEARTBEAT else 0
    return OutboxItem(item_id, "t", b"x" * (size - 1 - ROW_OVERHEAD), kind, rank, created, expiry_s)


def open_box(path: Path, clock: Clock, max_bytes: int = 1 << 20) -> Outbox:
    return Outbox(OutboxConfig(path, max_bytes, 0.8), clock=clock)


@pytest.fixture
def batched(monkeypatch: pytest.MonkeyPatch) -> None:
    """Acknowledged rows deleted in batches, as with `DELETE_AT` above 1."""
    monkeypatch.setattr(draining_module, "DELETE_AT", 256)


@pytest.fixture
def unbatched(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each acknowledged row deleted in its own commit (`DELETE_AT` 1)."""
    monkeypatch.setattr(draining_module, "DELETE_AT", 1)


def test_take_writes_nothing_and_the_next_put_marks_the_rows_still_in_flight(
    tmp_path: Path, unbatched: None
) -> None:
    clock = Clock()
    box = open_box(tmp_path / "o.db", clock)
    for n in range(3):
        box.put(item(f"a{n}", T0 + n))
    watcher = Watcher(tmp_path / "o.db")
    assert [i.id for i in box.take(2)] == ["a0", "a1"]
    assert watcher.count() == 0  # no commit for taking
    assert watcher.rows()["a0"] == ("pending", 0)
    assert [i.id for i in box.take(5)] == ["a2"]  # never handed out twice
    assert box.take(5) == []
    taken = box.get("a0")
    assert taken is not None and (taken.state, taken.attempts) == (State.INFLIGHT, 1)
    assert box.depth() == 3
    box.put(item("a3", T0 + 3))
    assert watcher.count() == 1
    rows = watcher.rows()
    assert [rows[f"a{n}"] for n in range(4)] == [("inflight", 1)] * 3 + [("pending", 0)]
    box.delivered("a0")
    assert watcher.count() == 1 and "a0" not in watcher.rows()  # one commit per PUBACK (DELETE_AT 1)
    box.close()
    watcher.close()


def test_requeued_rows_are_pending_again_with_their_attempts(tmp_path: Path) -> None:
    box = open_box(tmp_path / "o.db", Clock())
    box.put(item("a", T0))
    box.put(item("b", T0 + 1))
    box.take(2)
    box.requeue("a")
    assert Watcher(tmp_path / "o.db").rows()["a"] == ("pending", 1)
    (again,) = box.take(5)
    assert (again.id, again.attempts) == ("a", 2)
    assert box.requeue_inflight() == 2  # a new MQTT client holds none of them
    assert [(i.id, i.attempts) for i in box.take(5)] == [("a", 3), ("b", 2)]


def test_heartbeats_in_flight_are_neither_evicted_nor_expired(tmp_path: Path, unbatched: None) -> None:
    clock = Clock()
    box = open_box(tmp_path / "o.db", clock, max_bytes=400)
    for n in range(3):
        box.put(item(f"hb{n}", T0, Kind.HEARTBEAT, expiry_s=60))
    assert [i.id for i in box.take(1)] == ["hb0"]
    clock.t = T0 + 61  # all three expired: the two pending ones are dropped, not the one in flight
    assert box.take(5) == []
    assert box.stats().expired == 2 and box.get("hb0") is not None  # its PUBACK is awaited
    box.put(item("hb3", clock.t, Kind.HEARTBEAT, expiry_s=60))
    box.put(item("hb4", clock.t, Kind.HEARTBEAT, expiry_s=60))
    result = box.put(item("a0", clock.t, size=300))  # needs two heartbeats' room: not the one in flight
    assert result.stored and result.evicted == 2
    assert box.get("hb0") is not None and box.get("hb3") is None and box.get("hb4") is None
    assert [i.id for i in box.take(5)] == ["a0"]
    box.delivered("hb0")
    box.delivered("a0")
    watcher = Watcher(tmp_path / "o.db")
    assert box.size_bytes() == watcher.stored_size() == 0
    watcher.close()


def test_rows_in_flight_at_a_crash_are_sent_again_in_order(tmp_path: Path) -> None:
    """A writer takes rows (some marked in the file by a later put, some not) and is SIGKILLed."""
    path = tmp_path / "crash.db"
    writer = textwrap.dedent(
        """
        import os, signal, sys
        from pathlib import Path
        from agent.config.schema import OutboxConfig
        from agent.outbox import Kind, Outbox, OutboxItem
        box = Outbox(OutboxConfig(Path(sys.argv[1])))
        for n in range(6):
            box.put(OutboxItem(f"a{n}", "t", b"p", Kind.ALARM, n % 3, 1000.0 + n))
        box.take(2)
        box.put(OutboxItem("late", "t", b"p", Kind.ALARM, 2, 2000.0))  # marks the two in the file
        box.take(3)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", writer, str(path)], timeout=60, check=False)
    assert proc.returncode == -signal.SIGKILL
    states = {s for (s, _) in Watcher(path).rows().values()}
    assert states == {"pending", "inflight"}  # both kinds of row in flight were there at the kill
    box = open_box(path, Clock())
    taken = box.take(10)
    assert [i.id for i in taken] == ["a0", "a3", "a1", "a4", "a2", "a5", "late"]  # rank, then age
    assert [i.attempts for i in taken] == [2, 2, 1, 1, 1, 1, 1]  # the marked rows kept their attempt


def test_a_new_file_uses_small_pages_and_an_existing_file_keeps_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def page_size(path: Path) -> int:
        with sqlite3.connect(path) as db:
            return int(db.execute("PRAGMA page_size").fetchone()[0])

    monkeypatch.setattr(store_module, "PAGE_SIZE", 4096)
    old = open_box(tmp_path / "old.db", Clock())
    old.put(item("kept", T0))
    old.close()
    monkeypatch.setattr(store_module, "PAGE_SIZE", 1024)
    new = open_box(tmp_path / "new.db", Clock())
    new.put(item("a", T0, size=3000))  # an overflowing row too
    assert page_size(tmp_path / "new.db") == 1024
    reopened = open_box(tmp_path / "old.db", Clock())
    assert page_size(tmp_path / "old.db") == 4096
    assert [i.id for i in reopened.take(5)] == ["kept"]
    assert [i.payload for i in new.take(5)] == [b"x" * (3000 - 1 - ROW_OVERHEAD)]
    assert new.integrity_check() == reopened.integrity_check() == "ok"


# -- batched deletes (DELETE_AT above 1) -----------------------------------------------------------------


def test_a_delivered_row_waiting_for_its_delete_is_gone_for_every_reader(
    tmp_path: Path, batched: None
) -> None:
    clock = Clock()
    box = open_box(tmp_path / "o.db", clock)
    box.put(item("a", T0))
    box.put(item("b", T0 + 5))
    box.take(2)
    size_with_both = box.size_bytes()
    watcher = Watcher(tmp_path / "o.db")
    box.delivered("a")
    box.delivered("a")  # a second PUBACK for the same row changes nothing
    assert watcher.count() == 0 and "a" in watcher.rows()  # still in the file...
    assert box.get("a") is None and box.depth() == 1  # ...but delivered for every reader
    assert box.size_bytes() == size_with_both - 100
    assert box.oldest_age(T0 + 10) == pytest.approx(5.0)  # b's, not a's
    assert box.take(5) == []  # b is in flight, a is delivered: neither is taken again
    box.put(item("c", T0 + 6))  # the deletion rides on the put's commit
    assert watcher.count() == 1 and set(watcher.rows()) == {"b", "c"}
    assert box.size_bytes() == watcher.stored_size()
    box.refused("b", 0x87)
    box.delivered(box.take(5)[0].id)
    assert box.depth() == 0 and box.oldest_age() is None and box.take(5) == []
    assert box.refused_count() == 1 and box.size_bytes() == 100
    watcher.close()


def test_batched_deletes_go_with_the_next_put_or_after_delete_after_s_or_at_close(
    tmp_path: Path, batched: None
) -> None:
    clock = Clock()
    box = open_box(tmp_path / "o.db", clock)
    watcher = Watcher(tmp_path / "o.db")
    commits = []
    for n in range(10):  # one event at a time, as on a working link: put, take, PUBACK, take
        clock.t = T0 + n * 0.1
        box.put(item(f"e{n}", clock.t))
        (taken,) = box.take(5)
        box.delivered(taken.id)
        box.take(5)
        commits.append(watcher.count())
    assert commits == [1] * 10  # the put only: each delete rode on the next put
    assert set(watcher.rows()) == {"e9"}
    clock.t = T0 + 0.9 + draining_module.DELETE_AFTER_S / 2
    box.take(5)
    assert watcher.count() == 0  # too soon
    clock.t = T0 + 0.9 + draining_module.DELETE_AFTER_S + 0.01
    box.take(5)  # the uplink polls at least once a second
    assert watcher.count() == 1 and not watcher.rows()
    box.put(item("last", clock.t))
    (taken,) = box.take(5)
    box.delivered(taken.id)
    box.close()
    assert not watcher.rows()
    watcher.close()


def test_delete_at_bounds_the_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(draining_module, "DELETE_AT", 3)
    box = open_box(tmp_path / "o.db", Clock())
    box.put_many([item(f"a{n}", T0 + n) for n in range(5)])
    watcher = Watcher(tmp_path / "o.db")
    for taken in box.take(5):
        box.delivered(taken.id)
    assert set(watcher.rows()) == {"a3", "a4"}  # the first three went in one commit
    assert watcher.count() == 1
    watcher.close()


def test_a_crash_before_the_batched_delete_sends_the_rows_again_and_loses_none(tmp_path: Path) -> None:
    """A writer puts, takes and acknowledges in a loop with batched deletes and is SIGKILLed at a random
    point: every put is there after the crash unless its delete was committed (by a later put), and the
    rows acknowledged since the last commit come back (duplicates, never losses)."""
    path = tmp_path / "crash.db"
    writer = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        import agent.outbox.draining as draining_module
        from agent.config.schema import OutboxConfig
        from agent.outbox import Kind, Outbox, OutboxItem
        draining_module.DELETE_AT = 256
        box = Outbox(OutboxConfig(Path(sys.argv[1]), 1 << 30, 0.8))
        acknowledged = []
        n = 0
        while True:
            kind, rank = (Kind.HEARTBEAT, 3) if n % 3 == 0 else (Kind.ALARM, 0)
            box.put(OutboxItem(f"id{n}", "t", b"p" * 300, kind, rank, time.time()))
            print("put", f"id{n}", flush=True)
            for item_id in acknowledged:  # their deletion was committed with this put
                print("deleted", item_id, flush=True)
            acknowledged = []
            for taken in box.take(2)[:1]:
                box.delivered(taken.id)
                acknowledged.append(taken.id)
                print("acked", taken.id, flush=True)
            n += 1
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", writer, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = [proc.stdout.readline() for _ in range(900)]
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    lines += proc.stdout.readlines()
    words = [line.split() for line in lines if line.endswith("\n")]  # not a line the kill cut short
    put = {w[1] for w in words if w[0] == "put"}
    acked = {w[1] for w in words if w[0] == "acked"}
    deleted = {w[1] for w in words if w[0] == "deleted"}
    assert len(put) >= 200 and len(deleted) >= 100

    box = Outbox(OutboxConfig(path, 1 << 30, 0.8))
    assert box.integrity_check() == "ok"
    remaining = {i.id for i in box.take(100_000)}
    assert put - acked <= remaining  # nothing lost
    assert not remaining & deleted  # a committed delete is not undone...
    assert len(remaining & acked) <= 1  # ...and the row acknowledged after the last put comes back
    assert len(remaining - put) <= 1  # at most the put the kill interrupted after its commit


def test_expired_heartbeats_are_never_handed_out_and_the_full_look_is_paced(tmp_path: Path) -> None:
    """`take` checks each heartbeat it would hand out; the look through every heartbeat (which reads
    their overflow pages) runs at most every EXPIRED_SCAN_S."""
    clock = Clock()
    box = open_box(tmp_path / "o.db", clock)
    box.put(item("a0", T0))
    box.put(item("a1", T0 + 1))
    box.put(item("hb", T0, Kind.HEARTBEAT, expiry_s=10))
    assert [i.id for i in box.take(1)] == ["a0"]  # the full look, at T0: nothing expired yet
    clock.t = T0 + 11
    assert [i.id for i in box.take(1)] == ["a1"]  # the heartbeat expired, but no look is due...
    assert box.stats().expired == 0
    assert box.take(5) == []  # ...and the scan that reaches it drops it instead of handing it out
    assert box.stats().expired == 1 and box.get("hb") is None
    box.put(item("hb2", T0 + 11, Kind.HEARTBEAT, expiry_s=10))
    box.put(item("a2", T0 + 11))
    clock.t = T0 + 11 + expiring_module.EXPIRED_SCAN_S
    assert [i.id for i in box.take(1)] == ["a2"]  # the full look is due: hb2 goes though not reached
    assert box.stats().expired == 2 and box.get("hb2") is None
