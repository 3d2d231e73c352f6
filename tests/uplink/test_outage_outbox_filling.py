"""A long broker outage with a small outbox: heartbeats go first, alarms are never lost.

The real daemon runs eight simulated wearables at 20x, two of them with injected tachycardia and
desaturation episodes, beating every 0.05 s into an outbox bounded at about 50 heartbeats. A central
subscriber with a persistent session is connected before the broker stops (gracefully, so the broker
keeps the session and subscription in its persistence file). While the broker is down the outbox file
is read (read-only) again and again: no alarm row ever disappears, the technical "outbox_filling"
alarm is committed once the alarm rows fill its warning level, and the agent's status socket counts
evicted heartbeats. When the broker comes
back on the same port, every alarm reaches the subscriber, every alarm queued during the outage
arrives before any heartbeat queued during it (the outbox drains by priority, heartbeats last), and
"outbox_filling" ends once the outbox has drained. A second run without episodes fills the outbox
with heartbeats alone: they are evicted for room, and "outbox_filling" (HIGH) is not raised.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon_harness import (
    DaemonProcess,
    OutboxSnapshot,
    alarm_copies,
    alarm_key,
    of_leaf,
    read_outbox,
)
from uplink_probe import Received, Subscriber
from waiting import wait_until

from agent.localbroker import LocalBroker
from agent.status import read_status

BrokerFactory = Callable[..., LocalBroker]
MAX_BYTES = 65_536  # the smallest bound the config accepts: about 50 heartbeats of 8 devices
QUIET_DEVICES = 6  # wearables without episodes: they make heartbeats bigger, the outbox fills sooner
# outbox_filling watches the alarm rows' share of the bound (heartbeats make room for alarms): 10 %,
# the least the config accepts, is 6.5 KiB, a few alarm events.
WARN_FRACTION = 0.1
GATEWAY_TOPICS = "edge/lab/gw-outage/#"

CONFIG = """
[gateway]
id = "gw-outage"
site = "lab"
heartbeat_interval_s = 0.05
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:{port}"

[outbox]
path = "state/outbox.sqlite"
max_bytes = {max_bytes}
warn_fraction = {warn}

[[devices]]
id = "wearable-a"
kind = "wearable"
transport = "simulator"
[devices.simulator]
seed = 5
speed = 20.0
episodes = [{episodes_a}]

[[devices]]
id = "wearable-b"
kind = "wearable"
transport = "simulator"
[devices.simulator]
seed = 6
speed = 20.0
episodes = [{episodes_b}]
{quiet}
[[detectors]]
id = "hr-high"
type = "limit"
stream = "vitals"
channels = ["hr"]
params = {{ above = 120 }}

[[alarms]]
condition = "tachycardia"
detector = "hr-high"
priority = "medium"
min_duration_s = 5
clear_after_s = 5
cooldown_s = 0

[[detectors]]
id = "spo2-low"
type = "limit"
stream = "vitals"
channels = ["spo2"]
params = {{ below = 90 }}

[[alarms]]
condition = "desaturation"
detector = "spo2-low"
priority = "high"
min_duration_s = 5
clear_after_s = 5
cooldown_s = 0
"""

QUIET = """
[[devices]]
id = "wearable-quiet-{n}"
kind = "wearable"
transport = "simulator"
[devices.simulator]
seed = {n}
speed = 20.0
"""


def episodes(condition: str, first_s: int) -> str:
    """One episode of 40 simulated s every 80 s (every 4 s at 20x), for 20 simulated minutes."""
    return ", ".join(
        f'{{ condition = "{condition}", start_s = {s}, duration_s = 40 }}' for s in range(first_s, 1200, 80)
    )


def live_status(state_dir: Path) -> dict[str, Any]:
    found = read_status(state_dir)
    assert found is not None and found.source == "live", found
    return found.status


def beat_key(payload: dict[str, Any]) -> tuple[int, str]:
    """Heartbeats carry no id: the session and the creation time tell them apart."""
    return int(payload["session"]), str(payload["time"])


def reconnect_time(messages: list[Received]) -> str | None:
    """The time in the agent's first birth message among `messages` (ISO strings compare in order)."""
    births = [m.json() for m in of_leaf(messages, "status") if m.json()["state"] == "online"]
    return str(births[0]["time"]) if births else None


