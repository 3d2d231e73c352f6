"""A really full disk (a small tmpfs filled by another file: ENOSPC), under a running agent and at a start.

`test_full_disk` limits the process's file size; this fills a real file system, as journald or a
forgotten recording fills an SD card. Before: with heartbeats flowing there is always an acknowledged row
waiting for its batched delete, and that delete failed with "database or disk is full" and ended the
uplink task within 2 s (exit 1); the restart then failed in the session counter with a raw ENOSPC
traceback, and systemd restarted it into the same crash, so the gateway stayed down.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from small_disk import fill, free_bytes, mount_small_disk
from test_full_disk import CONFIG, copies, phases
from test_operator_errors import AgentRun, status_json
from uplink_probe import Subscriber
from waiting import wait_until

from agent.config.schema import OutboxConfig
from agent.events import AlarmEvent, AlarmKind, Explanation, Heartbeat, Phase, Priority
from agent.localbroker import LocalBroker
from agent.outbox import DELETE_AT, Outbox
from agent.outbox.room import RESERVE_BYTES, sizing_warning
from agent.sealing import KEY_BYTES


@pytest.fixture
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    yield from mount_small_disk(request, tmp_path / "disk")


@pytest.fixture
def disk_8m(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    yield from mount_small_disk(request, tmp_path / "disk", "8m")


def _config(tmp_path: Path, disk: Path, port: int) -> Path:
    config = tmp_path / "agent.toml"
    text = CONFIG.format(port=port).replace('state_dir = "state"', f'state_dir = "{disk}/state"')
    config.write_text(text.replace('path = "state/outbox.sqlite"', f'path = "{disk}/state/outbox.sqlite"'))
    return config


def _alive(agent: AgentRun, predicate: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    wait_until(lambda: predicate() or agent.proc.poll() is not None, timeout_s, what)
    assert agent.proc.poll() is None, "the agent stopped:\n" + "\n".join(agent.lines[-30:])


def test_a_disk_filling_under_a_connected_agent_never_ends_the_uplink(
    make_broker: Callable[..., LocalBroker], tmp_path: Path, disk: Path
) -> None:
    broker = make_broker()
    central = Subscriber(broker, "edge/lab/gw-disk/alarm")
    beats = Subscriber(broker, "edge/lab/gw-disk/heartbeat")
    config = _config(tmp_path, disk, broker.port)
    agent = AgentRun(config)
    try:
        agent.wait_for("connected to")
        _alive(agent, lambda: len(beats.snapshot()) >= 2, "heartbeats delivered: an acknowledged row waits")
        filler = fill(disk)

        # The batched delete of acknowledged heartbeats fails now, when its WAL must grow (the outbox
        # test below does it for sure): it waits, and sending goes on.
        agent.wait_for("cannot write the outbox")
        full_since = len(beats.snapshot())
        _alive(agent, lambda: phases(central, "tachycardia") == ["start", "end"], "the episode sent directly")
        _alive(agent, lambda: phases(central, "outbox_unwritable") == ["start"], "outbox_unwritable sent")
        assert len(beats.snapshot()) > full_since + 2  # heartbeats sent directly
        assert not agent.having("ended unexpectedly") and not agent.having("Traceback")
        assert status_json(config)["outbox"]["writable"] is False

        filler.unlink()  # space is back: the held events are committed, the deletions written
        _alive(agent, lambda: copies(central, "tachycardia") == 4, "the outbox's copies delivered")
        _alive(agent, lambda: phases(central, "outbox_unwritable") == ["start", "end"], "its end")
        assert agent.stop() == 0
    finally:
        central.close()
        beats.close()
        if agent.proc.poll() is None:
            agent.proc.kill()


def _tmp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def _start_on_a_full_disk(
    make_broker: Callable[..., LocalBroker], tmp_path: Path, disk: Path, *, ran_before: bool
) -> None:
    broker = make_broker()
    central = Subscriber(broker, "edge/lab/gw-disk/alarm")
    beats = Subscriber(broker, "edge/lab/gw-disk/heartbeat")
    config = _config(tmp_path, disk, broker.port)
    agent = None
    try:
        if ran_before:  # a session ran and left its state; then the disk filled and the gateway restarted
            agent = AgentRun(config)
            _alive(agent, lambda: len(beats.snapshot()) >= 2, "a first session's heartbeats")
            assert agent.stop() == 0
        filler = fill(disk)
        agent = AgentRun(config)
        agent.wait_for("connected to")
        told = "\n".join(agent.lines)
        assert f"free space on the disk of {disk}/state" in told  # the session counter: named
        assert "Traceback" not in told
        _alive(agent, lambda: phases(central, "tachycardia") == ["start", "end"], "the episode sent directly")
        _alive(agent, lambda: phases(central, "outbox_unwritable") == ["start"], "outbox_unwritable sent")
        _alive(agent, lambda: len(beats.snapshot()) >= 4, "heartbeats sent directly")
        assert _tmp_files(disk / "state") == []

        filler.unlink()  # space is back: the outbox is written (set up first, if need be), sends its copies
        _alive(agent, lambda: copies(central, "tachycardia") == 4, "the outbox's copies delivered")
        _alive(agent, lambda: phases(central, "outbox_unwritable") == ["start", "end"], "its end")
        assert status_json(config)["outbox"]["writable"] is True
        assert agent.stop() == 0
        assert not agent.having("Traceback") and not agent.having("ended unexpectedly")
    finally:
        central.close()
        beats.close()
        if agent is not None and agent.proc.poll() is None:
            agent.proc.kill()


def test_an_agent_restarted_on_a_full_disk_monitors_and_sends_alarms_directly(
    make_broker: Callable[..., LocalBroker], tmp_path: Path, disk: Path
) -> None:
    """The outbox file is there: it is read and sent; its open's own writes wait for space."""
    _start_on_a_full_disk(make_broker, tmp_path, disk, ran_before=True)


