"""A torn end of the outbox's WAL (a card that lost data after fsync) is told at the open, not silent.

Offline review M2: 64 random bytes in the last frame of the WAL, after a kill -9, made SQLite drop the
last committed transaction at the next open; the episode whose START had been delivered never got its
END, and nothing said so. The writer here is a real process putting alarm events into a real outbox
and killed with SIGKILL, as the reviewer's kill.py did; then the WAL is damaged as it did (bytes
overwritten in the last frame), or cut short, and the outbox opened again."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import pytest
from test_reload_safety import CONFIG, no_broker_port

from agent.config import load_config
from agent.config.schema import OutboxConfig
from agent.daemon import Agent
from agent.outbox import Outbox
from agent.outbox.wal_tail import read_wal_tail
from agent.status import read_status, render

EPISODES = 20

WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from agent.config.schema import OutboxConfig
    from agent.outbox import Kind, Outbox, OutboxItem
    box = Outbox(OutboxConfig(Path(sys.argv[1])))
    for n in range(int(sys.argv[2])):  # each episode's start, then its end: one commit each
        box.put(OutboxItem(f"episode{n}:0", "edge/s/gw/alarm", b"s" * 700, Kind.ALARM, 0, 1000.0 + n))
        box.put(OutboxItem(f"episode{n}:1", "edge/s/gw/alarm", b"e" * 700, Kind.ALARM, 0, 1000.5 + n))
    print("committed", flush=True)
    time.sleep(60)
    """
)


def killed_writer(path: Path) -> Path:
    """Put the episodes' events from another process and kill it with SIGKILL; the WAL it left."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(EPISODES)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"committed\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    wal = path.with_name(path.name + "-wal")
    assert wal.stat().st_size > 4096
    return wal


def torn_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "the end of its WAL" in r.getMessage()]


def test_bytes_damaged_in_the_last_frame_are_told_once_naming_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.sqlite"
    wal = killed_writer(path)
    size = wal.stat().st_size
    with wal.open("r+b") as f:  # as kill.py's wal_flip: 64 bytes within the last frame's page
        f.seek(size - 500)
        f.write(bytes(range(64)))
    caplog.set_level(logging.WARNING, logger="agent.outbox")
    with Outbox(OutboxConfig(path)) as outbox:
        ids = {i.id for i in outbox.take(100)}
        assert "episode0:0" in ids and f"episode{EPISODES - 1}:1" not in ids  # the last end is gone...
        assert outbox.torn_wal is not None and outbox.torn_wal.lost_transactions >= 1
    (warning,) = torn_warnings(caplog)  # ...and told, once
    assert f"{path}-wal" in warning and "active_alarms" in warning


def test_a_wal_cut_short_is_told_from_the_index_the_writer_left(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.sqlite"
    wal = killed_writer(path)
    os.truncate(wal, wal.stat().st_size - 3000)  # as kill.py's wal_trunc: whole frames gone
    caplog.set_level(logging.WARNING, logger="agent.outbox")
    with Outbox(OutboxConfig(path)) as outbox:
        assert f"episode{EPISODES - 1}:1" not in {i.id for i in outbox.take(100)}
        assert outbox.torn_wal is not None and outbox.torn_wal.lost_frames >= 2
    assert len(torn_warnings(caplog)) == 1


def test_a_kill_on_a_sound_card_and_a_clean_close_tell_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.sqlite"
    killed_writer(path)
    caplog.set_level(logging.WARNING, logger="agent.outbox")
    with Outbox(OutboxConfig(path)) as outbox:  # the WAL left by the kill, replayed in full
        assert len(outbox.take(100)) == 2 * EPISODES
        assert outbox.torn_wal is None
    with Outbox(OutboxConfig(path)) as outbox:  # after a clean close: no WAL
        assert outbox.torn_wal is None
    assert torn_warnings(caplog) == []


BIG_WRITER = textwrap.dedent(
    """
    import os, sqlite3, sys
    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")  # the WAL keeps every frame, as one in a long outage
    db.execute("CREATE TABLE t (b BLOB)")
    for _ in range(40):
        db.execute("INSERT INTO t VALUES (?)", (os.urandom(200_000),))
    os._exit(0)  # no close: the WAL stays, as after a crash
    """
)


def test_a_large_wal_is_read_a_frame_at_a_time(tmp_path: Path) -> None:
    """The WAL keeps the size it grew to; its reader must not hold it in memory at the gateway's start."""
    path = tmp_path / "big.sqlite"
    subprocess.run([sys.executable, "-c", BIG_WRITER, str(path)], check=True, timeout=60)
    wal_size = path.with_name(path.name + "-wal").stat().st_size
    assert wal_size > 8_000_000
    tracemalloc.start()
    try:
        tail = read_wal_tail(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tail is not None and tail.replayed == tail.frames > 1000 and not tail.lost
    assert peak < 256 * 1024, f"{peak} bytes held to read a WAL of {wal_size}"


def test_status_tells_the_transactions_the_wal_lost_at_this_start() -> None:
    beat = {"gateway": "gw1", "session": 3, "uptime_s": 10, "devices": [], "outbox_depth": 2}
    assert "WAL" not in render("live", {"heartbeat": beat, "outbox": {"wal_lost_at_start": 0}})
    lines = render("live", {"heartbeat": beat, "outbox": {"wal_lost_at_start": 1}})
    assert "its WAL lost at least 1 committed transaction(s) before this start (a power cut" in lines


def test_a_reload_keeps_what_the_wal_lost_at_the_process_start_in_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first open of the process finds the torn WAL; a reload opens the outbox again, with the WAL
    already replayed: its status still says what was lost at the start (the diff review, minor 7)."""
    monkeypatch.chdir(tmp_path)  # the config's state_dir and outbox path are relative
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG.format(port=no_broker_port()))  # no broker needed: the uplink keeps trying
    (tmp_path / "state").mkdir(mode=0o700)
    wal = killed_writer(tmp_path / "state" / "outbox.sqlite")
    os.truncate(wal, wal.stat().st_size - 3000)
    agent = Agent(load_config(config))

    async def lost_in_status(session: int) -> int:
        for _ in range(200):
            found = await asyncio.to_thread(read_status, tmp_path / "state")
            live = found is not None and found.source == "live"
            if live and found is not None and found.status["heartbeat"]["session"] == session:
                return int(found.status["outbox"]["wal_lost_at_start"])
            await asyncio.sleep(0.1)
        raise AssertionError(f"no live status of session {session}")

    async def main() -> tuple[int, int]:
        task = asyncio.create_task(agent.run())
        first = await lost_in_status(1)
        agent.reloading.set()
        second = await lost_in_status(2)
        agent.stopping.set()
        await asyncio.wait_for(task, 30)
        return first, second

    first, second = asyncio.run(main())
    assert first >= 1 and second == first