def of_leaf_indexed(messages: list[Received], leaf: str) -> list[Received | None]:
    """`messages` with every message not on `leaf` replaced by None, so positions stay comparable."""
    return [m if m.topic.rsplit("/", 1)[-1] == leaf else None for m in messages]


def conditions(rows: OutboxSnapshot) -> set[str]:
    return {str(r.json()["condition"]) for r in rows.of_kind("technical")}


def test_outage_evicts_heartbeats_first_keeps_every_alarm_and_drains_alarms_first(
    make_broker: BrokerFactory, tmp_path: Path
) -> None:
    broker = make_broker(persistence=True)
    central = Subscriber(broker, GATEWAY_TOPICS, client_id="central", persistent=True)
    config = tmp_path / "agent.toml"
    config.write_text(
        CONFIG.format(
            port=broker.port,
            max_bytes=MAX_BYTES,
            warn=WARN_FRACTION,
            episodes_a=episodes("tachycardia", 20),
            episodes_b=episodes("spo2_desaturation", 40),
            quiet="".join(QUIET.format(n=n) for n in range(QUIET_DEVICES)),
        )
    )
    state_dir = tmp_path / "state"
    outbox_path = state_dir / "outbox.sqlite"
    agent = DaemonProcess(config, tmp_path)
    committed: set[str] = set()  # alarm ids seen in the outbox during the outage
    vanished: set[str] = set()  # alarm ids seen once and missing from a later look: evicted
    try:
        agent.start()

        def beating() -> bool:
            agent.check_alive()
            return len(of_leaf(central.snapshot(), "heartbeat")) >= 3

        wait_until(beating, 30, "heartbeats before the outage")

        broker.stop()  # the outage: graceful, so the broker keeps the subscriber's session
        outage_from = len(central.snapshot())

        def outbox_full_of_trouble() -> bool:
            agent.check_alive()
            snapshot = read_outbox(outbox_path)
            assert snapshot.integrity == "ok", snapshot.integrity
            ids = snapshot.ids()
            vanished.update(committed - ids)
            committed.update(ids)
            evicted = live_status(state_dir)["outbox"]["evicted"]
            physiological = len(snapshot.of_kind("alarm"))
            return "outbox_filling" in conditions(snapshot) and evicted >= 10 and physiological >= 4

        wait_until(outbox_full_of_trouble, 40, "outbox_filling, evicted heartbeats and queued alarms")
        backlog = read_outbox(outbox_path)
        status = live_status(state_dir)
        assert central.connects == 1 and agent.alive, agent.log_tail()

        broker.start()  # back on the same port, with the subscriber's session from its persistence file

        def delivered_alarms_and_a_fresh_heartbeat() -> bool:
            # Heartbeats drain oldest first: one made after the reconnect means every older one is sent.
            received = central.snapshot()
            reconnected = reconnect_time(received[outage_from:])
            fresh = reconnected is not None and any(
                m.json()["time"] > reconnected for m in of_leaf(received[outage_from:], "heartbeat")
            )
            return fresh and committed <= set(alarm_copies(received))

        wait_until(delivered_alarms_and_a_fresh_heartbeat, 40, "every alarm and the queued heartbeats")

        def filling_ended() -> bool:
            agent.check_alive()
            events = [json.loads(p[0]) for p in alarm_copies(central.snapshot()).values()]
            return any(e["condition"] == "outbox_filling" and e["phase"] == "end" for e in events)

        wait_until(filling_ended, 20, "the outbox_filling alarm to end once the outbox drained")
        assert agent.terminate() == 0, agent.log_tail()
    finally:
        agent.close()
        central.close()

    # Heartbeats were evicted for room; no alarm ever was.
    assert not vanished, f"alarm rows vanished from the outbox during the outage: {sorted(vanished)[:5]}"
    assert status["outbox"]["evicted"] >= 10
    queued_alarms = backlog.of_kind("alarm", "technical")
    queued_beats = backlog.of_kind("heartbeat")
    assert {r.id for r in queued_alarms} == committed
    assert status["outbox"]["size_bytes"] > WARN_FRACTION * MAX_BYTES

    received = central.snapshot()
    copies = alarm_copies(received)
    assert committed <= set(copies)
    technical = [json.loads(p[0]) for p in copies.values() if json.loads(p[0])["kind"] == "technical"]
    filling = sorted((e["seq"], e["phase"]) for e in technical if e["condition"] == "outbox_filling")
    assert filling == [(0, "start"), (1, "end")], technical
    assert all(e["priority"] == "high" for e in technical if e["condition"] == "outbox_filling")
    # The END says the outbox drained, not the START's "not draining" (audit audoff, finding 6).
    end = next(e for e in technical if e["condition"] == "outbox_filling" and e["phase"] == "end")
    assert "below the outbox's warning level" in end["explanation"]["text"], end["explanation"]
    assert "not draining" not in end["explanation"]["text"]
    # The outage's lost heartbeats are told: a log line, and a count in the heartbeats themselves.
    log = agent.log_path.read_text(errors="replace")
    assert log.count("drops heartbeats, the oldest first, for room") == 1, agent.log_tail()
    dropped = [m.json().get("outbox_heartbeats_dropped") for m in of_leaf(received, "heartbeat")]
    assert max(d for d in dropped if d is not None) >= status["outbox"]["evicted"] >= 10

    # Order of arrival after the outage: the alarms queued during it, then the heartbeats queued during it
    # (made before the reconnect). Resent heartbeats from before the outage may come first: those the agent
    # had in flight, and those the broker had in flight to the subscriber when it stopped.
    after = received[outage_from:]
    reconnected = reconnect_time(after)
    assert reconnected is not None
    resent = {beat_key(r.json()) for r in backlog.of_kind("heartbeat") if r.state == "inflight"}
    resent |= {
        beat_key(m.json()) for m in of_leaf(received[:outage_from], "heartbeat")
    }  # broker's redelivery
    alarm_positions = [
        i for i, m in enumerate(after) if m.topic.endswith("/alarm") and alarm_key(m.json()) in committed
    ]
    beat_positions = [
        i
        for i, m in enumerate(of_leaf_indexed(after, "heartbeat"))
        if m is not None and m.json()["time"] < reconnected and beat_key(m.json()) not in resent
    ]
    assert len(alarm_positions) >= len(committed) >= 5 and len(beat_positions) >= 10, (
        alarm_positions,
        beat_positions,
    )
    assert max(alarm_positions) < min(beat_positions), "\n".join(
        f"{m.topic[-9:]} {m.payload[:120]!r}" for m in after[:12]
    )
    print(
        f"\nqueued during the outage: {len(committed)} alarms, {len(queued_beats)} heartbeats kept, "
        f"{status['outbox']['evicted']} evicted; outbox_filling {filling}"
    )