def test_a_first_start_on_a_full_disk_monitors_and_sets_the_outbox_up_once_space_is_back(
    make_broker: Callable[..., LocalBroker], tmp_path: Path, disk: Path
) -> None:
    """No state folder yet: the outbox cannot even be set up (an empty stand-in serves), nor the
    pseudonym key saved (one in memory serves, saved once space is back)."""
    _start_on_a_full_disk(make_broker, tmp_path, disk, ran_before=False)


def _devices(beats: Subscriber) -> set[str]:
    return {d["device"] for m in beats.snapshot() for d in m.json()["devices"]}


@pytest.mark.parametrize("sealed", [True, False], ids=["sealed", "clear"])
def test_keys_made_on_a_full_disk_are_saved_once_space_is_back_and_serve_the_restart(
    make_broker: Callable[..., LocalBroker], tmp_path: Path, disk: Path, sealed: bool
) -> None:
    """A first start on a full disk with the outbox sealed at rest: neither key file can be written.
    Once space is back the same keys are saved before anything is sealed with them, so the restart opens
    what the first run stored (alarms, `pipeline.json.sealed`) and keeps its pseudonyms. Before: the
    start refused the unsaved outbox key (exit 1, systemd restarting it into the same refusal), and a
    pseudonym key kept in memory was never saved, so a restart changed every pseudonym."""
    broker = make_broker()
    central = Subscriber(broker, "edge/lab/gw-disk/alarm")
    beats = Subscriber(broker, "edge/lab/gw-disk/heartbeat")
    config = _config(tmp_path, disk, broker.port)
    state = disk / "state"
    if sealed:
        key = f'[outbox]\nencryption_key_file = "{state}/outbox.key"\n'
        config.write_text(config.read_text().replace("[outbox]\n", key))
    agent = None
    try:
        filler = fill(disk)
        agent = AgentRun(config)
        agent.wait_for("connected to")
        _alive(agent, lambda: phases(central, "tachycardia") == ["start", "end"], "the episode sent directly")
        _alive(agent, lambda: len(beats.snapshot()) >= 2, "heartbeats sent directly")
        first_devices = _devices(beats)
        assert not (state / "pseudonym.key").exists() and not (state / "outbox.key").exists()

        broker.stop()  # what the outbox stores from here waits in it, sealed, for the restart
        filler.unlink()
        if sealed:
            _alive(agent, lambda: (state / "outbox.key").exists(), "the outbox key saved")
        _alive(agent, lambda: (state / "pseudonym.key").exists(), "the pseudonym key saved")
        _alive(agent, lambda: status_json(config)["outbox"]["writable"], "the outbox set up")
        _alive(agent, lambda: status_json(config)["outbox"]["depth"] >= 4, "the held events stored")
        assert agent.having("pseudonym.key is saved: the next start keeps this run's pseudonyms")
        assert agent.stop() == 0
        assert (state / ("pipeline.json.sealed" if sealed else "pipeline.json")).exists()

        broker.start()
        central.close()
        beats.close()
        central = Subscriber(broker, "edge/lab/gw-disk/alarm")
        beats = Subscriber(broker, "edge/lab/gw-disk/heartbeat")
        agent = AgentRun(config)
        agent.wait_for("connected to")
        _alive(agent, lambda: phases(central, "tachycardia") == ["start", "end"], "the stored episode sent")
        _alive(agent, lambda: status_json(config)["outbox"]["depth"] == 0, "everything stored delivered")
        _alive(agent, lambda: len(beats.snapshot()) >= 1, "a heartbeat of the restart")
        assert _devices(beats) == first_devices  # the same pseudonyms
        assert {m.json()["device"] for m in central.snapshot() if m.json()["condition"] == "tachycardia"} <= (
            first_devices
        )
        assert "outbox_unreadable" not in {m.json()["condition"] for m in central.snapshot()}
        assert not agent.having("undecryptable") and not agent.having(".unreadable")
        assert agent.stop() == 0
    finally:
        central.close()
        beats.close()
        if agent is not None and agent.proc.poll() is None:
            agent.proc.kill()


