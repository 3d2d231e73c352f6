"""Open alarm episodes across reloads and restarts (agent.restored_episodes), with the real agent.

- One whose rule, device or stream the new configuration no longer has gets an END. Before, a reload or
  restart with the rule renamed (or the device replaced) dropped the saved episode silently: nothing
  could step it again, and the back end that had its START held it open for good.
- One carried across a stop says, in its END, how long no agent judged it (`unjudged_s`).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from daemon_session import session
from test_operator_errors import AgentRun
from uplink_probe import Subscriber
from waiting import wait_until

from agent.alarms import StreamRef
from agent.localbroker import LocalBroker
from agent.restored_episodes import add_downtime, retire


@contextmanager
def running(config: Path) -> Iterator[AgentRun]:
    """`edge-agent run` with `config`, stopped on the way out if a test left it running."""
    agent = AgentRun(config)
    try:
        yield agent
    finally:
        if agent.proc.poll() is None:
            agent.stop()


AGENT_CONFIG = """
[gateway]
id = "gw-retire"
site = "lab"
heartbeat_interval_s = 1
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:{port}"

[outbox]
path = "state/outbox.sqlite"

[[devices]]
id = "{device}"
kind = "wearable"
transport = "simulator"
[devices.simulator]
seed = 5
speed = 20.0
episodes = [{{ condition = "tachycardia", start_s = 20, duration_s = 36000 }}]

[[detectors]]
id = "hr-high"
type = "limit"
stream = "vitals"
channels = ["hr"]
params = {{ above = 120 }}

