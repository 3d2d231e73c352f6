"""Chaos: the agent PROCESS is SIGKILLed at seeded random points and restarted, again and again.

The real daemon (`python -m agent.cli run`) runs simulated wearables at high speed with detectors set
close to the signals' normal range, so alarm episodes start and end several times a second, and it
beats every 0.2 s. A central subscriber with a persistent MQTT v5 session (QoS 1) on a real mosquitto
records everything. After each kill the outbox file is opened read-only: SQLite's integrity check
must say "ok", and every alarm row in it is committed, so the agent owes its delivery. Two kills in
three happen while the broker is frozen (SIGSTOP), so that rows are in flight, published but not
acknowledged, at the moment of the crash.

At the end the agent runs once more with its simulators slowed to a crawl (same gateway, outbox and
state; no new episode can start or end), until its outbox holds no alarm, then stops on SIGTERM.
Every alarm id ever seen committed must have reached the subscriber; a key received twice must be
the same bytes twice (a redelivery, not an event made again from stale state); no episode may end (or
update) at the receiver without its start; and every episode the receiver saw start without an end
must still be running in the agent's saved state (a crash never makes the agent forget an episode).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path

from daemon_harness import (
    DaemonProcess,
    active_episodes,
    alarm_copies,
    identity_clashes,
    of_leaf,
    pairing_problems,
    read_outbox,
    started_not_ended,
)
from ports import RefusingPort
from uplink_probe import Subscriber
from waiting import wait_until

from agent.localbroker import LocalBroker
from agent.status import read_status

BrokerFactory = Callable[..., LocalBroker]
SEED = 20261129
KILLS = 12
# On a loaded machine a session commits fewer alarms in its life: it is killed again (seeded lives
# still) until the outbox was seen busy, up to this many kills.
MAX_KILLS = 36
LIFETIME_S = (0.8, 3.0)  # a session lives this long (uniform, seeded) before its SIGKILL
FROZEN_S = (0.3, 1.0)  # how long the broker is frozen before a kill (two kills in three)
DEVICES = 12
SPEED = 50.0  # simulated seconds per real second: episodes start and end several times a second
QUIET_SPEED = 0.001  # the final drain run: no episode can change state in its lifetime
GATEWAY_TOPICS = "edge/lab/gw-chaos/#"


def chaos_config(
    port: int, speed: float, *, devices: int = DEVICES, heartbeat_s: float = 0.2, extra: str = ""
) -> str:
    simulated = "".join(
        f"""
[[devices]]
id = "wearable-{i}"
kind = "wearable"
transport = "simulator"
[devices.simulator]
seed = {i}
speed = {speed}
"""
        for i in range(devices)
    )
    # Limits inside the normal range (SpO2 96.5-98.5 %, heart rate 60-80 bpm with breathing swings)
    # and short timings: both conditions flip on and off all the time.
    return f"""
[gateway]
id = "gw-chaos"
site = "lab"
heartbeat_interval_s = {heartbeat_s}
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:{port}"

[outbox]
path = "state/outbox.sqlite"
{simulated}{extra}
[[detectors]]
id = "spo2-low"
type = "limit"
stream = "vitals"
channels = ["spo2"]
params = {{ below = 97.5 }}

[[alarms]]
condition = "desaturation"
detector = "spo2-low"
priority = "high"
min_duration_s = 1
clear_after_s = 1
cooldown_s = 0

[[detectors]]
id = "hr-high"
type = "limit"
stream = "vitals"
channels = ["hr"]
params = {{ above = 70 }}

[[alarms]]
condition = "tachycardia"
detector = "hr-high"
priority = "medium"
min_duration_s = 2
clear_after_s = 2
cooldown_s = 0
"""


def sessions_started(agent: DaemonProcess) -> int:
    """The sessions the agent's log (all its runs) says were started."""
    return (
        agent.log_path.read_text(errors="replace").count("detector(s), uplink")
        if agent.log_path.exists()
        else 0
    )


def answers_live(state_dir: Path) -> bool:
    found = read_status(state_dir, timeout_s=0.5)
    return found is not None and found.source == "live"


