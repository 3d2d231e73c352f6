"""The gateway's own technical alarms (device_lost, outbox_filling, ...) keep their open episodes
across a restart: saved with the pipeline's state, restored by the next session, ended under one id."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

from daemon_session import CONFIG, session

from agent.config import parse_config
from agent.events import Phase
from agent.outbox import Kind, Outbox, OutboxItem
from agent.readings import Reading


def test_an_open_device_lost_episode_is_restored_and_ends_under_its_id(tmp_path: Path) -> None:
    first = session(tmp_path)
    (start,) = first.device_lost.check(first.device_refs, [45.0], [30.0], 1_000.0)
    assert (start.condition, start.phase) == ("device_lost", Phase.START)
    saved = json.loads(json.dumps(first.alarm_state()))  # as pipeline.json holds it
    assert first.device_lost.key in saved

    second = session(tmp_path)
    second.load_gateway_alarms(saved)
    assert second._technical_active() == 1
    assert second.device_lost.check(second.device_refs, [50.0], [30.0], 1_010.0) == []  # still the same one
    (end,) = second.device_lost.check(second.device_refs, [0.0], [30.0], 1_020.0)
    assert end.phase is Phase.END and end.id == start.id and end.seq == start.seq + 1
    # Both durations named: the longest silence, and the alarm's own span (from its onset at 1,000).
    text = "cleared: data again after a silence of 50 s (limit 30 s); alarm lasted 20 s"
    assert end.explanation.text == text


def test_rows_the_outbox_key_cannot_open_raise_outbox_unreadable(tmp_path: Path) -> None:
    sealed = {**CONFIG, "outbox": {"path": "outbox.sqlite", "encryption_key_file": "outbox.key"}}
    with Outbox(parse_config(sealed, base_dir=tmp_path).outbox) as outbox:  # creates the key
        outbox.put(OutboxItem("ev1", "edge/s/gw/alarm", b"{}", Kind.ALARM, 0, 1_000.0))
    key_file = tmp_path / "outbox.key"
    key_file.unlink()  # the key is lost and replaced: the waiting row cannot be opened any more
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, base64.b64encode(os.urandom(32)))
    os.close(fd)

    run = session(tmp_path, sealed)
    assert run.outbox.take(10) == []  # the uplink's take finds the row unreadable and sets it aside
    run.check_gateway(2_000.0, 0.0)
    assert run.outbox.undecryptable_count() == 1
    (item,) = run.outbox.take(10)  # the alarm about it is sealed under the new key and readable
    alarm = json.loads(item.payload)
    assert (alarm["condition"], alarm["phase"], alarm["priority"]) == ("outbox_unreadable", "start", "high")
    assert "cannot be decrypted" in alarm["explanation"]["text"]


def test_a_replaced_damaged_outbox_is_reported_once(tmp_path: Path) -> None:
    run = session(tmp_path)
    run.outbox_was_replaced = True  # as Agent._session sets it after Outbox.open_or_replace
    run.check_gateway(3_000.0, 0.0)
    run.check_gateway(3_001.0, 0.0)
    events = [json.loads(item.payload) for item in run.outbox.take(10)]
    assert sorted((e["condition"], e["phase"], e["priority"]) for e in events) == [
        ("outbox_damaged", "end", "high"),
        ("outbox_damaged", "start", "high"),
    ]
    assert "set aside" in next(e for e in events if e["phase"] == "start")["explanation"]["text"]


def test_device_lost_over_an_open_alarm_takes_its_priority_and_names_it(tmp_path: Path) -> None:
    """A silent device leaves its open physiological episodes unjudged: device_lost (MEDIUM) carries
    the highest of their priorities to its END, and names them (technical.blinding)."""
    watched = {
        **CONFIG,
        "detectors": [
            {
                "id": "hr-high",
                "type": "limit",
                "stream": "vitals",
                "channels": ["hr"],
                "params": {"above": 120},
            }
        ],
        "alarms": [
            {"condition": "tachycardia", "detector": "hr-high", "priority": "high", "min_duration_s": 5}
        ],
    }
    run = session(tmp_path, watched)
    for t in range(10):  # a confirmed tachycardia, then silence
        run._commit([Reading.single("bed-4/vitals", {"hr": 150.0}, 1_000.0 + t, float(t))])
    run.check_gateway(1_050.0, 50.0)  # 41 s of silence against lost_after_s 30
    run.check_gateway(1_080.0, 80.0)
    run._commit([Reading.single("bed-4/vitals", {"hr": 150.0}, 1_081.0, 81.0)])
    run.check_gateway(1_082.0, 82.0)
    lost = [
        e for e in (json.loads(i.payload) for i in run.outbox.take(20)) if e["condition"] == "device_lost"
    ]
    assert [(e["phase"], e["priority"]) for e in lost] == [("start", "high"), ("end", "high")]
    assert "open and not judged meanwhile: tachycardia (high)" in lost[0]["explanation"]["text"]
    assert run.device_lost.check(run.device_refs, [45.0], [30.0], 1_200.0)[0].priority.value == "medium"


def test_a_tick_after_a_stalled_loop_does_not_judge_the_devices_silence(tmp_path: Path) -> None:
    """A loop back from a stall (a 10 s SIGSTOP in the device audit) found every device 'silent' while
    their data waited unread, and raised a device_lost that ended a second later. That tick now skips the
    devices; the next one judges them."""
    run = session(tmp_path)
    later = time.monotonic() + 45.0  # 45 s after the device was added, nothing read (lost_after_s 30)
    run.check_gateway(2_000.0, later, loop_stalled=True)
    assert run.outbox.take(10) == []
    run.check_gateway(2_001.0, later + 1.0)
    (item,) = run.outbox.take(10)
    assert (json.loads(item.payload)["condition"], json.loads(item.payload)["phase"]) == (
        "device_lost",
        "start",
    )
