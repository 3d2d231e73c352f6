"""Alarm events queued in the outbox before a step of the gateway's wall clock are sent in the corrected
clock (agent/outbox/restamping.py; docs/robustness.md, "The gateway clock jumps").

The session calls `Outbox.follow_clock(step, now)` once a second; these tests make the same calls with a
wall clock in the test's hands, and one goes through `_Session.follow_clock`.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from daemon_session import CONFIG

from agent.config import parse_config
from agent.config.schema import OutboxConfig
from agent.events import AlarmEvent, AlarmKind, Explanation, Heartbeat, Phase, Priority
from agent.outbox import Outbox, restamping
from agent.outbox.restamping import restamped
from agent.pipeline import Pipeline
from agent.privacy import Pseudonymizer
from agent.readings import Reading
from agent.sealing import KEY_BYTES
from agent.session import _Session
from agent.uplink.mqtt import MqttUplink
from agent.uplink.topics import Topics

DAY_S = 86_400.0
BOOT = 1_700_000_000.0  # the clock the gateway booted with (fake-hwclock)
TOPIC = "edge/s/gw/alarm"


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def event(
    n: int, at: float, phase: Phase = Phase.START, *, onset: float | None = None, episode: int = 1
) -> AlarmEvent:
    """Seq `n` of episode number `episode`, detected at `at` (an END ends at `at`). Its onset: `onset`,
    else 8 s before `at` (a later event of an episode carries its START's: pass it)."""
    return AlarmEvent(
        id=f"0190a0b0-0000-7000-8000-{episode:012d}",
        seq=n,
        phase=phase,
        gateway="gw",
        device="p-1",
        stream="vitals",
        condition="tachycardia",
        priority=Priority.HIGH,
        kind=AlarmKind.PHYSIOLOGICAL,
        onset_time=at - 8.0 if onset is None else onset,
        detection_time=at,
        value=142.25,
        threshold=120.0,
        unit="bpm",
        explanation=Explanation("limit", 142.25, 120.0, text="hr 142 bpm above 120 bpm for 8 s"),
        end_time=at if phase is Phase.END else None,
    )


def moved(e: AlarmEvent, step: float) -> AlarmEvent:
    end = None if e.end_time is None else e.end_time + step
    return replace(e, onset_time=e.onset_time + step, detection_time=e.detection_time + step, end_time=end)


def open_box(tmp_path: Path, clock: Clock, *, sealed: bool = False) -> Outbox:
    key = None
    if sealed:
        key = tmp_path / "outbox.key"
        if not key.exists():
            key.write_bytes(bytes(range(KEY_BYTES)))
            key.chmod(0o600)
    return Outbox(OutboxConfig(tmp_path / "outbox.db", 1 << 20, 0.8, encryption_key_file=key), clock=clock)


def sent(box: Outbox) -> dict[str, bytes]:
    return {item.id: item.payload for item in box.take(100)}


def test_restamped_moves_only_the_wall_times_and_keeps_every_other_byte() -> None:
    end = event(2, BOOT + 40.0, Phase.END)
    assert restamped(end.to_json(), 3 * DAY_S + 0.25) == moved(end, 3 * DAY_S + 0.25).to_json()
    assert restamped(event(0, BOOT).to_json(), -3_600.0) == moved(event(0, BOOT), -3_600.0).to_json()
    with pytest.raises(ValueError):
        restamped(b'{"onset_time": 5}', 1.0)


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
def test_alarms_queued_before_a_forward_step_are_sent_moved_by_it(tmp_path: Path, sealed: bool) -> None:
    clock = Clock(BOOT)
    step = 3 * DAY_S
    with open_box(tmp_path, clock, sealed=sealed) as box:
        box.follow_clock(0.0, clock())
        first = event(0, clock())
        end = event(1, clock() + 30.0, Phase.END, onset=first.onset_time)
        box.put_alarm(first, TOPIC)
        clock.t += 30.0
        box.put_alarm(end, TOPIC)
        clock.t += 1.0
        box.follow_clock(0.0, clock())
        clock.t += step  # NTP's first sync, once the link is back
        assert box.follow_clock(step, clock()) == 2
        clock.t += 1.0
        box.put_alarm(after := event(0, clock(), episode=2), TOPIC)  # put after the step: already right
        assert sent(box) == {
            f"{first.id}:0": moved(first, step).to_json(),
            f"{end.id}:1": moved(end, step).to_json(),
            f"{after.id}:0": after.to_json(),
        }
    with sqlite3.connect(tmp_path / "outbox.db") as db:
        rows = db.execute("SELECT sealed, payload FROM outbox").fetchall()
    assert rows and all(s == int(sealed) and (b"tachycardia" in p) != sealed for s, p in rows)


def test_rows_in_flight_keep_their_bytes_and_are_resent_as_they_were(tmp_path: Path) -> None:
    clock = Clock(BOOT)
    with open_box(tmp_path, clock) as box:
        box.follow_clock(0.0, clock())
        box.put_alarm(handed := event(0, clock()), TOPIC)
        box.put_alarm(queued := event(0, clock() + 5.0, episode=2), TOPIC)
        assert [i.id for i in box.take(1)] == [f"{handed.id}:0"]  # handed to paho: sent already
        clock.t += 10.0 + DAY_S
        box.follow_clock(0.0, clock() - DAY_S)
        assert box.follow_clock(DAY_S, clock()) == 1
        assert box.requeue_inflight() == 1  # a new connection: sent again, byte for byte
        assert sent(box) == {
            f"{handed.id}:0": handed.to_json(),
            f"{queued.id}:0": moved(queued, DAY_S).to_json(),
        }


def test_a_later_alarm_in_flight_still_drains_after_an_earlier_one_moved_forward(tmp_path: Path) -> None:
    """The first alarm's publish could not be handed to the client (pending again), a later one's
    (another episode) could: the first is moved by the step, the later one keeps its bytes but not an
    earlier `created`."""
    clock = Clock(BOOT)
    with open_box(tmp_path, clock) as box:
        box.follow_clock(0.0, clock())
        box.put_alarm(start := event(0, clock()), TOPIC)
        box.put_alarm(end := event(0, clock() + 20.0, episode=2), TOPIC)
        assert len(box.take(2)) == 2
        box.requeue(f"{start.id}:0")
        clock.t += 30.0
        box.follow_clock(0.0, clock())
        clock.t += DAY_S
        assert box.follow_clock(DAY_S, clock()) == 1
        box.requeue_inflight()  # the connection dropped: the END goes again
        assert [(i.id, i.payload) for i in box.take(10)] == [
            (f"{start.id}:0", moved(start, DAY_S).to_json()),
            (f"{end.id}:0", end.to_json()),
        ]


def test_rows_of_an_earlier_process_are_left_and_still_drain_first(tmp_path: Path) -> None:
    clock = Clock(BOOT)
    with open_box(tmp_path, clock) as box:
        box.put_alarm(earlier := event(0, clock()), TOPIC)
    clock.t += 60.0
    with open_box(tmp_path, clock) as box:
        box.follow_clock(0.0, clock())
        box.put_alarm(ours := event(0, clock(), episode=2), TOPIC)  # another episode
        clock.t += 1.0
        box.follow_clock(0.0, clock())
        clock.t -= 3_600.0  # a step back: ours would go before the earlier row, by created
        assert box.follow_clock(-3_600.0, clock()) == 1
        items = box.take(10)
    assert [(i.id, i.payload) for i in items] == [
        (f"{earlier.id}:0", earlier.to_json()),
        (f"{ours.id}:0", moved(ours, -3_600.0).to_json()),
    ]
    assert items[1].created >= items[0].created  # the drain order holds across the restart


def test_an_episode_carried_across_a_restart_is_moved_whole(tmp_path: Path) -> None:
    """Offline review S2, the END queued before the step: run 1 queued the START (link down) and was
    killed; run 2 carried the episode on (same onset) and queued its END; NTP then stepped the clock.
    Before, only run 2's END was moved: one episode, two onsets three days apart."""
    clock = Clock(BOOT)
    step = 3 * DAY_S
    with open_box(tmp_path, clock, sealed=True) as box:
        box.put_alarm(start := event(0, clock()), TOPIC)
    clock.t += 60.0
    with open_box(tmp_path, clock, sealed=True) as box:
        box.follow_clock(0.0, clock())
        box.put_alarm(end := event(1, clock(), Phase.END, onset=start.onset_time), TOPIC)
        clock.t += 1.0
        box.follow_clock(0.0, clock())
        clock.t += step
        assert box.follow_clock(step, clock()) == 2
        assert sent(box) == {
            f"{start.id}:0": moved(start, step).to_json(),
            f"{end.id}:1": moved(end, step).to_json(),
        }


def test_an_end_put_after_the_step_takes_its_queued_start_of_an_earlier_run_along(tmp_path: Path) -> None:
    """Offline review S2 as received: the episode was still open at the step, so its END was made after
    it, its onset moved by the book; the START run 1 queued is moved to the same onset when it is put."""
    clock = Clock(BOOT)
    step = 3 * DAY_S
    with open_box(tmp_path, clock) as box:
        box.put_alarm(start := event(0, clock()), TOPIC)
    clock.t += 60.0
    with open_box(tmp_path, clock) as box:
        box.follow_clock(0.0, clock())
        clock.t += step
        assert box.follow_clock(step, clock()) == 0  # not this run's row: nothing says which clock it had
        clock.t += 50.0
        end = event(1, clock(), Phase.END, onset=start.onset_time + step)  # the book moved with the step
        box.put_alarm(end, TOPIC)
        items = {i.id: i.payload for i in box.take(10)}
    assert items == {f"{start.id}:0": moved(start, step).to_json(), f"{end.id}:1": end.to_json()}
    assert len({json.loads(p)["onset_time"] for p in items.values()}) == 1


def test_an_end_put_in_the_second_before_the_step_is_followed_moves_its_episode_once(tmp_path: Path) -> None:
    """The stream's book moves its onset at the first reading after the step; the session follows the clock
    at its next tick, up to a second later. An END put in between brings its queued START to its onset;
    the step then must not move the episode again (it came out 6 days ahead, not 3; the diff review)."""
    clock = Clock(BOOT)
    step = 3 * DAY_S
    with open_box(tmp_path, clock) as box:
        box.follow_clock(0.0, clock())
        box.put_alarm(start := event(0, clock()), TOPIC)
        clock.t += 1.0
        box.follow_clock(0.0, clock())  # a quiet tick: the START is put before any step
        clock.t += step + 0.5
        end = event(1, clock(), Phase.END, onset=start.onset_time + step)  # the book moved with the step
        box.put_alarm(end, TOPIC)
        box.follow_clock(step, clock())  # the session's tick, within the second
        items = {i.id: i.payload for i in box.take(10)}
    assert items == {f"{start.id}:0": moved(start, step).to_json(), f"{end.id}:1": end.to_json()}


@pytest.mark.parametrize(
    ("sealed", "sealed_later"),
    [(False, False), (True, True), (False, True)],
    ids=["plain", "sealed", "key_added"],
)
def test_an_end_after_a_start_that_was_delivered_keeps_the_onset_told(
    tmp_path: Path, sealed: bool, sealed_later: bool
) -> None:
    """The START went out with onset T before the step (and was deleted, across a restart): the END made
    after the step keeps onset T, and its end minus its onset is the episode's real length. The onset
    kept for it in the file is sealed with the payloads (also when the key comes with the restart)."""
    clock = Clock(BOOT)
    step = 3 * DAY_S
    with open_box(tmp_path, clock, sealed=sealed) as box:
        box.put_alarm(start := event(0, clock()), TOPIC)
        (item,) = box.take(1)
        box.delivered(item.id)
    told = start.to_payload()["onset_time"]
    clock.t += 30.0
    with open_box(tmp_path, clock, sealed=sealed_later) as box:
        with sqlite3.connect(tmp_path / "outbox.db") as db:
            assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0  # deleted on close
            kept = db.execute("SELECT name, value FROM outbox_meta WHERE name LIKE 'onset:%'").fetchall()
        assert len(kept) == 1 and start.id not in kept[0][0] and (told in kept[0][1]) != sealed_later
        box.follow_clock(0.0, clock())
        clock.t += step
        box.follow_clock(step, clock())
        clock.t += 10.0
        end = event(1, clock(), Phase.END, onset=start.onset_time + step)
        box.put_alarm(end, TOPIC)
        (sent_end,) = [json.loads(i.payload) for i in box.take(10)]
    assert sent_end["onset_time"] == told
    assert _seconds(sent_end["end_time"]) - _seconds(sent_end["onset_time"]) == pytest.approx(48.0)
    with sqlite3.connect(tmp_path / "outbox.db") as db:  # the END dropped it: nothing follows an END
        assert db.execute("SELECT COUNT(*) FROM outbox_meta WHERE name LIKE 'onset:%'").fetchone()[0] == 0


def test_an_update_queued_after_a_start_in_flight_is_not_moved_by_the_step(tmp_path: Path) -> None:
    """The START was handed out (the back end may have it with onset T): its queued UPDATE keeps T."""
    clock = Clock(BOOT)
    with open_box(tmp_path, clock) as box:
        box.follow_clock(0.0, clock())
        box.put_alarm(start := event(0, clock()), TOPIC)
        box.put_alarm(update := event(1, clock() + 5.0, Phase.UPDATE, onset=start.onset_time), TOPIC)
        assert [i.id for i in box.take(1)] == [f"{start.id}:0"]
        clock.t += 10.0
        box.follow_clock(0.0, clock())
        clock.t += DAY_S
        assert box.follow_clock(DAY_S, clock()) == 0
        assert box.requeue_inflight() == 1
        assert sent(box) == {f"{start.id}:0": start.to_json(), f"{update.id}:1": update.to_json()}


def test_the_onset_kept_for_a_started_episode_follows_its_start_moved_by_a_step(tmp_path: Path) -> None:
    """A queued START is moved by the step, then delivered: the END made later, in the new clock, has
    the onset the START went out with, and is left as it is."""
    clock = Clock(BOOT)
    step = DAY_S
    with open_box(tmp_path, clock) as box:
        box.follow_clock(0.0, clock())
        box.put_alarm(start := event(0, clock()), TOPIC)
        clock.t += 1.0
        box.follow_clock(0.0, clock())
        clock.t += step
        assert box.follow_clock(step, clock()) == 1
        (item,) = box.take(1)
        box.delivered(item.id)
    with open_box(tmp_path, clock) as box:
        clock.t += 20.0
        end = event(1, clock(), Phase.END, onset=start.onset_time + step)
        box.put_alarm(end, TOPIC)
        assert sent(box) == {f"{end.id}:1": end.to_json()}


def test_the_correction_survives_a_restart_and_is_not_made_twice(tmp_path: Path) -> None:
    clock = Clock(BOOT)
    step = 2 * DAY_S
    with open_box(tmp_path, clock, sealed=True) as box:
        box.follow_clock(0.0, clock())
        box.put_alarm(first := event(0, clock()), TOPIC)
        clock.t += 1.0
        box.follow_clock(0.0, clock())
        clock.t += step
        assert box.follow_clock(step, clock()) == 1
    with open_box(tmp_path, clock, sealed=True) as box:
        box.follow_clock(0.0, clock())
        clock.t += 500.0  # another step, after the restart: not this outbox's row to move
        assert box.follow_clock(500.0, clock()) == 0
        assert sent(box) == {f"{first.id}:0": moved(first, step).to_json()}


def test_a_backward_step_moves_them_back_and_later_alarms_are_not_held_to_the_old_clock(
    tmp_path: Path,
) -> None:
    clock = Clock(BOOT)
    with open_box(tmp_path, clock) as box:
        box.follow_clock(0.0, clock())
        box.put_alarm(first := event(0, clock()), TOPIC)
        clock.t += 1.0
        box.follow_clock(0.0, clock())
        clock.t -= 7_200.0
        assert box.follow_clock(-7_200.0, clock()) == 1
        clock.t += 10.0
        box.put_alarm(later := event(0, clock(), episode=2), TOPIC)
        items = box.take(10)
    assert [(i.id, i.payload) for i in items] == [
        (f"{first.id}:0", moved(first, -7_200.0).to_json()),
        (f"{later.id}:0", later.to_json()),
    ]
    assert [i.created for i in items] == [BOOT - 7_200.0, clock()]  # not clamped to BOOT


def test_two_steps_add_up(tmp_path: Path) -> None:
    clock = Clock(BOOT)
    with open_box(tmp_path, clock, sealed=True) as box:
        box.follow_clock(0.0, clock())
        box.put_alarm(first := event(0, clock()), TOPIC)
        for step in (5 * DAY_S, -1_800.0):
            clock.t += 1.0
            box.follow_clock(0.0, clock())
            clock.t += step
            assert box.follow_clock(step, clock()) == 1
        assert sent(box) == {f"{first.id}:0": moved(first, 5 * DAY_S - 1_800.0).to_json()}


def test_the_oldest_undelivered_age_no_longer_counts_the_step(tmp_path: Path) -> None:
    clock = Clock(BOOT)
    with open_box(tmp_path, clock) as box:
        box.follow_clock(0.0, clock())
        box.put_alarm(event(0, clock()), TOPIC)
        clock.t += 40.0
        box.follow_clock(0.0, clock())
        clock.t += 3 * DAY_S
        box.follow_clock(3 * DAY_S, clock())
        assert box.oldest_age() == pytest.approx(40.0)  # 3 days and 40 s before


def test_the_oldest_undelivered_age_counts_no_step_for_kept_rows_and_heartbeats(tmp_path: Path) -> None:
    """Offline review m1: the first heartbeat after a +3 day step said oldest_undelivered_age_s 259240.
    This run's rows put before the step whose times are kept (a heartbeat; an UPDATE of an episode whose
    START is in flight) count real seconds too, and the heartbeat is not expired by the step."""
    clock = Clock(BOOT)
    with open_box(tmp_path, clock) as box:
        box.follow_clock(0.0, clock())
        box.put_heartbeat(Heartbeat("gw", clock(), 1.0, 1, (), 0, None, 0), "edge/s/gw/heartbeat", 120)
        box.put_alarm(start := event(0, clock()), TOPIC)
        box.put_alarm(event(1, clock(), Phase.UPDATE, onset=start.onset_time), TOPIC)
        assert [i.id for i in box.take(1)] == [f"{start.id}:0"]  # in flight: the UPDATE keeps its times
        clock.t += 40.0
        box.follow_clock(0.0, clock())
        clock.t += 3 * DAY_S
        assert box.follow_clock(3 * DAY_S, clock()) == 0
        assert box.oldest_age() == pytest.approx(40.0)
        box.requeue_inflight()
        assert [i.kind.value for i in box.take(10)] == ["alarm", "alarm", "heartbeat"]


def test_a_row_put_in_the_second_of_the_step_is_judged_by_its_created(tmp_path: Path) -> None:
    clock = Clock(BOOT)
    step = DAY_S
    with open_box(tmp_path, clock) as box:
        box.follow_clock(0.0, clock())
        clock.t += 0.3
        box.put_alarm(before := event(0, clock()), TOPIC)  # the old clock
        clock.t += step + 0.3
        box.put_alarm(after := event(0, clock(), episode=2), TOPIC)  # the new one
        clock.t += 0.3
        assert box.follow_clock(step, clock()) == 1
        assert sent(box) == {
            f"{before.id}:0": moved(before, step).to_json(),
            f"{after.id}:0": after.to_json(),
        }


def test_past_the_limit_none_are_moved_and_an_error_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(restamping, "MOVE_AT_MOST", 1)
    clock = Clock(BOOT)
    with open_box(tmp_path, clock) as box:
        box.follow_clock(0.0, clock())
        box.put_alarm(start := event(0, clock()), TOPIC)
        box.put_alarm(end := event(1, clock() + 5.0, Phase.END, onset=start.onset_time), TOPIC)
        clock.t += 10.0
        box.follow_clock(0.0, clock())
        clock.t += DAY_S
        with caplog.at_level(logging.ERROR, logger="agent.outbox"):
            assert box.follow_clock(DAY_S, clock()) == 0
        assert "2 queued alarm events predate" in caplog.text
        assert sent(box) == {f"{start.id}:0": start.to_json(), f"{end.id}:1": end.to_json()}


def test_the_session_moves_the_queued_alarms_when_it_notices_the_step(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Through `_Session.follow_clock`, as the daemon's monitor calls it: a device is lost on a gateway
    still in its boot clock, then NTP steps the clock three days forward before anything is sent."""
    cfg = parse_config(CONFIG, base_dir=tmp_path)
    mono = 1_000.0
    offset = BOOT - mono
    outbox = Outbox(cfg.outbox, clock=lambda: mono + offset)
    pseudonym = Pseudonymizer(b"k" * 32)
    topics = Topics("edge", "s", "gw")
    uplink = MqttUplink(cfg.mqtt, topics, outbox, 1)  # never run: no connection is made
    run = _Session(cfg, topics, Pipeline(cfg, pseudonym), outbox, uplink, 1, pseudonym, tmp_path)
    for second in range(40):
        mono += 1.0
        if second < 5:
            run._commit([Reading("bed-4/vitals", ("hr",), np.array([[75.0]]), mono + offset, mono)])
        run.follow_clock(mono + offset, mono)
        run.check_gateway(mono + offset, mono)
    (lost,) = queued_lost(tmp_path / "outbox.sqlite")  # the link is down: it waits
    offset += 3 * DAY_S
    mono += 1.0
    with caplog.at_level(logging.WARNING, logger="agent"):
        run.follow_clock(mono + offset, mono)
    assert "stepped by +259200 s" in caplog.text and "1 alarm event(s) queued before it" in caplog.text
    (moved_lost,) = [json.loads(i.payload) for i in outbox.take(100) if b"device_lost" in i.payload]
    assert moved_lost["id"] == lost["id"]
    shift = _seconds(moved_lost["detection_time"]) - _seconds(lost["detection_time"])
    assert shift == pytest.approx(3 * DAY_S)
    outbox.close()


def queued_lost(path: Path) -> list[dict[str, Any]]:
    """The `device_lost` payloads in the (plain) outbox file, read beside the agent, taking nothing."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT payload FROM outbox WHERE kind='technical'").fetchall()
    return [json.loads(p) for (p,) in rows if b"device_lost" in p]


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
