"""Outbox: drain order, delivery/refusal, byte bound and eviction, durability across reopen and crashes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from agent.config.schema import OutboxConfig
from agent.events import AlarmEvent, AlarmKind, DeviceHealth, Explanation, Heartbeat, Phase, Priority
from agent.ids import uuid7
from agent.outbox import HEARTBEAT_RANK, ROW_OVERHEAD, Kind, Outbox, OutboxItem, State


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def tick(self, dt: float = 1.0) -> float:
        self.t += dt
        return self.t


def alarm(
    priority: Priority = Priority.HIGH, seq: int = 0, kind: AlarmKind = AlarmKind.PHYSIOLOGICAL
) -> AlarmEvent:
    return AlarmEvent(
        id=str(uuid7()),
        seq=seq,
        phase=Phase.START if seq == 0 else Phase.UPDATE,
        gateway="gw1",
        device="dev-abc",
        stream="vitals",
        condition="tachycardia",
        priority=priority,
        kind=kind,
        onset_time=1_700_000_000.0,
        detection_time=1_700_000_010.0,
        value=142.0,
        threshold=120.0,
        unit="bpm",
        explanation=Explanation(detector="limit", score=142.0, threshold=120.0),
    )


def heartbeat(t: float = 1_700_000_000.0) -> Heartbeat:
    dev = DeviceHealth("dev-abc", t, 1.0, 0, 0, True)
    return Heartbeat("gw1", t, 10.0, 1, (dev,), 0, None, 0)


def item(item_id: str, kind: Kind, rank: int, created: float, size: int = 100) -> OutboxItem:
    return OutboxItem(item_id, "t", b"x" * (size - 1 - ROW_OVERHEAD), kind, rank, created)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def open_box(tmp_path: Path, clock: Clock, max_bytes: int = 1 << 20, warn: float = 0.8) -> Outbox:
    return Outbox(OutboxConfig(tmp_path / "outbox.db", max_bytes, warn), clock=clock)


def test_take_drains_alarms_by_priority_then_age_and_heartbeats_last(tmp_path: Path, clock: Clock) -> None:
    box = open_box(tmp_path, clock)
    box.put_heartbeat(heartbeat(), "hb", 120)
    clock.tick()
    box.put(item("low", Kind.ALARM, Priority.LOW.rank, clock()))
    box.put(item("high-old", Kind.ALARM, Priority.HIGH.rank, clock.tick()))
    box.put(item("tech-med", Kind.TECHNICAL, Priority.MEDIUM.rank, clock.tick()))
    box.put(item("high-new", Kind.ALARM, Priority.HIGH.rank, clock.tick()))
    taken = box.take(10)
    assert [i.id for i in taken][:4] == ["high-old", "high-new", "tech-med", "low"]
    assert taken[4].kind is Kind.HEARTBEAT and taken[4].rank == HEARTBEAT_RANK
    assert all(i.state is State.INFLIGHT and i.attempts == 1 for i in taken)
    assert box.take(10) == []  # in flight: not handed out twice
    assert box.depth() == 5


def test_an_escalated_episode_leaves_in_seq_order_at_its_new_priority(tmp_path: Path, clock: Clock) -> None:
    # Queued during an outage: a MEDIUM start, another MEDIUM alarm, then the first one's HIGH update.
    # By priority alone the update would overtake its own start (integrator audit, finding 2).
    box = open_box(tmp_path, clock)
    start = alarm(Priority.MEDIUM)
    box.put_alarm(start, "a")
    clock.tick()
    other = alarm(Priority.MEDIUM)
    box.put_alarm(other, "a")
    clock.tick()
    box.put_alarm(replace(start, seq=1, phase=Phase.UPDATE, priority=Priority.HIGH), "a")
    assert [i.id for i in box.take(10)] == [f"{start.id}:0", f"{start.id}:1", f"{other.id}:0"]


def test_take_respects_limit(tmp_path: Path, clock: Clock) -> None:
    box = open_box(tmp_path, clock)
    for n in range(5):
        box.put(item(f"a{n}", Kind.ALARM, 1, clock.tick()))
    assert [i.id for i in box.take(2)] == ["a0", "a1"]
    assert [i.id for i in box.take(2)] == ["a2", "a3"]
    assert box.take(0) == []


def test_delivered_deletes_and_refused_is_kept_aside(tmp_path: Path, clock: Clock) -> None:
    box = open_box(tmp_path, clock)
    box.put(item("a", Kind.ALARM, 0, clock()))
    box.put(item("b", Kind.ALARM, 0, clock.tick()))
    a, b = box.take(2)
    size_with_both = box.size_bytes()
    box.delivered(a.id)
    assert box.get("a") is None
    assert box.size_bytes() == size_with_both - a.size
    box.refused(b.id, 0x87)
    assert box.depth() == 0 and box.refused_count() == 1
    assert box.take(5) == []  # never retried on its own
    (kept,) = box.refused_items()
    assert (kept.id, kept.state, kept.reason_code) == ("b", State.REFUSED, 0x87)
    assert box.oldest_age() is None  # refused items are not "undelivered backlog"
    assert box.retry_refused() == 1
    assert [i.id for i in box.take(5)] == ["b"]


def test_put_is_idempotent_by_id(tmp_path: Path, clock: Clock) -> None:
    box = open_box(tmp_path, clock)
    event = alarm()
    box.put_alarm(event, "edge/s/g/alarm")
    size = box.size_bytes()
    box.put_alarm(event, "edge/s/g/alarm")
    assert box.depth() == 1 and box.size_bytes() == size
    (taken,) = box.take(1)
    assert taken.id == f"{event.id}:0"
    assert json.loads(taken.payload)["id"] == event.id


def test_technical_alarms_are_alarms_for_ordering(tmp_path: Path, clock: Clock) -> None:
    box = open_box(tmp_path, clock)
    box.put_heartbeat(heartbeat(), "hb", 120)
    box.put_alarm(alarm(Priority.LOW, kind=AlarmKind.TECHNICAL), "al")
    first, second = box.take(2)
    assert first.kind is Kind.TECHNICAL and second.kind is Kind.HEARTBEAT


def test_oldest_age(tmp_path: Path, clock: Clock) -> None:
    box = open_box(tmp_path, clock)
    box.put(item("a", Kind.ALARM, 2, clock()))
    clock.tick(30)
    box.put(item("b", Kind.ALARM, 0, clock()))
    assert box.oldest_age() == pytest.approx(30.0)
    assert box.oldest_age(clock() + 5) == pytest.approx(35.0)


def test_expired_heartbeats_are_dropped_not_sent(tmp_path: Path, clock: Clock) -> None:
    box = open_box(tmp_path, clock)
    box.put_heartbeat(heartbeat(), "hb", 60)
    clock.tick(30)
    box.put_heartbeat(heartbeat(), "hb", 60)
    clock.tick(31)  # the first is 61 s old
    taken = box.take(10)
    assert len(taken) == 1
    assert taken[0].remaining_expiry(clock()) == 29
    assert box.stats().expired == 1


def test_full_outbox_evicts_oldest_heartbeats_first(tmp_path: Path, clock: Clock) -> None:
    box = open_box(tmp_path, clock, max_bytes=1000)
    for n in range(8):
        box.put(item(f"hb{n}", Kind.HEARTBEAT, HEARTBEAT_RANK, clock.tick()))
    box.put(item("a0", Kind.ALARM, 0, clock.tick()))
    box.put(item("a1", Kind.ALARM, 0, clock.tick()))
    assert box.size_bytes() == 1000
    result = box.put(item("a2", Kind.ALARM, 0, clock.tick(), size=250))
    assert result.stored and result.evicted == 3  # 250 bytes needs three 100-byte heartbeats
    assert [box.get(f"hb{n}") is None for n in range(4)] == [True, True, True, False]
    assert box.size_bytes() <= 1000
    assert box.stats().evicted == 3


def test_alarms_are_never_evicted_and_win_over_heartbeats(tmp_path: Path, clock: Clock) -> None:
    box = open_box(tmp_path, clock, max_bytes=500, warn=0.8)
    results = [box.put(item(f"a{n}", Kind.ALARM, 0, clock.tick())) for n in range(5)]
    assert [r.crossed_warn for r in results] == [False, False, False, True, False]
    hb = box.put(item("hb", Kind.HEARTBEAT, HEARTBEAT_RANK, clock.tick()))
    assert not hb.stored and box.get("hb") is None
    over = box.put(item("a5", Kind.ALARM, 0, clock.tick()))
    assert over.stored and over.fill > 1.0 and over.warn
    assert box.depth() == 6  # every alarm kept, past the bound
    assert box.stats().rejected == 1


def test_warn_crossing_rearms_after_draining(tmp_path: Path, clock: Clock) -> None:
    box = open_box(tmp_path, clock, max_bytes=400, warn=0.5)
    assert not box.put(item("a0", Kind.ALARM, 0, clock.tick())).crossed_warn
    assert box.put(item("a1", Kind.ALARM, 0, clock.tick())).crossed_warn
    for taken in box.take(2):
        box.delivered(taken.id)
    assert not box.put(item("a2", Kind.ALARM, 0, clock.tick())).crossed_warn
    assert box.put(item("a3", Kind.ALARM, 0, clock.tick())).crossed_warn


def test_reopen_keeps_items_ids_and_refusals_and_requeues_inflight(tmp_path: Path, clock: Clock) -> None:
    box = open_box(tmp_path, clock)
    events = [alarm(seq=n) for n in range(3)]
    for event in events:
        box.put_alarm(event, "al")
    first, second, _ = box.take(3)
    box.refused(second.id, 0x87)
    size = box.size_bytes()
    box.close()
    box = open_box(tmp_path, clock)
    assert box.size_bytes() == size
    assert box.depth() == 2 and box.refused_count() == 1
    again = box.take(5)
    assert [i.id for i in again] == [first.id, f"{events[2].id}:2"]
    assert again[0].attempts == 2  # the crash-time attempt is remembered
    assert box.integrity_check() == "ok"


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from agent.config.schema import OutboxConfig
    from agent.outbox import Kind, Outbox, OutboxItem
    box = Outbox(OutboxConfig(Path(sys.argv[1]), 1 << 30, 0.8))
    n = 0
    acknowledged = []
    while True:
        kind = Kind.HEARTBEAT if n % 3 == 0 else Kind.ALARM
        box.put(OutboxItem(f"id{n}", "t", b"p" * 300, kind, 3 if kind is Kind.HEARTBEAT else 0, time.time()))
        print("put", f"id{n}", flush=True)
        for item_id in acknowledged:  # their batched delete was committed with this put
            print("del", item_id, flush=True)
        acknowledged = []
        for taken in box.take(2)[:1]:
            box.delivered(taken.id)
            acknowledged.append(taken.id)
            print("ack", taken.id, flush=True)
        n += 1
    """
)


