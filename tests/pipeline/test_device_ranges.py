"""A device's configured channel spans (`[[devices]] ranges`): read and checked with the key named, the
quality gate's range for that device's channels only, and the span `context` quantises within."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.config.loader import parse_config
from agent.config.schema import AgentConfig
from agent.detectors.context import ContextDetector
from agent.errors import InvalidConfigError
from agent.pipeline import Pipeline
from agent.pipeline.quality import QualityGate
from agent.pipeline.wiring import check_wiring
from agent.readings import Quality, Reading

T0 = 1.8e9


def raw_config(ranges: Any = None, *, second: bool = False) -> dict[str, Any]:
    pump: dict[str, Any] = {"id": "pump-1", "kind": "equipment", "transport": "simulator"}
    if ranges is not None:
        pump["ranges"] = ranges
    devices = [pump] + ([{"id": "pump-2", "kind": "equipment", "transport": "simulator"}] if second else [])
    return {
        "gateway": {"id": "gw-1", "site": "lab"},
        "mqtt": {"url": "mqtt://127.0.0.1:1883"},
        "outbox": {"path": "outbox.sqlite"},
        "devices": devices,
        "detectors": [
            {
                "id": "ctx",
                "type": "context",
                "stream": "machine",
                "channels": ["vibration_rms"],
                "params": {"threshold": 0.7, "rest_s": 0},
            }
        ],
        "alarms": [{"condition": "vibration_context", "detector": "ctx", "min_duration_s": 0}],
    }


def config(tmp_path: Path, ranges: Any = None, *, second: bool = False) -> AgentConfig:
    return parse_config(raw_config(ranges, second=second), base_dir=tmp_path)


def problems(tmp_path: Path, ranges: Any) -> dict[str, str]:
    with pytest.raises(InvalidConfigError) as info:
        config(tmp_path, ranges)
    return {e.path: str(e) for e in info.value.errors}


def test_ranges_are_read_per_channel(tmp_path: Path) -> None:
    cfg = config(tmp_path, {"vibration_rms": [0, 50], "bearing_temp": [-20.5, 150]})
    assert cfg.devices[0].ranges == (("vibration_rms", (0.0, 50.0)), ("bearing_temp", (-20.5, 150.0)))
    assert config(tmp_path).devices[0].ranges == ()


def test_a_device_with_ranges_is_hashable_and_equal_loaded_twice(tmp_path: Path) -> None:
    """Pairs, as `units`: a frozen config that holds a dict cannot be hashed (a set of devices, a cache
    keyed by the device), and a reload must compare equal to the same file loaded before."""
    spans = {"vibration_rms": [0, 50], "bearing_temp": [-20.5, 150]}
    first, second = config(tmp_path, spans).devices[0], config(tmp_path, spans).devices[0]
    assert first == second and hash(first) == hash(second)
    assert len({first, second, config(tmp_path).devices[0]}) == 2
    assert config(tmp_path, {"vibration_rms": [0, 40]}).devices[0] != config(tmp_path, spans).devices[0]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ([50, 0], "low must be below high"),
        ([5, 5], "low must be below high"),
        ([0, float("inf")], "finite"),
        ([float("nan"), 1], "finite"),
        ([0], "expected [low, high]"),
        (["0", "50"], "expected [low, high]"),
        ([True, 5], "expected [low, high]"),
        (50, "expected [low, high]"),
    ],
)
def test_a_bad_span_is_refused_naming_its_key(tmp_path: Path, value: Any, says: str) -> None:
    found = problems(tmp_path, {"vibration_rms": value})
    assert list(found) == ["devices[0].ranges.vibration_rms"]
    assert says in found["devices[0].ranges.vibration_rms"]


def test_ranges_must_be_a_table(tmp_path: Path) -> None:
    assert "devices[0].ranges" in problems(tmp_path, [0, 50])


def test_a_span_of_a_channel_the_device_does_not_send_is_refused(tmp_path: Path) -> None:
    found = check_wiring(config(tmp_path, {"vibration_rmss": [0, 50]}))
    assert [p.path for p in found] == ["devices[0].ranges.vibration_rmss"]
    assert 'did you mean "vibration_rms"' in str(found[0])
    assert check_wiring(config(tmp_path, {"vibration_rms": [0, 50]})) == []


def reading(device: str, values: list[list[float]], channels: tuple[str, ...], at: float = T0) -> Reading:
    return Reading(f"{device}/machine", channels, np.array(values, dtype=float), at, at - T0, 1.0)


def test_the_gate_takes_a_devices_span_for_its_channels_only() -> None:
    channels = ("vibration_rms", "motor_current")
    gate = QualityGate(channels, device_ranges={"pump-1": {"vibration_rms": (0.0, 50.0)}})
    mine = gate.apply(reading("pump-1", [[60.0, 10.0], [49.0, 10.0]], channels))
    other = gate.apply(reading("pump-2", [[60.0, 10.0], [49.0, 10.0]], channels))
    assert np.isnan(mine.values[0, 0]) and mine.values[0, 1] == 10.0 and mine.values[1, 0] == 49.0
    assert mine.quality & Quality.OUT_OF_RANGE and mine.bad_samples == 1
    assert other.values.tolist() == [[60.0, 10.0], [49.0, 10.0]]  # the built-in 0..2000 mm/s
    # a span may also reach beyond the built-in range: it replaces it
    wide = QualityGate(channels, device_ranges={"pump-1": {"motor_current": (-5.0, 10.0)}})
    assert wide.apply(reading("pump-1", [[1.0, -2.0]], channels)).values.tolist() == [[1.0, -2.0]]
    assert np.isnan(wide.apply(reading("pump-2", [[1.0, -2.0]], channels)).values[0, 1])


def test_the_batched_gate_agrees_with_the_one_by_one_gate() -> None:
    channels = ("vibration_rms",)
    gate = QualityGate(channels, device_ranges={"pump-1": {"vibration_rms": (0.0, 50.0)}})
    values_in = [10, 60, 60, 70, 5, 3000]
    batch = [reading(f"pump-{1 + k % 2}", [[float(v)]], channels) for k, v in enumerate(values_in)]
    values, quality, bad = gate.screen_many(batch)
    for i, r in enumerate(batch):
        one = gate.screen(r)
        assert np.array_equal(np.asarray(values[i]), one[0], equal_nan=True)
        assert quality[i] == int(one[1]) and bad[i] == one[2]
    assert list(bad) == [0, 0, 1, 0, 0, 1]


def test_the_pipeline_gates_and_quantises_with_the_devices_span(tmp_path: Path) -> None:
    pipeline = Pipeline(config(tmp_path, {"vibration_rms": [0, 7]}, second=True), lambda d: f"p-{d}")
    detector = pipeline.detectors[0]
    assert isinstance(detector, ContextDetector)
    values = np.tile([0.0, 2.0, 5.0, 7.0, 5.0, 2.0], 10)
    for k, v in enumerate(values):
        pipeline.ingest([reading("pump-1", [[v]], ("vibration_rms",), T0 + k)])
    assert pipeline.streams["machine"].gated_samples == 0
    stream = detector._streams[(0, 0)]
    assert stream.span and (stream.low, stream.step) == (0.0, 1.0)  # CAD OSE's 7 steps over [0, 7]
    assert stream.memory is not None and stream.memory.size > 0  # learning from the first sample
    pipeline.ingest([reading("pump-1", [[8.0]], ("vibration_rms",), T0 + 60)])
    assert pipeline.streams["machine"].gated_samples == 1  # beyond the device's span: a fault
    pipeline.ingest([reading("pump-2", [[8.0]], ("vibration_rms",), T0 + 61)])
    assert pipeline.streams["machine"].gated_samples == 1  # the other pump keeps the built-in range
    assert not detector._streams[(1, 0)].span  # and has no span: it learns its range in a warm-up
