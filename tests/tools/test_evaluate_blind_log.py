"""The evaluation tools build a fresh pipeline per case, and each one logged channel_missing's ERROR anew:
72 lines in `vt_runs --part cpsc` for the beats stage's channels that come late (qrs_shape once its
templates are made), by design of the replay. Now the stage's channels are known (`replay.stage_device`,
as the daemon knows them for a device with `[devices.beats]`), and a detector reading a channel the data
never has, a real mistake of the config, is said once however many cases the run has."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest

from agent.config.loader import load_config
from agent.readings import Reading
from tools.evaluate import replay, vt_runs
from tools.evaluate.datasets import Series

REPO = Path(__file__).resolve().parents[2]
CARDIAC = REPO / "examples" / "cardiac-monitoring.toml"


def stage_readings(stream: str) -> list[Reading]:
    """What the stage gives before its templates are made: rr, hr and qrs_width, no qrs_shape yet."""
    return [
        Reading.single(f"eval/{stream}", {"rr": 0.8, "hr": 75.0, "qrs_width": 0.09}, 1_000.0 + k, 1.0 * k)
        for k in range(20)
    ]


def blind_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "agent.pipeline.blind"]


def test_the_beats_stages_late_channels_are_not_told_per_case(caplog: pytest.LogCaptureFixture) -> None:
    config = vt_runs.rr_config(CARDIAC)
    stream = config.detectors[0].stream
    with caplog.at_level(logging.ERROR):
        for _case in range(3):
            replay.timed_episodes(config, ((r, r.wall_time) for r in stage_readings(stream)), {"x"})
    assert blind_lines(caplog) == []


def test_a_channel_the_stage_never_gives_is_told_once(caplog: pytest.LogCaptureFixture) -> None:
    config = vt_runs.rr_config(CARDIAC)
    typo = ("rr", "qrs_shap")
    detectors = tuple(
        dataclasses.replace(d, channels=typo) if d.type == "pvc" else d for d in config.detectors
    )
    config = dataclasses.replace(config, detectors=detectors)
    stream = config.detectors[0].stream
    with caplog.at_level(logging.ERROR):
        for _case in range(3):
            replay.timed_episodes(config, ((r, r.wall_time) for r in stage_readings(stream)), {"x"})
    [line] = blind_lines(caplog)
    assert 'detector pvc reads channel "qrs_shap" of stream' in line


def test_a_series_without_the_detectors_channel_is_told_once_over_many_series(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = load_config(REPO / "tools" / "evaluate" / "configs" / "nab.toml")
    detectors = tuple(dataclasses.replace(d, channels=("valeu",)) for d in config.detectors)
    config = dataclasses.replace(config, detectors=detectors)
    times = 1_000.0 + 300.0 * np.arange(50)
    with caplog.at_level(logging.ERROR):
        for k in range(3):
            series = Series(f"s{k}", "g", ("value",), times, np.ones((50, 1)), np.zeros(50, dtype=bool))
            replay.replay(config, series)
    lines = blind_lines(caplog)
    assert len(lines) == len({d.id for d in detectors}) and all('"valeu"' in line for line in lines)