class _Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _beat(outbox: Outbox, n: int) -> None:
    hb = Heartbeat("gw", 1_700_000_000.0 + n, 1.0, 1, (), 0, None, 0)
    outbox.put_heartbeat(hb, "edge/s/gw/heartbeat", 3600)


def test_acknowledged_rows_whose_deletion_a_full_disk_refuses_wait_and_are_deleted_later(disk: Path) -> None:
    """At the outbox itself, for sure: the deletion needs the WAL to grow, the disk refuses it; `take` and
    `delivered` (the uplink's loop and its PUBACK callback) go on, and the rows go once space is back."""
    clock = _Clock()
    outbox = Outbox(OutboxConfig(disk / "outbox.sqlite"), clock=clock)
    try:
        for n in range(DELETE_AT + 3):
            _beat(outbox, n)
        taken = outbox.take(DELETE_AT + 3)
        filler = fill(disk)
        for item in taken[:2]:
            outbox.delivered(item.id)
        clock.now += 2  # the batched delete is due in `take`
        assert outbox.take(1) == []  # nothing pending that is not in flight: no error either
        for item in taken[2:]:
            outbox.delivered(item.id)  # DELETE_AT of them wait: the batch is tried here too
        assert outbox.depth() == 0
        filler.unlink()
        clock.now += 2
        outbox.take(1)  # deletes now
        with outbox._lock:
            left = outbox._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        assert left == 0
    finally:
        outbox.close()


def _alarm(n: int) -> AlarmEvent:
    return AlarmEvent(
        id=f"ep-{n:05d}",
        seq=0,
        phase=Phase.START,
        gateway="gw",
        device="d-x",
        stream="vitals",
        condition="spo2_low",
        priority=Priority.HIGH,
        kind=AlarmKind.PHYSIOLOGICAL,
        onset_time=1_700_000_000.0 + n,
        detection_time=1_700_000_010.0 + n,
        value=85.0,
        threshold=92.0,
        unit="%",
        explanation=Explanation(detector="limit", score=85.0, threshold=92.0),
    )