[[alarms]]
condition = "{condition}"
detector = "hr-high"
min_duration_s = 2
"""


def events(central: Subscriber, **match: Any) -> list[dict[str, Any]]:
    """Alarm events received, duplicates by (id, seq) dropped, those whose fields equal `match`."""
    seen: set[tuple[str, int]] = set()
    out = []
    for event in (m.json() for m in central.snapshot()):
        if (event["id"], event["seq"]) not in seen and all(event[k] == v for k, v in match.items()):
            seen.add((event["id"], event["seq"]))
            out.append(event)
    return out


def test_renamed_rule_and_replaced_device_end_their_open_episodes_once(
    make_broker: Callable[..., LocalBroker], tmp_path: Path
) -> None:
    broker = make_broker()
    central = Subscriber(broker, "edge/lab/gw-retire/alarm")
    config = tmp_path / "agent.toml"

    def write(device: str, condition: str) -> None:
        config.write_text(AGENT_CONFIG.format(port=broker.port, device=device, condition=condition))

    write("monitor-bed-5", "tachycardia")
    with running(config) as agent:
        wait_until(lambda: events(central, condition="tachycardia", phase="start"), 30, "the START")
        (start,) = events(central, condition="tachycardia", phase="start")

        write("monitor-bed-5", "hr_above_120")  # the rule renamed: a reload
        agent.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: events(central, id=start["id"], phase="end"), 30, "the renamed rule's END")
        (end,) = events(central, id=start["id"], phase="end")
        assert end["seq"] == start["seq"] + 1 and end["priority"] == start["priority"]
        assert (end["condition"], end["device"], end["stream"]) == ("tachycardia", start["device"], "vitals")
        assert "rule is no longer configured" in end["explanation"]["text"]
        assert end["explanation"]["signal_quality"] == "unknown" and end["end_cause"] == "not_configured"
        assert end["end_time"] >= end["onset_time"] == start["onset_time"]
        # The condition goes on, so the renamed rule raises its own episode.
        wait_until(lambda: events(central, condition="hr_above_120", phase="start"), 30, "the new START")
        (renamed,) = events(central, condition="hr_above_120", phase="start")
        assert agent.stop() == 0

    write("monitor-bed-6", "hr_above_120")  # another patient's monitor: a restart
    with running(config) as agent:
        wait_until(lambda: events(central, id=renamed["id"], phase="end"), 30, "the replaced device's END")
        (gone,) = events(central, id=renamed["id"], phase="end")
        assert "device is no longer configured" in gone["explanation"]["text"]
        wait_until(lambda: len(events(central, condition="hr_above_120", phase="start")) == 2, 30, "bed 6")
        assert agent.stop() == 0

    beats = Subscriber(broker, "edge/lab/gw-retire/heartbeat")
    with running(config) as agent:  # the same config again: nothing more to end
        wait_until(lambda: len(beats.snapshot()) >= 3, 30, "three heartbeats after the last start")
        assert agent.stop() == 0
    # Each retired once (a restart's simulator begins its timeline again, so bed 6's episode may end
    # on its own, with a verdict, too).
    retired = [
        (e["id"], e["seq"])
        for e in (m.json() for m in central.snapshot())
        if e["phase"] == "end" and "configuration changed" in e["explanation"]["text"]
    ]
    assert retired == [(start["id"], start["seq"] + 1), (renamed["id"], renamed["seq"] + 1)]


def test_rows_the_configuration_can_still_step_are_kept_and_closed_rows_dropped(tmp_path: Path) -> None:
    run = session(tmp_path)
    bed = run.device_refs[0].device_pseudonym
    episode = {"id": "0192f0a0-0000-7000-8000-000000000001", "next_seq": 1, "priority": "medium"}
    row = {"device": bed, "stream": "device", "state": "ACTIVE", "onset": 100.0, "detection": 130.0}
    saved = {
        run.device_lost.key: {
            "condition": "device_lost",
            "streams": [
                {**row, "episode": episode, "peak_observed": 45.0, "peak_limit": 30.0},
                {**row, "device": "gone-device", "episode": {**episode, "id": "e-2"}},
                {**row, "device": "gone-too", "state": "PENDING"},  # no episode: nothing to end
            ],
        }
    }
    kept, ended = retire(json.loads(json.dumps(saved)), run.unsteppable, "gw", "cfg", 1_000.0)
    assert [r["device"] for r in kept[run.device_lost.key]["streams"]] == [bed]
    (end,) = ended
    assert (end.id, end.seq, end.device, end.kind.value) == ("e-2", 1, "gone-device", "technical")
    assert end.unjudged_s == 0.0 and "while no agent ran" not in end.explanation.text
    assert (end.onset_time, end.end_time) == (100.0, 1_000.0)
    assert "device is no longer configured" in end.explanation.text
    # The session's own check, as `restored` asks it for each book.
    assert run.unsteppable(run.device_lost.key, StreamRef(bed, "device")) is None
    assert run.unsteppable("old-detector/old_condition", StreamRef(bed, "vitals")) is not None


def test_a_retired_episode_carries_the_unjudged_time_it_had_saved() -> None:
    """The reviewer's case: an AF episode open across 30 min with no agent, then a restart that renamed
    its rule. Its END said `unjudged_s` 0 (crash/outage review, finding 1)."""
    episode = {"id": "e-1", "next_seq": 2, "priority": "high", "unjudged_s": 1_800.0}
    row = {"device": "d-1", "stream": "rr", "state": "ACTIVE", "onset": 100.0, "detection": 130.0}
    saved = {
        "af/atrial_fibrillation": {
            "condition": "atrial_fibrillation",
            "streams": [{**row, "episode": episode}],
        }
    }
    _, (end,) = retire(saved, lambda key, ref: "its rule is no longer configured", "gw", "cfg", 2_000.0)
    assert end.unjudged_s == 1_800.0
    assert end.explanation.text.endswith("; not judged for about 1800 s of it while no agent ran")


def test_an_episode_carried_across_a_stop_says_how_long_no_agent_judged_it(
    make_broker: Callable[..., LocalBroker], tmp_path: Path
) -> None:
    broker = make_broker()
    central = Subscriber(broker, "edge/lab/gw-retire/alarm")
    config = tmp_path / "agent.toml"
    # At speed 1 the readings carry the wall clock's times, as a real device's do; the limit is set
    # below the simulated patient's resting rate, so the episode starts within seconds.
    real_time = AGENT_CONFIG.replace("speed = 20.0", "speed = 1.0").replace(
        "min_duration_s = 2", "min_duration_s = 2\nclear_after_s = 1"
    )
    low_limit = real_time.replace("above = 120", "above = 40")
    config.write_text(low_limit.format(port=broker.port, device="monitor-bed-5", condition="tachycardia"))
    with running(config) as agent:
        wait_until(lambda: events(central, phase="start"), 30, "the START")
        (start,) = events(central, phase="start")
        assert start["unjudged_s"] == 0
        assert agent.stop() == 0
    time.sleep(4.0)  # no agent runs
    # The rule's limit back at 120 bpm: the patient's resting rate is a clear verdict, the episode ends.
    config.write_text(real_time.format(port=broker.port, device="monitor-bed-5", condition="tachycardia"))
    with running(config) as agent:
        wait_until(lambda: events(central, id=start["id"], phase="end"), 30, "the END after the restart")
        (end,) = events(central, id=start["id"], phase="end")
        assert 4.0 <= end["unjudged_s"] < 30.0
        assert "while no agent ran" in end["explanation"]["text"]
        assert agent.stop() == 0


def test_an_episode_retired_at_a_start_says_how_long_no_agent_judged_it(
    make_broker: Callable[..., LocalBroker], tmp_path: Path
) -> None:
    """Its rule renamed while no agent ran: the END that retires it counts the stop, as the END of a
    still-configured episode does (it said `unjudged_s` 0: crash/outage review, finding 1)."""
    broker = make_broker()
    central = Subscriber(broker, "edge/lab/gw-retire/alarm")
    config = tmp_path / "agent.toml"
    real_time = AGENT_CONFIG.replace("speed = 20.0", "speed = 1.0").replace("above = 120", "above = 40")
    config.write_text(real_time.format(port=broker.port, device="monitor-bed-5", condition="tachycardia"))
    with running(config) as agent:
        wait_until(lambda: events(central, phase="start"), 30, "the START")
        (start,) = events(central, phase="start")
        assert agent.stop() == 0
    time.sleep(3.0)  # no agent runs
    config.write_text(real_time.format(port=broker.port, device="monitor-bed-5", condition="hr_above_40"))
    with running(config) as agent:
        wait_until(lambda: events(central, id=start["id"], phase="end"), 30, "the retired END")
        (end,) = events(central, id=start["id"], phase="end")
        assert "rule is no longer configured" in end["explanation"]["text"]
        assert 3.0 <= end["unjudged_s"] < 30.0
        assert "while no agent ran" in end["explanation"]["text"]
        assert agent.stop() == 0


def test_a_reload_that_raises_the_limit_ends_the_episode_saying_the_rule_changed(
    make_broker: Callable[..., LocalBroker], tmp_path: Path
) -> None:
    """A SIGHUP raised the limit above the patient's rate: the episode ended at the reload with a text
    that read as a recovery (crash/outage review, finding 3). Now its END says `end_cause` "rule_changed"."""
    broker = make_broker()
    central = Subscriber(broker, "edge/lab/gw-retire/alarm")
    config = tmp_path / "agent.toml"
    real_time = AGENT_CONFIG.replace("speed = 20.0", "speed = 1.0").replace(
        "min_duration_s = 2", "min_duration_s = 2\nclear_after_s = 1"
    )
    config.write_text(
        real_time.replace("above = 120", "above = 40").format(
            port=broker.port, device="monitor-bed-5", condition="tachycardia"
        )
    )
    with running(config) as agent:
        wait_until(lambda: events(central, phase="start"), 30, "the START")
        (start,) = events(central, phase="start")
        config.write_text(
            real_time.replace("above = 120", "above = 200").format(
                port=broker.port, device="monitor-bed-5", condition="tachycardia"
            )
        )
        agent.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: events(central, id=start["id"], phase="end"), 30, "the END after the reload")
        (end,) = events(central, id=start["id"], phase="end")
        assert end["end_cause"] == "rule_changed" and end["seq"] == start["seq"] + 1
        assert "the rule changed (a reload or restart)" in end["explanation"]["text"]
        assert agent.stop() == 0


def test_downtime_adds_to_every_open_episode_and_only_to_them() -> None:
    episode = {"id": "e-1", "next_seq": 1, "priority": "high", "unjudged_s": 5.0}
    saved = {
        "hr-high/tachycardia": {
            "condition": "tachycardia",
            "streams": [
                {
                    "device": "d-1",
                    "stream": "vitals",
                    "state": "ACTIVE",
                    "detection": 900.0,
                    "episode": episode,
                },
                {"device": "d-2", "stream": "vitals", "state": "PENDING"},
                # detected after the save (the journal has it): counted from its detection
                {
                    "device": "d-3",
                    "stream": "vitals",
                    "state": "ACTIVE",
                    "detection": 1_030.0,
                    "episode": episode,
                },
                # detected after the start (a clock behind by less than the slack): nothing, never less
                {
                    "device": "d-4",
                    "stream": "vitals",
                    "state": "ACTIVE",
                    "detection": 1_070.0,
                    "episode": episode,
                },
            ],
        }
    }
    rows = add_downtime(saved, 1_000.0, 1_060.0)["hr-high/tachycardia"]["streams"]
    assert [r.get("episode", {}).get("unjudged_s") for r in rows] == [65.0, None, 35.0, 5.0]
    assert saved["hr-high/tachycardia"]["streams"][0]["episode"]["unjudged_s"] == 5.0  # not changed in place


def test_a_start_with_the_clock_behind_the_saved_state_moves_its_timers_back(
    make_broker: Callable[..., LocalBroker], tmp_path: Path
) -> None:
    """A Pi without a real-time clock starts an hour behind after a power cut: a rule's saved cooldown
    then lay an hour in its future and silenced a real tachycardia (offline-clinic audit, finding 4).
    Here the saved state is moved an hour ahead instead, which is the same to the agent."""
    broker = make_broker()
    central = Subscriber(broker, "edge/lab/gw-retire/alarm")
    config = tmp_path / "agent.toml"
    cooling = AGENT_CONFIG.replace("min_duration_s = 2", "min_duration_s = 2\ncooldown_s = 1")
    ending = cooling.replace("duration_s = 36000", "duration_s = 40")
    config.write_text(ending.format(port=broker.port, device="monitor-bed-5", condition="tachycardia"))
    with running(config) as agent:
        wait_until(lambda: events(central, phase="end"), 30, "the first episode's END")
        assert agent.stop() == 0
    state_file = tmp_path / "state" / "pipeline.json"
    state = json.loads(state_file.read_text())
    hour = 3600.0
    state["saved_at"] += hour
    for book in state["alarms"].values():
        for row in book["streams"]:
            for key in ("onset", "detection", "clear_since", "cooldown_until"):
                if isinstance(row.get(key), float):
                    row[key] += hour
    assert any(
        isinstance(row.get("cooldown_until"), float)
        for book in state["alarms"].values()
        for row in book["streams"]
    ), "the saved state holds the rule's cooldown"
    state_file.write_text(json.dumps(state))

    # The simulator's timeline begins again, now with a tachycardia that lasts: once the rule's cooldown
    # has passed (the first run's readings ran ahead of the wall clock at speed 20), it alarms again.
    config.write_text(cooling.format(port=broker.port, device="monitor-bed-5", condition="tachycardia"))
    with running(config) as agent:
        agent.wait_for("behind the time the state was saved")
        wait_until(lambda: len(events(central, phase="start")) == 2, 30, "the second episode's START")
        assert agent.stop() == 0