def test_sigkilled_writer_leaves_a_sound_file_with_every_acknowledged_put(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while len(lines) < 900 and time.monotonic() < deadline:
        lines.append(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    lines += [line for line in proc.stdout.readlines() if line.endswith("\n")]  # not one the kill cut
    put = {line.split()[1] for line in lines if line.startswith("put ")}
    acknowledged = {line.split()[1] for line in lines if line.startswith("ack ")}
    deleted = {line.split()[1] for line in lines if line.startswith("del ")}
    assert len(put) >= 200

    box = Outbox(OutboxConfig(path, 1 << 30, 0.8))
    assert box.integrity_check() == "ok"
    remaining = {i.id for i in box.take(100_000)}
    # Every put that returned is still there unless it was deliberately delivered.
    assert put - acknowledged <= remaining
    assert not remaining & deleted  # and a delivery, once committed, is not undone by the crash
    # Nothing unknown appears: at most the put the kill interrupted after its commit.
    assert len(remaining - put) <= 1
    assert box.size_bytes() == len(remaining) * (len("t") + 300 + ROW_OVERHEAD)


def test_an_outage_keeps_only_unexpired_heartbeats_and_counts_the_expired_across_starts(
    tmp_path: Path, clock: Clock
) -> None:
    """Offline review M1: with nothing taken (the link down), puts drop expired heartbeats themselves, so
    an outage neither fills the outbox nor wears the card with heartbeats the broker would never get;
    each one dropped is counted in the file, for the heartbeats' `outbox_heartbeats_expired`."""
    box = open_box(tmp_path, clock)
    for _ in range(360):  # 3 hours of heartbeats every 30 s, expiry 120 s, nothing taken
        clock.tick(30)
        box.put_heartbeat(heartbeat(clock()), "hb", 120)
    # At most the last 120 s, and the EXPIRED_SCAN_S (30 s) between looks: 5 heartbeats.
    assert box.depth() <= 5
    assert box.heartbeats_expired() == 360 - box.depth()
    assert box.heartbeats_dropped() == 0  # none was evicted for room
    box.close()
    reopened = open_box(tmp_path, clock)
    assert reopened.heartbeats_expired() == 360 - reopened.depth()
    clock.tick(200)
    assert reopened.take(10) == []  # what was left expired while the gateway was off
    assert reopened.heartbeats_expired() == 360
    reopened.close()


def test_heartbeats_alone_leave_the_alarm_fill_at_zero(tmp_path: Path, clock: Clock) -> None:
    """`outbox_filling` (HIGH) watches the alarm rows' share of the bound: heartbeats make room for alarms
    by themselves, so an outbox full of heartbeats does not raise it; alarm rows do, until delivered."""
    box = open_box(tmp_path, clock, max_bytes=1000, warn=0.5)
    for n in range(12):
        box.put(item(f"hb{n}", Kind.HEARTBEAT, HEARTBEAT_RANK, clock.tick()))
    assert box.fill_fraction() == 1.0 and box.alarm_fill_fraction() == 0.0
    for n in range(6):
        box.put(item(f"a{n}", Kind.ALARM, 0, clock.tick()))
    box.put(item("t0", Kind.TECHNICAL, 0, clock.tick()))
    assert box.alarm_fill_fraction() == pytest.approx(0.7)
    box.close()
    box = open_box(tmp_path, clock, max_bytes=1000, warn=0.5)  # counted again from the file
    assert box.alarm_fill_fraction() == pytest.approx(0.7)
    for taken in box.take(3):
        box.delivered(taken.id)
    box.delivered("a5")  # acknowledged without being taken by this outbox
    assert box.alarm_fill_fraction() == pytest.approx(0.3)
    box.close()