def test_an_outbox_full_of_heartbeats_alone_evicts_them_and_raises_no_outbox_filling(
    make_broker: BrokerFactory, tmp_path: Path
) -> None:
    """Offline review M1: heartbeats fill the outbox past its warning level in an outage, are evicted for
    room as they should be, and raise no HIGH outbox_filling: no alarm is threatened by them."""
    broker = make_broker()
    config = tmp_path / "agent.toml"
    config.write_text(
        CONFIG.format(
            port=broker.port,
            max_bytes=MAX_BYTES,
            warn=0.5,
            episodes_a="",
            episodes_b="",
            quiet="".join(QUIET.format(n=n) for n in range(QUIET_DEVICES)),
        )
    )
    state_dir = tmp_path / "state"
    agent = DaemonProcess(config, tmp_path)
    try:
        agent.start()
        wait_until(lambda: (state_dir / "agent.sock").exists(), 30, "the agent's status socket")
        broker.stop()

        def evicting() -> bool:
            agent.check_alive()
            return int(live_status(state_dir)["outbox"]["evicted"]) >= 10

        wait_until(evicting, 40, "heartbeats evicted for room")
        full = live_status(state_dir)["outbox"]["size_bytes"]
        wait_until(lambda: int(live_status(state_dir)["outbox"]["evicted"]) >= 60, 40, "more evictions")
        rows = read_outbox(state_dir / "outbox.sqlite")  # the gateway checks once a second: a few checks
        assert agent.terminate() == 0, agent.log_tail()
    finally:
        agent.close()
    assert full > 0.5 * MAX_BYTES  # the whole outbox was past the warning level
    assert "outbox_filling" not in conditions(rows), sorted(conditions(rows))
    assert "outbox_filling" not in agent.log_path.read_text(errors="replace"), agent.log_tail()
