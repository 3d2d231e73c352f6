"""`Outbox.put_many`: one transaction per batch — all or none (a failing item, a SIGKILLed writer),
idempotent by id like `put`, and the same bound, eviction and warn-crossing rules as one-by-one puts."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agent.config.schema import OutboxConfig
from agent.outbox import HEARTBEAT_RANK, ROW_OVERHEAD, Kind, Outbox, OutboxItem

PAYLOAD = 200  # bytes per test payload


def item(item_id: str, kind: Kind = Kind.ALARM, topic: str = "t", created: float = 1.0) -> OutboxItem:
    rank = HEARTBEAT_RANK if kind is Kind.HEARTBEAT else 0
    return OutboxItem(item_id, topic, b"x" * PAYLOAD, kind, rank, created)


def row_size(topic: str = "t") -> int:
    return len(topic) + PAYLOAD + ROW_OVERHEAD


def open_box(path: Path, max_bytes: int = 1 << 20, warn: float = 0.8) -> Outbox:
    return Outbox(OutboxConfig(path, max_bytes, warn))


def test_put_many_stores_every_item_and_returns_one_result_each(tmp_path: Path) -> None:
    with open_box(tmp_path / "o.db") as box:
        results = box.put_many([item(f"a{i}", created=float(i)) for i in range(10)])
        assert len(results) == 10 and all(r.stored and r.evicted == 0 for r in results)
        assert [r.fill for r in results] == sorted(r.fill for r in results)  # each sees the ones before
        assert box.depth() == 10 and box.size_bytes() == 10 * row_size()
        assert [i.id for i in box.take(100)] == [f"a{i}" for i in range(10)]
        assert box.put_many([]) == []


def test_a_failing_item_rolls_back_the_whole_batch(tmp_path: Path) -> None:
    with open_box(tmp_path / "o.db", max_bytes=4 * row_size()) as box:
        box.put_many([item("hb0", Kind.HEARTBEAT), item("hb1", Kind.HEARTBEAT), item("old")])
        before = (box.depth(), box.size_bytes(), box.stats())
        # The second alarm evicts a heartbeat inside the transaction; the third cannot be stored at
        # all (its topic cannot be encoded), so the alarms and the eviction must all be undone.
        batch = [item("new1"), item("new2"), item("bad", topic="edge/\ud800")]
        with pytest.raises(UnicodeEncodeError):
            box.put_many(batch)
        assert (box.depth(), box.size_bytes(), box.stats()) == before
        assert box.get("new1") is None and box.get("new2") is None and box.get("hb0") is not None
        # The outbox is still usable, and the same good items can be committed afterwards.
        assert all(r.stored for r in box.put_many(batch[:2]))
        assert box.depth() == 4 and box.stats().evicted == 1
    with open_box(tmp_path / "o.db") as box:  # and that is what the file holds
        assert sorted(i.id for i in box.take(100)) == ["hb1", "new1", "new2", "old"]


def test_put_many_is_idempotent_by_id(tmp_path: Path) -> None:
    with open_box(tmp_path / "o.db") as box:
        box.put(item("a"))
        results = box.put_many([item("a"), item("b"), item("b"), item("c")])
        assert len(results) == 4
        assert box.depth() == 3 and box.size_bytes() == 3 * row_size()
        box.put_many([item("c"), item("a")])
        assert box.depth() == 3 and box.size_bytes() == 3 * row_size()


def test_batch_follows_the_bound_evicting_heartbeats_and_keeping_alarms(tmp_path: Path) -> None:
    with open_box(tmp_path / "o.db", max_bytes=4 * row_size(), warn=0.5) as box:
        box.put_many([item(f"hb{i}", Kind.HEARTBEAT, created=float(i)) for i in range(3)])
        results = box.put_many([item(f"a{i}") for i in range(5)] + [item("hb9", Kind.HEARTBEAT)])
        assert sum(r.evicted for r in results) == 3  # every heartbeat gave way, oldest first
        assert all(r.stored for r in results[:5]) and not results[5].stored  # alarms past the bound win
        assert box.stats().rejected == 1 and box.depth() == 5
        assert results[-1].fill == pytest.approx(5 / 4)


def test_warn_crossing_is_reported_once_inside_a_batch(tmp_path: Path) -> None:
    with open_box(tmp_path / "o.db", max_bytes=10 * row_size(), warn=0.5) as box:
        results = box.put_many([item(f"a{i}") for i in range(8)])
        assert [r.crossed_warn for r in results] == [False] * 4 + [True] + [False] * 3
        assert [r.warn for r in results] == [False] * 4 + [True] * 4
        assert not any(r.crossed_warn for r in box.put_many([item("a8")]))


BATCH = 50
WRITER = textwrap.dedent(
    f"""
    import sys
    from pathlib import Path
    from agent.config.schema import OutboxConfig
    from agent.outbox import Kind, Outbox, OutboxItem

    box = Outbox(OutboxConfig(Path(sys.argv[1]), 1 << 30, 0.8))
    start = int(sys.argv[2])
    for k in range(start, start + 100_000):
        batch = [OutboxItem(f"b{{k}}-{{i}}", "t", b"y" * 300, Kind.ALARM, 0, 1.0) for i in range({BATCH})]
        box.put_many(batch)
        print(k, flush=True)
    """
)


def test_sigkilled_batch_writer_leaves_whole_batches_only(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    acknowledged: set[int] = set()
    start = 0
    for _round in range(4):  # four kills at whatever point the writer has reached
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(start)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while len(lines) < 20 and time.monotonic() < deadline:
            lines.append(proc.stdout.readline())
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        lines += proc.stdout.readlines()
        done = {int(line) for line in lines if line.strip()}
        assert len(done) >= 20
        acknowledged |= done
        start = max(done) + 2  # the next writer does not repeat the batch the kill may have cut

    with open_box(path, max_bytes=1 << 30) as box:
        assert box.integrity_check() == "ok"
        ids = [i.id for i in box.take(1_000_000)]
    per_batch: dict[int, int] = {}
    for item_id in ids:
        k = int(item_id[1:].split("-")[0])
        per_batch[k] = per_batch.get(k, 0) + 1
    assert set(per_batch.values()) == {BATCH}  # no batch is partly there
    assert acknowledged <= set(per_batch)  # every batch whose put_many returned survived
    assert len(set(per_batch) - acknowledged) <= 4  # at most the one each kill cut after its commit


def test_a_new_outbox_and_its_folder_are_the_agents_users_only(tmp_path: Path) -> None:
    path = tmp_path / "new-folder" / "outbox.sqlite"  # outside any state_dir: nothing else protects it
    with open_box(path) as box:
        box.put_many([item("a1")])
        files = [path, path.with_name(path.name + "-wal")]
        assert {f.stat().st_mode & 0o777 for f in files} == {0o600}
    assert path.parent.stat().st_mode & 0o777 == 0o700
