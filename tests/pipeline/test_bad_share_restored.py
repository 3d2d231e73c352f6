"""The signal-quality alarms' intermittent-rule trackers survive a restart (review "ble", left over).

Contact lost 5 s of every 10 starts `sensor_off` once the stream was bad for 45 % of the last minute
(agent.pipeline.bad_share). The trackers were not saved: an agent restarted during the pattern began the
minute empty and the START came 40 s later than without the restart. Now they are saved with the
pipeline's state (`pipeline.json`, `bad_share.SAVED_KEY`) and taken back when the break is shorter than
the window, for the configured devices and watched streams; the real daemon saves and restores them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.config import load_config, parse_config
from agent.daemon import Agent
from agent.pipeline import Pipeline
from agent.pipeline.bad_share import SAVED_KEY
from agent.privacy import Pseudonymizer
from agent.readings import Quality, Reading, stream_id
from agent.state_saver import StateSnapshot

T0 = 1.8e9
CONFIG: dict[str, Any] = {
    "gateway": {"id": "gw", "site": "s"},
    "mqtt": {"url": "mqtt://127.0.0.1:1883"},
    "outbox": {"path": "outbox.sqlite"},
    "devices": [{"id": "bed-4", "kind": "wearable", "transport": "simulator"}],
    "detectors": [
        {"id": "hr-high", "type": "limit", "stream": "vitals", "channels": ["hr"], "params": {"above": 150}}
    ],
    "alarms": [{"condition": "tachycardia", "detector": "hr-high"}],
}


def pipeline(tmp_path: Path, config: dict[str, Any] = CONFIG) -> Pipeline:
    return Pipeline(parse_config(config, base_dir=tmp_path), Pseudonymizer(b"k" * 32))


def play(run: Pipeline, seconds: range) -> list[tuple[int, str, str]]:
    """One vitals reading a second, contact lost 5 s of every 10: (second, condition, phase) of the events."""
    events = []
    for t in seconds:
        bad = t % 10 < 5
        reading = Reading(
            stream_id("bed-4", "vitals"),
            ("hr",),
            np.array([[72.0]]),
            T0 + t,
            1_000.0 + t,
            1.0,
            Quality.NO_CONTACT if bad else Quality.OK,
        )
        events += [(t, e.condition, e.phase.value) for e in run.ingest([reading])]
    return events


def saved(run: Pipeline, at: float) -> dict[str, Any]:
    """`pipeline.json`'s content as the saver writes it (through JSON), taken at wall time `at`."""
    snapshot = StateSnapshot({}, run.alarm_snapshot(), 0, 0, at, {}, run.bad_shares_copied())
    return dict(json.loads(json.dumps(snapshot.state())))


def restarted(tmp_path: Path, state: dict[str, Any], now: float, config: dict[str, Any] = CONFIG) -> Pipeline:
    """A new pipeline restored from `state` at wall time `now`, as the daemon's start does."""
    run = pipeline(tmp_path, config)
    run.load_state({}, state["alarms"])
    run.load_bad_shares(state.get(SAVED_KEY), now)
    return run


def test_a_restart_during_intermittent_contact_goes_on_with_the_minute(tmp_path: Path) -> None:
    assert play(pipeline(tmp_path), range(120)) == [(60, "sensor_off", "start")]  # no restart
    first = pipeline(tmp_path)
    assert play(first, range(33)) == []
    state = saved(first, T0 + 33)  # the stop's save; the agent is back 3 s later
    assert play(restarted(tmp_path, state, T0 + 36), range(36, 120)) == [(60, "sensor_off", "start")]
    # Before: the minute began empty, and the START came 40 s late.
    state.pop(SAVED_KEY)
    assert play(restarted(tmp_path, state, T0 + 36), range(36, 120)) == [(100, "sensor_off", "start")]


def test_trackers_are_not_taken_back_after_a_minute_or_for_what_is_no_longer_configured(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = pipeline(tmp_path)
    play(first, range(33))
    state = saved(first, T0 + 33)
    with caplog.at_level(logging.INFO, logger="agent.pipeline.pipeline"):
        late = restarted(tmp_path, state, T0 + 33 + 60)
    assert late.bad_shares_copied() == []
    assert "saved 60 s before this start (kept under 60 s)" in caplog.text
    other_device = {**CONFIG, "devices": [{"id": "bed-5", "kind": "wearable", "transport": "simulator"}]}
    assert restarted(tmp_path, state, T0 + 36, other_device).bad_shares_copied() == []
    # A damaged row costs itself: the others are taken back.
    rows = state[SAVED_KEY]["rows"]
    state[SAVED_KEY]["rows"] = [["sensor_off", rows[0][1], "vitals", None, "x", []], *rows, 7]
    with caplog.at_level(logging.INFO, logger="agent.pipeline.pipeline"):
        kept = restarted(tmp_path, state, T0 + 36)
    assert kept.bad_shares_copied() == first.bad_shares_copied()
    assert "2 saved intermittent-quality tracker(s) do not parse" in caplog.text


DAEMON = """
[gateway]
id = "gw-share"
site = "lab"
state_dir = "state"
heartbeat_interval_s = 0.5

[mqtt]
url = "mqtt://127.0.0.1:{port}"

[outbox]
path = "state/outbox.sqlite"

[[devices]]
id = "bed-4"
kind = "wearable"
transport = "simulator"
[devices.simulator]
seed = 11
speed = 10.0
episodes = [{{ condition = "contact_loss", start_s = 0, duration_s = 600 }}]

[[detectors]]
id = "hr-high"
type = "limit"
stream = "vitals"
channels = ["hr"]
params = {{ above = 150 }}
"""


def test_the_daemon_saves_the_trackers_and_its_next_start_takes_them_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The real daemon (a simulated wearable without contact, no broker): its stop saves the trackers in
    pipeline.json, and the next start on the same state folder goes on with them."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])  # closed again: nobody listens, the uplink keeps trying
    path = tmp_path / "agent.toml"
    path.write_text(DAEMON.format(port=port))

    def run_agent() -> None:
        daemon = Agent(load_config(path))

        async def main() -> None:
            asyncio.get_running_loop().call_later(2.0, daemon.stopping.set)
            await daemon.run()

        asyncio.run(main())

    run_agent()
    state = json.loads((tmp_path / "state" / "pipeline.json").read_text())
    rows = state[SAVED_KEY]["rows"]
    assert [row[0] for row in rows] == ["sensor_off"] and rows[0][2] == "vitals"
    with caplog.at_level(logging.INFO, logger="agent.pipeline.pipeline"):
        run_agent()
    assert (
        "1 intermittent-quality tracker(s) (signal-quality alarms) go on from the state saved" in caplog.text
    )
