"""A sped-up simulator's timeline goes on forward across a restart (agent.simulation.resumed_timeline).

At `speed` 60 the simulator stamps its readings far ahead of the wall clock, and a restart began its
timeline again at the wall clock: the restored cooldowns of the episodes it had already played ended
in the new stream's future, and the replayed tachycardia and desaturation never alarmed, with no log
line (new-user review, M3).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon_session import session
from test_operator_errors import AgentRun
from uplink_probe import Subscriber
from waiting import wait_until

from agent.localbroker import LocalBroker
from agent.simulation.resumed_timeline import newest_instants

AGENT_CONFIG = """
[gateway]
id = "gw-sim"
site = "lab"
heartbeat_interval_s = 1
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:{port}"

[outbox]
path = "state/outbox.sqlite"

[[devices]]
id = "bed-1"
kind = "wearable"
transport = "simulator"
[devices.simulator]
seed = 5
speed = 60.0
episodes = [{{ condition = "tachycardia", start_s = 60, duration_s = 120 }}]

[[detectors]]
id = "hr-high"
type = "limit"
stream = "vitals"
channels = ["hr"]
params = {{ above = 120 }}

[[alarms]]
condition = "tachycardia"
detector = "hr-high"
min_duration_s = 2
"""


def test_a_restarted_fast_simulator_replays_its_episodes_with_their_alarms(
    make_broker: Callable[..., LocalBroker], tmp_path: Path
) -> None:
    broker = make_broker()
    central = Subscriber(broker, "edge/lab/gw-sim/alarm")
    config = tmp_path / "agent.toml"
    config.write_text(AGENT_CONFIG.format(port=broker.port))

    def phases() -> list[str]:
        return [e["phase"] for e in (m.json() for m in central.snapshot()) if e["condition"] == "tachycardia"]

    agent = AgentRun(config)
    try:
        wait_until(lambda: phases()[-1:] == ["end"], 30, "the first tachycardia's END")
        time.sleep(1.0)  # a minute of simulated time more: its cooldown is saved ahead of the wall clock
        assert agent.stop() == 0
        agent = AgentRun(config)  # within a second: the new timeline starts where the last one stopped
        wait_until(lambda: phases().count("start") == 2, 30, "the replayed tachycardia's START")
        assert agent.having("goes on") and "ahead of the wall clock" in agent.having("goes on")[0]
    finally:
        if agent.proc.poll() is None:
            assert agent.stop() == 0


def test_only_the_stream_instants_of_the_pipelines_books_count(tmp_path: Path) -> None:
    run = session(tmp_path)
    bed = run.device_refs[0].device_pseudonym
    row: dict[str, Any] = {"device": bed, "stream": "vitals", "onset": 100.0, "last_hop": 400.0}
    alarms = {
        "hr-high/tachycardia": {"condition": "tachycardia", "streams": [{**row, "cooldown_until": 900.0}]},
        run.device_lost.key: {"condition": "device_lost", "streams": [{**row, "last_hop": 5_000.0}]},
        "broken": {"condition": "x", "streams": [{"device": bed, "last_hop": "soon"}, None]},
    }
    assert newest_instants(alarms, skip={run.device_lost.key}) == {bed: 400.0}
    run.resume_timelines(alarms)
    assert run.timeline_starts == {"bed-4": 400.0}
    device = run.cfg.devices[0]  # a simulator (daemon_session.CONFIG)
    assert run._timeline_start(device) is None  # 400 s after 1970 is behind the wall clock: no change
    ahead = time.time() + 3_000.0
    run.resume_timelines({"hr-high/tachycardia": {"streams": [{**row, "last_hop": ahead}]}})
    assert run._timeline_start(device) == ahead
