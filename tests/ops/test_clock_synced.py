"""`clock_synced` in alarm events, heartbeats and status: whether the kernel said the gateway's wall
clock was synchronised (adjtimex, `agent/clock_sync.py`; docs/payloads.md). Offline review S2: nothing
told the back end which times came from a clock still at its boot time."""

from __future__ import annotations

import ctypes
import json
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from daemon_session import CONFIG

from agent.clock_sync import TIME_ERROR, clock_state_synced, clock_synced
from agent.config import parse_config
from agent.outbox import Outbox
from agent.pipeline import Pipeline
from agent.privacy import Pseudonymizer
from agent.readings import Reading
from agent.session import _Session
from agent.status import render
from agent.uplink.mqtt import MqttUplink
from agent.uplink.topics import Topics

BOOT = 1_700_000_000.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="adjtimex is Linux's")
def test_the_kernel_answers_on_linux() -> None:
    assert isinstance(clock_synced(), bool)  # the real system call, read only


def test_the_kernel_state_is_read_as_synced_or_not_and_unknown_without_an_answer() -> None:
    def answering(state: int) -> Callable[[ctypes.Array[ctypes.c_char]], int]:
        def adjtimex(buffer: ctypes.Array[ctypes.c_char]) -> int:
            assert set(buffer.raw) == {0}  # modes 0: nothing is set
            return state

        return adjtimex

    assert clock_state_synced(answering(0)) is True  # TIME_OK
    assert clock_state_synced(answering(TIME_ERROR)) is False
    assert clock_state_synced(answering(-1)) is None  # refused
    assert clock_state_synced(None) is None  # no adjtimex (not Linux)


def session(tmp_path: Path) -> tuple[_Session, Outbox, list[float]]:
    cfg = parse_config(CONFIG, base_dir=tmp_path)
    clock = [1_000.0]
    outbox = Outbox(cfg.outbox, clock=lambda: clock[0] + BOOT)
    pseudonym = Pseudonymizer(b"k" * 32)
    topics = Topics("edge", "s", "gw")
    uplink = MqttUplink(cfg.mqtt, topics, outbox, 1)  # never run: no connection is made
    return (
        _Session(cfg, topics, Pipeline(cfg, pseudonym), outbox, uplink, 1, pseudonym, tmp_path),
        outbox,
        clock,
    )


@pytest.mark.parametrize("synced", [False, True])
def test_alarm_events_heartbeats_and_status_tell_the_kernels_answer(tmp_path: Path, synced: bool) -> None:
    run, outbox, clock = session(tmp_path)
    run.clock_synced = lambda: synced  # what the kernel would say
    for second in range(40):  # a device is lost: a gateway alarm, queued in the outbox
        clock[0] += 1.0
        if second < 5:
            run._commit([Reading("bed-4/vitals", ("hr",), np.array([[75.0]]), clock[0] + BOOT, clock[0])])
        run.check_gateway(clock[0] + BOOT, clock[0])
    with sqlite3.connect(tmp_path / "outbox.sqlite") as db:
        payloads = [json.loads(p) for (p,) in db.execute("SELECT payload FROM outbox WHERE kind='technical'")]
    assert [(p["condition"], p["clock_synced"]) for p in payloads] == [("device_lost", synced)]
    assert run._heartbeat().to_payload()["clock_synced"] is synced
    snapshot = run.snapshot()
    assert snapshot["clock_synced"] is synced
    assert ("clock: NOT synchronised" in render("live", snapshot)) is not synced
    outbox.close()


def test_the_session_asks_the_kernel(tmp_path: Path) -> None:
    run, outbox, _ = session(tmp_path)
    assert run._heartbeat().to_payload()["clock_synced"] is clock_synced()
    outbox.close()
