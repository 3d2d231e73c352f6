"""Odd readings through a pipeline running each detector type: none may raise or warn.

Device frames of many sizes, gaps, a clock that goes back or repeats, missing and out-of-range values,
infinities, device quality flags. A turn that raises takes the whole gateway down (systemd restarts it,
and the same data crash it again), so this is a contract of the pipeline, not of one detector.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from test_detector_contract import CASES  # the contract suite's config for every type

from agent.config import parse_config
from agent.pipeline import Pipeline
from agent.readings import Quality, Reading

FRAME_SIZES = (1, 1, 2, 3, 7, 25, 73)
PERIOD_S = 0.5


def pipeline_for(type_: str, tmp_path: Path) -> tuple[Pipeline, tuple[str, ...]]:
    channels, params, _ = CASES[type_]
    raw = {
        "gateway": {"id": "gw", "site": "s"},
        "mqtt": {"url": "mqtt://127.0.0.1:1883"},
        "outbox": {"path": "outbox.sqlite"},
        "devices": [{"id": "dev", "kind": "equipment", "transport": "simulator"}],
        "detectors": [
            {
                "id": "d",
                "type": type_,
                "stream": "s",
                "channels": list(channels),
                "params": {**params, "hop_s": 1.0},
            }
        ],
        "alarms": [{"condition": "c", "detector": "d", "min_duration_s": 1, "clear_after_s": 2}],
    }
    return Pipeline(parse_config(raw, base_dir=tmp_path), lambda d, prefix="d": f"{prefix}-{d}"), channels


def odd_readings(channels: tuple[str, ...], seed: int, count: int = 150) -> list[Reading]:
    rng = np.random.default_rng(seed)
    t = 1.8e9
    out = []
    for _ in range(count):
        n = int(rng.choice(FRAME_SIZES))
        values = 70 + rng.normal(0, 1, (n, len(channels)))
        kind = rng.random()
        if kind < 0.05:
            values[:] = np.nan
        elif kind < 0.1:
            values[rng.random(values.shape) < 0.5] = np.nan
        elif kind < 0.12:
            values[:] = 1e12
        elif kind < 0.15:
            values[0, 0] = np.inf if kind < 0.135 else -np.inf
        step = n * PERIOD_S
        kind = rng.random()
        if kind < 0.05:
            step += rng.uniform(5, 500)  # a dropout
        elif kind < 0.08:
            step = -rng.uniform(0, 10)  # the device clock goes back
        elif kind < 0.1:
            step = 0.0  # the same time again
        t += step
        flags = Quality(int(rng.choice([1, 2, 4, 8]))) if rng.random() < 0.1 else Quality.OK
        out.append(Reading("dev/s", channels, values, t, t, PERIOD_S if n > 1 else 0.0, flags))
    return out


@pytest.mark.parametrize("type_", sorted(CASES))
def test_odd_readings_never_raise_or_warn(type_: str, tmp_path: Path) -> None:
    pipeline, channels = pipeline_for(type_, tmp_path)
    readings = odd_readings(channels, seed=sorted(CASES).index(type_))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for reading in readings:
            pipeline.ingest([reading])
    stream = pipeline.streams["s"]
    assert stream.samples == sum(r.values.shape[0] for r in readings)
    assert stream.gated_samples > 0  # the flags and the infinities were seen and gated
