"""The operating-state gate (`running_when`): a machine switched off is not an anomaly.

Equipment review F4: switching a pump off raised equipment_anomaly (window_pca score 598 against a threshold
of 2.6) and bearing_temp_anomaly (a pump cooling down), and a pump off during its learning hour learnt a
threshold of 5.5e-29 and alarmed on every hop once it ran. These run the simulator's pump, with its
"stopped" episodes, through the real Pipeline with examples/pump-room.toml's rules (their learning shortened
and the example's gate.
"""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig, parse_config
from agent.config.schema import DeviceConfig, EpisodeConfig, SimulatorConfig
from agent.errors import ConfigError, InvalidConfigError
from agent.events import AlarmEvent, AlarmKind, Phase, iso_time
from agent.pipeline import Pipeline
from agent.pipeline.wiring import check_wiring
from agent.simulation import simulate

T0 = 1.8e9
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pump-room.toml"
LEARN = 3600  # rows of each window_pca rule's adaptation, as the example has them
GATE = {"channel": "motor_current", "above": 1.0, "settle_s": 60}


def config(tmp_path: Path, gate: dict[str, Any] | None) -> AgentConfig:
    """examples/pump-room.toml's rules on one simulated pump, with `gate` as its running_when."""
    raw = tomllib.loads(EXAMPLE.read_text())
    device: dict[str, Any] = {"id": "pump-1", "kind": "equipment", "transport": "simulator"}
    if gate is not None:
        device["running_when"] = gate
    raw["devices"] = [device]
    assert raw["detectors"][1]["params"]["adapt_rows"] == LEARN
    return parse_config(raw, base_dir=tmp_path)


def run(
    cfg: AgentConfig, seconds: float, *episodes: EpisodeConfig, seed: int = 21
) -> tuple[Pipeline, list[AlarmEvent]]:
    device = DeviceConfig(
        "pump-1",
        "equipment",
        "simulator",
        simulator=SimulatorConfig(seed=seed, episodes=episodes),
        running_when=cfg.devices[0].running_when,
    )
    readings, _ = simulate(device, seconds, T0)
    pipeline = Pipeline(cfg, lambda d: f"p-{d}")
    events = pipeline.ingest(readings)
    return pipeline, [e for e in events if e.kind is not AlarmKind.TECHNICAL]


def starts(events: list[AlarmEvent]) -> list[tuple[str, float]]:
    return [(e.condition, e.detection_time - T0) for e in events if e.phase is Phase.START]


def test_a_pump_switched_off_after_learning_raises_nothing(tmp_path: Path) -> None:
    off = EpisodeConfig("stopped", 4800, 1800)  # learnt in the first hour, normal 20 min, off 30 min, on
    _, ungated = run(config(tmp_path, None), 7800, off)
    assert {c for c, _ in starts(ungated)} >= {"equipment_anomaly"}  # the review's false alarm, reproduced
    # (a recurrence within the cooldown is alarmed since 2026-12-01: bearing_temp again 60 s after the
    # restart at 6600, which the cooldown used to hold back)
    assert all(4800 <= t <= 6600 + 60 for _, t in starts(ungated)), starts(ungated)

    pipeline, gated = run(config(tmp_path, GATE), 7800, off)
    assert starts(gated) == []
    status = pipeline.running_status()
    assert status == {"p-pump-1/machine": {"state": "running", "since": status["p-pump-1/machine"]["since"]}}
    assert status["p-pump-1/machine"]["since"].startswith(iso_time(T0 + 6600)[:19])  # T0 + 6600 s: restarted