def test_every_committed_event_is_delivered_across_agent_sigkills(
    make_broker: BrokerFactory, tmp_path: Path
) -> None:
    broker = make_broker()
    central = Subscriber(broker, GATEWAY_TOPICS, client_id="central", persistent=True)
    config = tmp_path / "agent.toml"
    config.write_text(chaos_config(broker.port, SPEED))
    outbox_path = tmp_path / "state" / "outbox.sqlite"
    agent = DaemonProcess(config, tmp_path)
    rng = random.Random(SEED)
    committed: set[str] = set()  # alarm ids found in the outbox after a crash
    inflight_at_kill = 0
    kills = 0

    def busy_enough() -> bool:
        return len(committed) >= 20 and inflight_at_kill >= 5

    try:
        while kills < KILLS or (not busy_enough() and kills < MAX_KILLS):
            agent.start()
            # The life counts from the session's start: on a loaded machine the start-up alone can
            # outlast LIFETIME_S, and kills during the imports would test nothing.
            wait_until(lambda: sessions_started(agent) >= agent.starts, 60, "the agent's session to start")
            life = rng.uniform(*LIFETIME_S)
            frozen = rng.uniform(*FROZEN_S) if kills % 3 else 0.0
            time.sleep(max(0.0, life - frozen))  # the seeded random kill point is the experiment
            if frozen:
                broker.pause()
                time.sleep(frozen)
            early_exit = agent.kill()
            broker.resume()
            assert early_exit is None, f"the agent exited by itself ({early_exit}):\n{agent.log_tail()}"
            kills += 1
            snapshot = read_outbox(outbox_path)
            assert snapshot.integrity == "ok", f"after kill {kills}: {snapshot.integrity}"
            committed |= snapshot.ids()
            inflight_at_kill += sum(
                1 for r in snapshot.of_kind("alarm", "technical") if r.state == "inflight"
            )

        # The drain run: same outbox and state, simulators crawling, until no alarm is left to send.
        config.write_text(chaos_config(broker.port, QUIET_SPEED))
        agent.start()
        # Up first (its SIGTERM handler installed): an outbox already empty must not stop it mid-start.
        wait_until(lambda: answers_live(tmp_path / "state"), 30, "the agent to answer status")
        wait_until(lambda: not read_outbox(outbox_path).ids(), 30, "the outbox to drain its alarms")
        assert agent.terminate() == 0, agent.log_tail()
        final = read_outbox(outbox_path)
        assert final.integrity == "ok" and not final.ids(), final.ids()
        wait_until(lambda: committed <= set(alarm_copies(central.snapshot())), 15, "every committed id")
    finally:
        agent.close()
        broker.resume()
        central.close()

    received = central.snapshot()
    copies = alarm_copies(received)
    assert kills >= KILLS and agent.starts == kills + 1
    missing = committed - set(copies)
    assert not missing, f"{len(missing)} committed alarm ids never arrived, e.g. {sorted(missing)[:5]}"
    # The crashes must have hit a busy outbox, or the test proves nothing.
    assert busy_enough(), (len(committed), inflight_at_kill)
    assert len(copies) >= 80, len(copies)
    # Duplicates are removable by id: every copy of a key is the same transition of the same episode.
    assert not (clashes := identity_clashes(copies)), clashes[:3]
    assert not (problems := pairing_problems(received)), problems[:5]
    sessions = {json.loads(m.payload)["session"] for m in of_leaf(received, "heartbeat")}
    assert len(sessions) >= 3, sessions  # runs lived long enough to connect and beat
    # Duplicates come from redelivery only: the same bytes (not an event made again from stale state).
    rewritten = [key for key, p in copies.items() if len(set(p)) > 1]
    assert not rewritten, [sorted(set(copies[k])) for k in rewritten[:2]]
    # An episode the receiver saw start and not end is still running in the agent's saved state:
    # none was forgotten by a crash (it would stay open at the receiver forever).
    orphans = started_not_ended(received) - active_episodes(tmp_path / "state", outbox_path)
    assert not orphans, f"{len(orphans)} episodes started and were forgotten: {sorted(orphans)[:3]}"
    duplicates = sum(len(p) for p in copies.values()) - len(copies)
    print(
        f"\nkills {kills}, alarm events {len(copies)}, committed seen after kills {len(committed)}, "
        f"in flight at kills {inflight_at_kill}, duplicates {duplicates}, "
        f"heartbeats {len(of_leaf(received, 'heartbeat'))} over {len(sessions)} sessions"
    )


def test_alarm_state_is_saved_with_the_events_not_at_the_next_heartbeat(
    refusing_port: RefusingPort, tmp_path: Path
) -> None:
    """The agent commits its alarm episodes with their events (not at the next heartbeat's full save):
    a crash long before that save must not make it forget an episode whose start is on its way."""
    episode = """
[[devices]]
id = "wearable-episode"
kind = "wearable"
transport = "simulator"
[devices.simulator]
seed = 3
speed = 20.0
episodes = [{ condition = "tachycardia", start_s = 20, duration_s = 200 }]
"""
    config = tmp_path / "agent.toml"
    # No broker on the port: every event stays in the outbox; no heartbeat within the test.
    text = chaos_config(refusing_port.port, SPEED, devices=0, heartbeat_s=3600, extra=episode).replace(
        "above = 70", "above = 120"
    )
    config.write_text(text.replace("below = 97.5", "below = 50"))
    outbox_path = tmp_path / "state" / "outbox.sqlite"
    agent = DaemonProcess(config, tmp_path)
    agent.start()
    try:
        wait_until(lambda: bool(read_outbox(outbox_path).ids()), 30, "the tachycardia start in the outbox")
        assert agent.kill() is None, agent.log_tail()
    finally:
        agent.close()
    starts = [r.json() for r in read_outbox(outbox_path).of_kind("alarm")]
    assert [(e["condition"], e["phase"]) for e in starts] == [("tachycardia", "start")], starts
    assert active_episodes(tmp_path / "state", outbox_path) == {starts[0]["id"]}
