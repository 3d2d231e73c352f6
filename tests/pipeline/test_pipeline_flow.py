"""The pipeline from readings to alarm events, in process, on simulated devices."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from agent.config import AgentConfig, parse_config
from agent.config.schema import EpisodeConfig, SimulatorConfig
from agent.events import AlarmKind, Phase
from agent.pipeline import Pipeline
from agent.readings import Quality, Reading
from agent.simulation import simulate

CONFIG = {
    "gateway": {"id": "gw", "site": "s"},
    "mqtt": {"url": "mqtt://127.0.0.1:1883"},
    "outbox": {"path": "outbox.sqlite"},
    "devices": [
        {"id": f"wearable-{i}", "kind": "wearable", "transport": "simulator", "simulator": {"seed": i}}
        for i in range(3)
    ],
    "detectors": [
        {"id": "hr-high", "type": "limit", "stream": "vitals", "channels": ["hr"], "params": {"above": 120}}
    ],
    "alarms": [
        {
            "condition": "tachycardia",
            "detector": "hr-high",
            "min_duration_s": 10,
            "clear_after_s": 10,
            "hysteresis": 5,
            "unit": "bpm",
        }
    ],
}


def config(tmp_path: Path, episodes: dict[int, tuple[EpisodeConfig, ...]]) -> AgentConfig:
    cfg = parse_config(CONFIG, base_dir=tmp_path)
    devices = tuple(
        dataclasses.replace(d, simulator=SimulatorConfig(seed=i, episodes=episodes.get(i, ())))
        for i, d in enumerate(cfg.devices)
    )
    return dataclasses.replace(cfg, devices=devices)


def interleaved(cfg: AgentConfig, duration_s: float) -> list[Reading]:
    """All devices' readings merged in time order, as the daemon's queue would see them."""
    readings = [r for d in cfg.devices for r in simulate(d, duration_s, 1_000_000.0)[0]]
    return sorted(readings, key=lambda r: r.wall_time)


def test_only_the_device_with_the_episode_alarms_once(tmp_path: Path) -> None:
    cfg = config(tmp_path, {1: (EpisodeConfig("tachycardia", 60, 90),)})
    pipeline = Pipeline(cfg, lambda device, prefix="d": f"{prefix}-{device}")
    events = pipeline.ingest(interleaved(cfg, 240))
    physiological = [e for e in events if e.kind is AlarmKind.PHYSIOLOGICAL]
    assert [e.phase for e in physiological] == [Phase.START, Phase.END]
    assert {e.device for e in physiological} == {"d-wearable-1"}
    start, end = physiological
    assert 1_000_060 <= start.onset_time <= 1_000_080  # the simulator ramps up over ~10-20 s
    assert end.end_time is not None and 1_000_140 <= end.end_time <= 1_000_170


def test_batching_of_the_input_does_not_change_the_alarms(tmp_path: Path) -> None:
    cfg = config(
        tmp_path, {0: (EpisodeConfig("tachycardia", 50, 60),), 2: (EpisodeConfig("tachycardia", 90, 40),)}
    )
    readings = interleaved(cfg, 200)
    whole = Pipeline(cfg, str).ingest(readings)
    one_by_one_pipeline = Pipeline(cfg, str)
    one_by_one = [e for r in readings for e in one_by_one_pipeline.ingest([r])]

    def key(events: list) -> list[tuple[str, str, float]]:  # type: ignore[type-arg]
        return [(e.device, e.phase.value, e.onset_time) for e in events]

    assert key(whole) == key(one_by_one)
    assert len([e for e in whole if e.phase is Phase.START]) == 2


def test_contact_loss_raises_a_technical_alarm_not_a_physiological_one(tmp_path: Path) -> None:
    cfg = config(tmp_path, {0: (EpisodeConfig("contact_loss", 30, 40),)})
    events = Pipeline(cfg, str).ingest(interleaved(cfg, 120))
    assert [(e.condition, e.phase) for e in events] == [
        ("sensor_off", Phase.START),
        ("sensor_off", Phase.END),
    ]
    assert all(e.kind is AlarmKind.TECHNICAL for e in events)


def test_an_open_quality_alarm_survives_a_restart_and_ends_under_its_id(tmp_path: Path) -> None:
    cfg = config(tmp_path, {0: (EpisodeConfig("contact_loss", 30, 40),)})
    readings = interleaved(cfg, 120)
    # After the contact came back, before the alarm clears: only OK readings follow the restart.
    split = next(i for i, r in enumerate(readings) if r.wall_time >= 1_000_073)
    before = Pipeline(cfg, str)
    (start,) = before.ingest(readings[:split])
    saved = json.loads(json.dumps(before.alarm_state()))  # as pipeline.json holds it
    after = Pipeline(cfg, str)
    after.load_state({}, saved)
    assert after.active_alarms() == 1
    (end,) = after.ingest(readings[split:])
    assert (start.condition, start.phase, end.phase) == ("sensor_off", Phase.START, Phase.END)
    assert end.id == start.id and end.seq == start.seq + 1


def test_flagged_tachycardia_values_cannot_raise_the_physiological_alarm(tmp_path: Path) -> None:
    cfg = config(tmp_path, {})
    pipeline = Pipeline(cfg, str)
    flagged = [
        Reading(
            "wearable-0/vitals",
            ("hr", "spo2", "skin_temp"),
            np.array([[150.0, 97, 34]]),
            t,
            t,
            0.0,
            Quality.MOTION,
        )
        for t in np.arange(0.0, 60.0)
    ]
    events = pipeline.ingest(flagged)
    assert all(e.kind is AlarmKind.TECHNICAL for e in events)
    assert [e.condition for e in events] == ["signal_poor"]


def test_unwatched_streams_are_counted_not_processed(tmp_path: Path) -> None:
    cfg = config(tmp_path, {})
    pipeline = Pipeline(cfg, str)
    rr = Reading("wearable-0/rr", ("rr",), np.array([[0.8]]), 0.0, 0.0)
    assert pipeline.ingest([rr]) == [] and pipeline.unwatched_samples == 1


def test_a_spike_inside_a_multi_sample_block_is_seen(tmp_path: Path) -> None:
    """25-sample ECG blocks against a 1-sample hop: every sample of the block is new and scored."""
    raw = {
        **CONFIG,
        "detectors": [
            {
                "id": "ecg-high",
                "type": "limit",
                "stream": "ecg",
                "channels": ["ecg"],
                "rate_hz": 250,
                "params": {"above": 5.0, "hop_s": 0.004},
            }
        ],
        "alarms": [
            {"condition": "ecg_saturated", "detector": "ecg-high", "min_duration_s": 0, "clear_after_s": 0}
        ],
    }
    pipeline = Pipeline(parse_config(raw, base_dir=tmp_path), str)
    blocks = []
    for k in range(8):
        values = np.zeros((25, 1))
        if k == 5:
            values[10, 0] = 8.0  # one sample, mid-block
        blocks.append(Reading("wearable-0/ecg", ("ecg",), values, k * 0.1, k * 0.1, 0.004))
    events = pipeline.ingest(blocks)
    assert [(e.condition, e.phase) for e in events][:1] == [("ecg_saturated", Phase.START)]
    assert events[0].value == 8.0


@pytest.mark.parametrize("rows_per_reading", [1, 5], ids=["row-by-row", "frames-of-5"])
def test_the_shipped_pump_autoencoder_runs_in_the_pipeline(tmp_path: Path, rows_per_reading: int) -> None:
    # Frames of 5 rows against the model's 1-row hop: each frame's windows are all scored.
    import json

    model_dir = Path(__file__).resolve().parents[2] / "models" / "pump"
    card = json.loads((model_dir / "card.json").read_text())
    channels = card["channels"]
    mean, scale = np.array(card["normalisation"]["mean"]), np.array(card["normalisation"]["scale"])
    raw = {
        **CONFIG,
        "devices": [{"id": "pump-1", "kind": "equipment", "transport": "simulator"}],
        "detectors": [
            {
                "id": "pump-ae",
                "type": "autoencoder",
                "stream": "pump",
                "channels": channels,
                "params": {"model": str(model_dir), "precision": "int8"},
            }
        ],
        "alarms": [
            {"condition": "pump_anomaly", "detector": "pump-ae", "min_duration_s": 5, "clear_after_s": 10}
        ],
    }
    pipeline = Pipeline(parse_config(raw, base_dir=tmp_path), lambda device, prefix="d": f"{prefix}-{device}")
    rng = np.random.default_rng(5)
    hot = channels.index("Temperature")
    rows = mean + rng.normal(0.0, 0.3, (300, len(channels))) * scale
    rows[150:200, hot] += 12 * scale[hot]  # the motor overheats for 50 s
    readings = [
        Reading("pump-1/pump", tuple(channels), rows[t : t + rows_per_reading], float(t), float(t), 1.0)
        for t in range(0, 300, rows_per_reading)
    ]
    events = pipeline.ingest(readings)
    assert [(e.condition, e.phase) for e in events] == [
        ("pump_anomaly", Phase.START),
        ("pump_anomaly", Phase.END),
    ]
    start = events[0]
    assert 150 <= start.onset_time <= 160 and start.explanation.top_channels[0][0] == "Temperature"
    shas = {a["sha256"][:12] for key, a in card["artifacts"].items() if key.endswith("int8")}
    assert start.model_hash in shas  # the int8 artifact of whichever runtime is installed
    assert list(pipeline.models()) == ["pump"]
