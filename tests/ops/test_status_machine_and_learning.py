"""Why is it quiet? `edge-agent status` and the heartbeat tell a gated machine's state (`running_when`)
and a detector still learning its own baseline, live and from the last heartbeat: an engineer who sees no
alarms must tell "machine off" or "still learning" from "nothing wrong". Run on the daemon's session
assembly with a simulated pump, off for its first 10 minutes, through the real pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from daemon_session import session

from agent.config.schema import DeviceConfig, EpisodeConfig, RunningWhenConfig, SimulatorConfig
from agent.events import iso_time
from agent.session import _Session
from agent.simulation import simulate
from agent.status import LAST_HEARTBEAT, read_status, render

T0 = 1.8e9
OFF_S = 600  # the pump is off from the start for 10 min
SETTLE_S = 60
LEARN_S = 300  # window_pca's adapt_rows at 1 Hz
GATE = {"channel": "motor_current", "above": 1.0, "settle_s": SETTLE_S}


def config(gate: dict[str, Any] | None) -> dict[str, Any]:
    device: dict[str, Any] = {"id": "pump-1", "kind": "equipment", "transport": "simulator"}
    if gate is not None:
        device["running_when"] = gate
    return {
        "gateway": {"id": "gw", "site": "s"},
        "mqtt": {"url": "mqtt://127.0.0.1:1883"},
        "outbox": {"path": "outbox.sqlite"},
        "devices": [device],
        "detectors": [
            {
                "id": "machine-wear",
                "type": "window_pca",
                "stream": "machine",
                "channels": ["vibration_rms", "motor_current"],
                "params": {"window_s": 10, "hop_s": 1, "adapt_rows": LEARN_S},
            },
            {
                "id": "vibration-zone",
                "type": "limit",
                "stream": "machine",
                "channels": ["vibration_rms"],
                "params": {"above": 2.8},
            },
        ],
        "alarms": [
            {"condition": "equipment_anomaly", "detector": "machine-wear", "priority": "low"},
            {"condition": "vibration_high", "detector": "vibration-zone", "priority": "low"},
        ],
    }


class Pump:
    """The session and its pump's readings, fed up to a given second."""

    def __init__(self, tmp_path: Path, gate: dict[str, Any] | None = GATE) -> None:
        self.run: _Session = session(tmp_path, config(gate))
        device = DeviceConfig(
            "pump-1",
            "equipment",
            "simulator",
            simulator=SimulatorConfig(seed=21, episodes=(EpisodeConfig("stopped", 0, OFF_S),)),
            running_when=None if gate is None else RunningWhenConfig(**gate),
        )
        self.readings, _ = simulate(device, OFF_S + SETTLE_S + LEARN_S + 120, T0)
        self.fed = 0
        self.state_dir = tmp_path

    def feed_to(self, second: float) -> None:
        upto = [r for r in self.readings[self.fed :] if r.wall_time < T0 + second]
        self.fed += len(upto)
        self.run.pipeline.ingest(upto)

    def beat(self) -> dict[str, Any]:
        return self.run._heartbeat().to_payload()

    def from_file(self) -> str:
        """What `edge-agent status` shows from the last heartbeat when the agent does not answer."""
        (self.state_dir / LAST_HEARTBEAT).write_text(json.dumps(self.beat()))
        found = read_status(self.state_dir)
        assert found is not None and found.source == "last heartbeat"
        return render(found.source, found.status)


def only(mapping: dict[str, Any]) -> tuple[str, Any]:
    (item,) = mapping.items()
    return item


def test_a_gated_pump_off_settling_then_running_is_told_live_and_from_the_heartbeat(tmp_path: Path) -> None:
    pump = Pump(tmp_path)
    pump.feed_to(OFF_S - 100)
    stream, state = only(pump.beat()["running"])
    assert stream.startswith("d-") and stream.endswith("/machine")  # the pseudonym, never "pump-1"
    assert state == {"state": "off", "since": iso_time(T0)}  # a word and a time: not the current's value
    for text in (render("live", pump.run.snapshot()), pump.from_file()):
        assert f"  machine {stream}: off since {iso_time(T0)} (no verdict, nothing learnt)" in text

    pump.feed_to(OFF_S + 20)  # started 20 s ago: 40 s of its settling left
    state = pump.beat()["running"][stream]
    assert state["state"] == "settling" and 38 <= state["settle_left_s"] <= 41, state
    assert state["since"].startswith(iso_time(T0 + OFF_S)[:16])
    for text in (render("live", pump.run.snapshot()), pump.from_file()):
        assert f"  machine {stream}: settling since {state['since']}: started, judged again in" in text

    pump.feed_to(OFF_S + SETTLE_S + 30)
    assert pump.beat()["running"][stream] == {"state": "running", "since": state["since"]}
    for text in (render("live", pump.run.snapshot()), pump.from_file()):
        assert f"  machine {stream}: running since {state['since']} (judged)" in text


def test_a_learning_detector_shows_rising_progress_until_it_judges(tmp_path: Path) -> None:
    pump = Pump(tmp_path)
    pump.feed_to(OFF_S - 100)  # off: nothing learnt, the limit rule never learns
    stream, _ = only(pump.beat()["running"])
    assert pump.beat()["learning"] == {"machine-wear": {"of_s": LEARN_S, "learnt_s": {stream: 0}}}
    assert (
        f"  learning machine-wear on {stream}: 0 of {LEARN_S} s, no verdict from it until then (paused:"
        in pump.from_file()
    )

    learnt = []
    for second in (OFF_S + SETTLE_S + 60, OFF_S + SETTLE_S + 180):
        pump.feed_to(second)
        progress = pump.beat()["learning"]["machine-wear"]
        assert progress["of_s"] == LEARN_S
        learnt.append(progress["learnt_s"][stream])
        for text in (render("live", pump.run.snapshot()), pump.from_file()):
            assert f"  learning machine-wear on {stream}: {learnt[-1]} of {LEARN_S} s," in text
            assert "paused" not in text
    assert 0 < learnt[0] < learnt[1] < LEARN_S, learnt

    pump.feed_to(OFF_S + SETTLE_S + LEARN_S + 60)  # learnt: it judges, and the entry is gone
    beat = pump.beat()
    assert "learning" not in beat
    assert pump.run.snapshot()["learning"] == {}
    assert "learning" not in pump.from_file()


def test_no_gate_and_nothing_learning_adds_nothing_to_the_heartbeat(tmp_path: Path) -> None:
    pump = Pump(tmp_path, gate=None)
    pump.feed_to(LEARN_S + 60)  # the pump, off, is learnt as it is: ungated, it learns what comes
    beat = pump.beat()
    assert "running" not in beat and "learning" not in beat
    text = render("live", pump.run.snapshot())
    assert "machine " not in text and "learning" not in text