def test_a_pump_off_during_learning_learns_on_running_data_once_it_runs(tmp_path: Path) -> None:
    off = EpisodeConfig("stopped", 0, 1800)  # off from the start for 30 min, then running for 90 min
    before, ungated = run(config(tmp_path, None), 7200, off)
    assert starts(ungated)  # it learnt "off" as normal: the running pump alarms

    pipeline, gated = run(config(tmp_path, GATE), 7200, off)
    assert starts(gated) == []
    for detector in ("machine-wear", "machine-temperature"):  # motor_current is each one's second channel
        learnt = pipeline.detector_state()[detector]["streams"]["0"]
        mixed = before.detector_state()[detector]["streams"]["0"]
        # the running pump's mean current, not that of an hour half off (about twice the mixed one)
        assert learnt["mean"][1] > 1.6 * mixed["mean"][1], (learnt["mean"], mixed["mean"])
        assert learnt["threshold"] > 0
    # learning waited: it needed LEARN running rows after the start and its settling, not wall time
    halfway = Pipeline(config(tmp_path, GATE), lambda d: f"p-{d}")
    device = DeviceConfig(
        "pump-1", "equipment", "simulator", simulator=SimulatorConfig(seed=21, episodes=(off,))
    )
    readings, _ = simulate(device, 1800 + 60 + LEARN - 60, T0)
    halfway.ingest(readings)
    assert halfway.detector_state()["machine-wear"]["streams"] == {}


def test_a_fault_while_running_is_still_alarmed_after_a_stop(tmp_path: Path) -> None:
    episodes = (EpisodeConfig("stopped", 3900, 1200), EpisodeConfig("bearing_wear", 5400, 1800))
    _, gated = run(config(tmp_path, GATE), 7200, *episodes)
    wear = [t for c, t in starts(gated) if c == "equipment_anomaly"]
    assert wear and 5400 <= wear[0] <= 7200, starts(gated)
    assert all(t >= 5400 for _, t in starts(gated)), starts(gated)  # nothing at the stop


def test_an_alarm_open_when_the_pump_stops_is_held_not_ended(tmp_path: Path) -> None:
    """A wear alarm started, then the pump is switched off before it cleared: no END while it is off (an END
    would tell a recovery nobody saw); it is judged again once the pump runs."""
    episodes = (EpisodeConfig("bearing_wear", 3900, 1500), EpisodeConfig("stopped", 5000, 1200))
    _, gated = run(config(tmp_path, GATE), 6600, *episodes)
    started = [e for e in gated if e.phase is Phase.START and e.condition == "equipment_anomaly"]
    assert started and started[0].detection_time - T0 < 5000, starts(gated)
    ended = [e.end_time - T0 for e in gated if e.phase is Phase.END and e.end_time is not None]
    assert all(not 5000 <= t < 6200 for t in ended), ended


def test_the_gate_logs_each_stop_and_start_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent.pipeline.running")
    run(config(tmp_path, GATE), 2400, EpisodeConfig("stopped", 700, 600))
    lines = [r.getMessage() for r in caplog.records if r.name == "agent.pipeline.running"]
    assert len(lines) == 2, lines
    assert "pump-1/machine: machine stopped (motor_current" in lines[0]
    assert "judge it again after 60 s of settling" in lines[1]


def test_a_gate_on_a_channel_the_device_does_not_send_is_refused(tmp_path: Path) -> None:
    cfg = config(tmp_path, {"channel": "motor_curent", "above": 1.0})
    problems = check_wiring(cfg)
    assert [p.path for p in problems] == ["devices[0].running_when.channel"]
    assert 'did you mean "motor_current"' in str(problems[0])


@pytest.mark.parametrize(
    ("gate", "key"),
    [
        ({"channel": "motor_current", "above": 1.0, "settle_s": -5}, "settle_s"),
        ({"channel": "motor_current"}, "above"),
        ({"channel": "motor_current", "above": 1.0, "settle": 60}, "settle"),
    ],
)
def test_bad_gates_are_refused_naming_the_key(tmp_path: Path, gate: dict[str, Any], key: str) -> None:
    with pytest.raises((ConfigError, InvalidConfigError)) as info:
        config(tmp_path, gate)
    assert f"devices[0].running_when.{key}" in str(info.value)