def test_heartbeats_of_an_outage_leave_the_disk_room_for_alarms_that_survive_a_power_cut(
    disk_8m: Path,
) -> None:
    """The disk holds less than `max_bytes` (64 MiB by default): an outage's heartbeats stop taking room
    once it is down to the reserve, the alarms after them are stored on disk, not held in memory."""
    disk = disk_8m
    fill(disk, leave=RESERVE_BYTES + (1 << 20))
    path = disk / "outbox.sqlite"
    clock = _Clock()
    outbox = Outbox(OutboxConfig(path), clock=clock)
    try:
        for n in range(4000):  # about 2 MiB of heartbeats, the broker away
            _beat(outbox, n)
            clock.now += 1
        assert outbox.heartbeats_dropped() > 0
        assert free_bytes(disk) > RESERVE_BYTES - (1 << 20)  # at most the WAL's growth went into it
        for n in range(300):  # an outage's alarms: each one stored, none raises "disk is full"
            outbox.put_alarm(_alarm(n), "edge/s/gw/alarm")
        dropped = outbox.heartbeats_dropped()
    finally:
        outbox.close()
    reopened = Outbox(OutboxConfig(path), clock=clock)  # a power cut later: what is on disk
    try:
        with reopened._lock:
            kinds = dict(reopened._db.execute("SELECT kind, COUNT(*) FROM outbox GROUP BY kind").fetchall())
        assert kinds["alarm"] == 300  # (they took the room of the heartbeats, which are gone)
        assert reopened.heartbeats_dropped() == dropped  # counted across starts
    finally:
        reopened.close()


def test_check_config_and_the_start_count_the_same_stored_bytes_in_the_sizing_warning(
    disk_8m: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An outbox whose rows were delivered and deleted: its file keeps its size, it counts nothing.
    Before, `check-config` took the file's size for what is stored and the start the counted bytes, so
    about the same disk and bound one warned and the other did not."""
    path = disk_8m / "outbox.sqlite"
    clock = _Clock()
    outbox = Outbox(OutboxConfig(path), clock=clock)
    try:
        for n in range(3000):
            _beat(outbox, n)
        for item in outbox.take(3000):
            outbox.delivered(item.id)
        clock.now += 2
        outbox.take(1)  # the last batch deleted
        assert outbox.size_bytes() == 0
    finally:
        outbox.close()
    file_size = path.stat().st_size
    assert file_size > 1 << 20
    config = OutboxConfig(path, max_bytes=free_bytes(disk_8m) - RESERVE_BYTES + file_size // 2)

    offline = sizing_warning(config)  # what `edge-agent check-config` prints
    caplog.clear()
    with caplog.at_level(logging.WARNING, "agent.outbox"):
        Outbox(config).close()  # what the start logs
    at_start = [r.getMessage() for r in caplog.records if "is more than the disk" in r.getMessage()]
    assert offline is not None and at_start == [offline]
    assert sorted(p.name for p in disk_8m.iterdir()) == ["outbox.sqlite"]  # check-config wrote nothing


def test_an_outbox_key_a_full_disk_refused_seals_nothing_until_it_is_saved(disk: Path) -> None:
    """At the outbox itself: the stand-in serves and `pipeline.json` is not saved while its key is in
    memory only; once space is back a key file someone made meanwhile is used, not the memory's, and
    what is sealed from then on opens with the file's key at the next start."""
    state = disk / "state"
    state.mkdir()
    key_file = state / "outbox.key"
    config = OutboxConfig(state / "outbox.sqlite", encryption_key_file=key_file)
    filler = fill(disk)
    clock = _Clock()
    outbox = Outbox(config, clock=clock)
    try:
        assert not key_file.exists() and outbox.sealer is not None
        with pytest.raises(OSError, match="the outbox key is not saved yet"):
            outbox.sealer_to_write()  # the state saver's road: no save sealed with it
        with pytest.raises(sqlite3.OperationalError, match="could not be set up"):
            outbox.put_alarm(_alarm(0), "edge/s/gw/alarm")
        filler.unlink()
        made = os.urandom(KEY_BYTES)
        key_file.write_bytes(made)  # by hand, meanwhile
        key_file.chmod(0o600)
        clock.now += 2
        outbox.put_alarm(_alarm(1), "edge/s/gw/alarm")  # sets the file up, sealed with the file's key
        assert outbox.sealer_to_write() is outbox.sealer
    finally:
        outbox.close()
    assert key_file.read_bytes() == made
    reopened = Outbox(config, clock=clock)
    try:
        assert [item.id for item in reopened.take(10)] == ["ep-00001:0"]
        assert reopened.undecryptable_count() == 0
    finally:
        reopened.close()
