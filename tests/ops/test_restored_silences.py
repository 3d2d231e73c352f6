"""Technical episodes measured from the session's own start stay open across a reload or a restart.

A device whose port did not exist raised device_lost; a SIGHUP (or a stop and a start) made a session
whose silence count began at 0, and its first check sent "cleared: data again after a silence of 31 s"
with no data, then a new START 30 s later (new-user review, S2). The same held for profile_silent (a
new BLE source counts a silent profile from its link's start) and uplink_failing (a new uplink whose
network thread has not died yet). Now each goes on from the saved episode (agent.resumed_silence).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from daemon_session import CONFIG, session
from test_operator_errors import AgentRun
from uplink_probe import Subscriber
from waiting import wait_until

from agent.localbroker import LocalBroker
from agent.readings import Reading
from agent.sources.counters import SourceStats

BLE: dict[str, Any] = {
    **CONFIG,
    "devices": [
        {
            "id": "bed-7",
            "kind": "wearable",
            "transport": "ble",
            "lost_after_s": 5,
            "ble": {"address": "C4:7C:8D:6A:12:34", "profiles": ["heart_rate", "plx"]},
        }
    ],
}


def later(tmp_path: Path, config: dict[str, Any] = CONFIG) -> Any:
    """The next session, with an outbox of its own (the first one's events are not read again)."""
    (tmp_path / "next").mkdir()
    return session(tmp_path / "next", config)


def saved(run: Any) -> dict[str, Any]:
    """The session's alarm state as pipeline.json holds it (and a reload carries it)."""
    state: dict[str, Any] = json.loads(json.dumps(run.alarm_state()))
    return state


def test_an_open_device_lost_stays_open_across_a_reload_until_data_comes(tmp_path: Path) -> None:
    first = session(tmp_path)
    mono = time.monotonic()
    first.check_gateway(2_000.0, mono + 31.0)  # 31 s of silence against lost_after_s 30
    (start,) = [json.loads(item.payload) for item in first.outbox.take(10)]
    assert (start["condition"], start["phase"]) == ("device_lost", "start")
    state = saved(first)
    first.outbox.close()

    second = later(tmp_path)
    mono = time.monotonic()
    second.load_gateway_alarms(state, now=2_002.0, now_monotonic=mono)  # the reload, 2 s later
    for t in range(1, 40):  # neither an END nor a second START while the device stays silent
        second.check_gateway(2_002.0 + t, mono + t)
    assert second.outbox.take(10) == []
    assert second._technical_active() == 1
    second._commit([Reading.single("bed-4/vitals", {"hr": 70.0}, 2_041.0, mono + 39.5)])
    second.check_gateway(2_042.0, mono + 40.0)
    (end,) = [json.loads(item.payload) for item in second.outbox.take(10)]
    assert (end["id"], end["seq"], end["phase"]) == (start["id"], start["seq"] + 1, "end")
    assert "after a silence of 71 s" in end["explanation"]["text"]  # 31 + 2 + 38: one silence


def test_a_restart_counts_the_downtime_into_the_silence(tmp_path: Path) -> None:
    first = session(tmp_path)
    first.check_gateway(2_000.0, time.monotonic() + 31.0)
    state = saved(first)
    first.outbox.close()
    second = later(tmp_path)
    mono = time.monotonic()
    second.load_gateway_alarms(state, now=2_100.0, now_monotonic=mono)  # started 100 s later
    assert second.health.silence_s("bed-4", mono) == 130.0  # 30 before the onset, 100 since


def test_a_device_that_talked_before_the_reload_ends_its_episode_as_before(tmp_path: Path) -> None:
    """Nothing is resumed when the saved state has no open device_lost: the count starts at 0."""
    run = session(tmp_path)
    mono = time.monotonic()
    run.load_gateway_alarms({}, now=2_000.0, now_monotonic=mono)
    run.check_gateway(2_010.0, mono + 10.0)
    assert run.outbox.take(10) == []


def _heard(run: Any, plx: float, heart_rate: float) -> None:
    """The BLE source's counters as the monitor copies them: when each profile was last heard."""
    heard = MappingProxyType({"plx": plx, "heart_rate": heart_rate})
    run.health.copy_source_stats("bed-7", SourceStats(connected=True, profiles_heard=heard))


def test_an_open_profile_silent_stays_open_across_a_reload_until_the_profile_notifies(
    tmp_path: Path,
) -> None:
    first = session(tmp_path, BLE)
    mono = time.monotonic()
    first._commit([Reading.single("bed-7/vitals", {"hr": 70.0}, 2_000.0, mono + 6.0)])
    _heard(first, plx=mono, heart_rate=mono + 6.0)  # the oximeter stopped, the strap goes on
    first.check_gateway(2_000.0, mono + 6.0)
    (start,) = [json.loads(item.payload) for item in first.outbox.take(10)]
    assert (start["condition"], start["stream"], start["phase"]) == ("profile_silent", "profile:plx", "start")
    state = saved(first)
    first.outbox.close()

    second = later(tmp_path, BLE)
    mono = time.monotonic()
    second.load_gateway_alarms(state, now=2_001.0, now_monotonic=mono)
    for t in range(1, 4):  # the new source's link comes up: both profiles "heard" at its start
        second._commit([Reading.single("bed-7/vitals", {"hr": 70.0}, 2_001.0 + t, mono + t)])
        _heard(second, plx=mono + 1.0, heart_rate=mono + t)
        second.check_gateway(2_001.0 + t, mono + t)
    assert second.outbox.take(10) == []  # the link's start is not a notification: still silent
    second._commit([Reading.single("bed-7/vitals", {"hr": 70.0, "spo2": 97.0}, 2_005.0, mono + 4.0)])
    _heard(second, plx=mono + 4.0, heart_rate=mono + 4.0)  # the oximeter notifies again
    second.check_gateway(2_005.0, mono + 4.0)
    (end,) = [json.loads(item.payload) for item in second.outbox.take(10)]
    assert (end["id"], end["seq"], end["phase"]) == (start["id"], start["seq"] + 1, "end")


def test_an_open_uplink_failing_stays_open_across_a_restart_until_the_uplink_connects(
    tmp_path: Path,
) -> None:
    first = session(tmp_path)
    first.uplink._network_failed = True  # paho's network thread died (as MqttUplink notes it)
    first.check_gateway(2_000.0, time.monotonic())
    (start,) = [json.loads(item.payload) for item in first.outbox.take(10)]
    assert (start["condition"], start["phase"]) == ("uplink_failing", "start")
    state = saved(first)
    first.outbox.close()

    second = later(tmp_path)
    mono = time.monotonic()
    second.load_gateway_alarms(state, now=2_001.0, now_monotonic=mono)
    second.check_gateway(2_002.0, mono + 1.0)
    assert second.outbox.take(10) == []  # the new uplink has not connected yet
    second.uplink._connected = True
    second.check_gateway(2_003.0, mono + 2.0)
    (end,) = [json.loads(item.payload) for item in second.outbox.take(10)]
    assert (end["id"], end["phase"]) == (start["id"], "end")


AGENT_CONFIG = """
[gateway]
id = "gw-lost"
site = "lab"
heartbeat_interval_s = 1
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:{port}"

[outbox]
path = "state/outbox.sqlite"

[[devices]]
id = "pump-3"
kind = "equipment"
transport = "serial"
lost_after_s = 2
[devices.serial]
port = "{port_path}"
"""


def test_the_daemon_keeps_device_lost_open_through_a_sighup_and_a_restart(
    make_broker: Callable[..., LocalBroker], tmp_path: Path
) -> None:
    """The reviewer's case with the real agent: a serial port that does not exist."""
    broker = make_broker()
    central = Subscriber(broker, "edge/lab/gw-lost/alarm")
    config = tmp_path / "agent.toml"
    config.write_text(AGENT_CONFIG.format(port=broker.port, port_path=tmp_path / "no-such-tty"))

    def lost() -> list[dict[str, Any]]:
        return [e for e in (m.json() for m in central.snapshot()) if e["condition"] == "device_lost"]

    agent = AgentRun(config)
    try:
        wait_until(lambda: bool(lost()), 30, "the device_lost START")
        agent.proc.send_signal(signal.SIGHUP)
        agent.wait_for("session 2:")
        time.sleep(5.0)  # more than lost_after_s: an END or a second START would have come
        assert agent.stop() == 0
        agent = AgentRun(config)
        agent.wait_for("session 3:")
        time.sleep(5.0)
    finally:
        if agent.proc.poll() is None:
            assert agent.stop() == 0
    assert [e["phase"] for e in lost()] == ["start"]


def _with_lost_after(seconds: float) -> dict[str, Any]:
    device = {**CONFIG["devices"][0], "lost_after_s": seconds}
    return {**CONFIG, "devices": [device]}


def _lost_start(tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A device_lost START at 31 s of silence against lost_after_s 30, and the state a reload carries."""
    first = session(tmp_path)
    first.check_gateway(2_000.0, time.monotonic() + 31.0)
    (start,) = [json.loads(item.payload) for item in first.outbox.take(10)]
    assert (start["condition"], start["phase"]) == ("device_lost", "start")
    state = saved(first)
    first.outbox.close()
    return start, state


def test_a_reload_that_raises_lost_after_s_ends_device_lost_as_a_rule_change_not_as_data(
    tmp_path: Path,
) -> None:
    """Raised to 40 s while silent for 32 s: the END says the limit changed, no data came, and the back
    end is not told the device is back; at 40 s of silence the device is lost again, under the new limit
    (the ended episode's cooldown does not hold it back)."""
    start, state = _lost_start(tmp_path)
    second = later(tmp_path, _with_lost_after(40))
    mono = time.monotonic()
    second.load_gateway_alarms(state, now=2_002.0, now_monotonic=mono)  # silent 32 s at the reload
    second.check_gateway(2_003.0, mono + 1.0)
    (end,) = [json.loads(item.payload) for item in second.outbox.take(10)]
    assert (end["id"], end["phase"], end["end_cause"]) == (start["id"], "end", "rule_changed")
    text = end["explanation"]["text"]
    assert "data again" not in text and "cleared" not in text
    assert text.startswith(
        "ended without data: lost_after_s changed to 40 s (a reload or restart), and the device's silence"
        " of 33 s is within it"
    )
    starts = []
    for t in range(2, 12):
        second.check_gateway(2_002.0 + t, mono + t)
        starts += [(t, json.loads(item.payload)) for item in second.outbox.take(10)]
    [(at, again)] = starts
    assert at == 9  # 32 + 9 = 41 s, the first check beyond 40 s (as 31 s was beyond 30), not 30 s later
    assert (again["phase"], again["condition"]) == ("start", "device_lost") and again["id"] != start["id"]


def test_a_reload_that_raises_lost_after_s_below_the_silence_keeps_device_lost_open(
    tmp_path: Path,
) -> None:
    start, state = _lost_start(tmp_path)
    second = later(tmp_path, _with_lost_after(32))
    mono = time.monotonic()
    second.load_gateway_alarms(state, now=2_005.0, now_monotonic=mono)  # silent 35 s: beyond 32 still
    for t in range(1, 5):
        second.check_gateway(2_005.0 + t, mono + t)
    assert second.outbox.take(10) == []
    second._commit([Reading.single("bed-4/vitals", {"hr": 70.0}, 2_010.0, mono + 4.5)])
    second.check_gateway(2_011.0, mono + 5.0)
    (end,) = [json.loads(item.payload) for item in second.outbox.take(10)]
    assert (end["id"], end["end_cause"]) == (start["id"], "cleared")
    assert "cleared: data again after a silence of 39 s (limit 32 s)" in end["explanation"]["text"]


def test_a_device_silent_but_not_yet_lost_at_a_reload_goes_on_counting(tmp_path: Path) -> None:
    """25 s silent of a 30 s lost_after_s at the reload: lost 5 s later, not 30 s later."""
    first = session(tmp_path)
    mono = time.monotonic()
    first.check_gateway(2_000.0, mono + 25.0)
    assert first.outbox.take(10) == []
    silences = first.silence_handover(mono + 25.0)
    first.outbox.close()

    second = later(tmp_path)
    second.resume_silences(silences, mono + 25.0)
    starts = []
    for t in range(1, 10):
        second.check_gateway(2_000.0 + t, mono + 25.0 + t)
        starts += [(t, json.loads(item.payload)) for item in second.outbox.take(10)]
    [(at, lost)] = starts
    assert at == 5 and (lost["condition"], lost["phase"]) == ("device_lost", "start")


def test_a_device_heard_before_the_reload_counts_from_its_last_reading(tmp_path: Path) -> None:
    first = session(tmp_path)
    heard = time.monotonic() - 10.0
    first._commit([Reading.single("bed-4/vitals", {"hr": 70.0}, 2_000.0, heard)])
    silences = first.silence_handover(time.monotonic())
    first.outbox.close()
    second = later(tmp_path)
    now = time.monotonic()
    second.resume_silences(silences, now)
    assert second.health.silence_s("bed-4", now) == now - heard  # not 0: the session's own start
    second._commit([Reading.single("bed-4/vitals", {"hr": 70.0}, 2_011.0, now + 1.0)])
    assert second.health.silence_s("bed-4", now + 2.0) == 1.0


def test_a_device_that_spoke_just_before_the_reload_counts_from_the_new_session(tmp_path: Path) -> None:
    """The reload's own gap (the new session's set-up, a BLE link made again) is not the device's silence:
    one heard 1 s before the reload is not handed over, as a restart would not count it either."""
    first = session(tmp_path)
    heard = time.monotonic() - 1.0
    first._commit([Reading.single("bed-4/vitals", {"hr": 70.0}, 2_000.0, heard)])
    assert first.silence_handover(time.monotonic()) == {}
    first.outbox.close()
    second = later(tmp_path)
    start = second.health.silent_since("bed-4")
    second.resume_silences({}, time.monotonic())
    assert second.health.silent_since("bed-4") == start > heard


def test_the_daemon_goes_on_counting_a_silence_through_a_sighup_and_ends_device_lost_on_a_raised_limit(
    make_broker: Callable[..., LocalBroker], tmp_path: Path
) -> None:
    """The real agent, a serial port that does not exist, lost_after_s 8. A SIGHUP 6 s into the
    silence (past HANDED_OVER_SILENCE_S): device_lost starts about 2 s later, before 8 s after the
    SIGHUP (its silence was counted from the new session's start). A second SIGHUP raising
    lost_after_s to 600: the episode ends as a changed limit, not as data."""
    broker = make_broker()
    central = Subscriber(broker, "edge/lab/gw-lost/alarm")
    config = tmp_path / "agent.toml"
    text = AGENT_CONFIG.format(port=broker.port, port_path=tmp_path / "no-such-tty")
    config.write_text(text.replace("lost_after_s = 2", "lost_after_s = 8"))

    def lost() -> list[dict[str, Any]]:
        return [e for e in (m.json() for m in central.snapshot()) if e["condition"] == "device_lost"]

    agent = AgentRun(config)
    try:
        agent.wait_for("session 1:")
        time.sleep(6.0)
        assert lost() == []
        reloaded_at = time.time()
        agent.proc.send_signal(signal.SIGHUP)
        agent.wait_for("session 2:")
        wait_until(lambda: bool(lost()), 30, "the device_lost START")
        (start,) = lost()
        detected = datetime.fromisoformat(start["detection_time"]).timestamp()
        assert detected < reloaded_at + 8.0, (detected - reloaded_at, agent.lines)

        config.write_text(text.replace("lost_after_s = 2", "lost_after_s = 600"))
        agent.proc.send_signal(signal.SIGHUP)
        agent.wait_for("session 3:")
        wait_until(lambda: len(lost()) == 2, 30, "the device_lost END")
    finally:
        if agent.proc.poll() is None:
            assert agent.stop() == 0
    end = lost()[1]
    assert (end["id"], end["phase"], end["end_cause"]) == (start["id"], "end", "rule_changed")
    assert end["explanation"]["text"].startswith("ended without data: lost_after_s changed to 600 s")
