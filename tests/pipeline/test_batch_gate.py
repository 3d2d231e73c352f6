"""The batched quality gate (`screen_many`) gives exactly what the per-reading gate (`screen`) gives."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from agent.pipeline.quality import QualityGate, stacked_values
from agent.readings import Quality, Reading


def _readings(rng: np.random.Generator, channels: tuple[str, ...], n: int, count: int) -> list[Reading]:
    out = []
    for i in range(count):
        values = rng.normal(80.0, 60.0, size=(n, len(channels)))  # hr/spo2 often outside their ranges
        quality = Quality.NO_CONTACT if rng.random() < 0.2 else Quality.OK
        out.append(Reading(f"d{i}/vitals", channels, values, 1e6 + i, 0.0, 0.01 if n > 1 else 0.0, quality))
    return out


@pytest.mark.parametrize(
    ("channels", "n"),
    [
        (("hr", "spo2"), 1),  # the gate's own channels
        (("spo2", "skin_temp", "hr"), 1),  # a superset in another order
        (("hr",), 3),  # a channel missing: NaN
        (("hr", "spo2"), 5),
    ],
)
def test_screen_many_equals_screen(channels: tuple[str, ...], n: int) -> None:
    gate = QualityGate(("hr", "spo2"))
    readings = _readings(np.random.default_rng(len(channels) * 10 + n), channels, n, 40)
    values, quality, bad = gate.screen_many(readings)
    assert any(q & Quality.OUT_OF_RANGE for q in quality)  # the case under test happens
    for i, reading in enumerate(readings):
        one_values, one_quality, one_bad = gate.screen(reading)
        np.testing.assert_array_equal(values[i], one_values)
        assert quality[i] == int(one_quality)
        assert bad[i] == one_bad


def test_mixed_shapes_fall_back_to_one_by_one() -> None:
    gate = QualityGate(("hr", "spo2"))
    rng = np.random.default_rng(1)
    readings = _readings(rng, ("hr", "spo2"), 1, 5) + _readings(rng, ("hr", "spo2"), 2, 5)
    values, quality, bad = gate.screen_many(readings)
    for i, reading in enumerate(readings):
        one_values, one_quality, one_bad = gate.screen(reading)
        np.testing.assert_array_equal(values[i], one_values)
        assert (quality[i], bad[i]) == (int(one_quality), one_bad)


def test_lengths_that_only_add_up_fall_back() -> None:
    """A 0-sample and a 2-sample reading among single samples: as many rows as readings, but not one
    each. Readings with equal channel tuples that are distinct objects are still checked at once."""
    gate = QualityGate(("hr", "spo2"))
    rng = np.random.default_rng(2)
    singles = _readings(rng, ("hr", "spo2"), 1, 6)
    empty = Reading("e/vitals", ("hr", "spo2"), np.zeros((0, 2)), 1e6, 0.0, 0.0)
    double = _readings(rng, ("hr", "spo2"), 2, 1)
    copies = [dataclasses.replace(r, channels=(*r.channels,)) for r in singles]
    assert copies[0].channels is not copies[1].channels
    for readings, at_once in (
        ([*singles[:3], empty, *double, *singles[3:]], False),
        (copies, True),
        ([*singles[:3], *_readings(rng, ("spo2", "hr"), 1, 3)], False),
    ):
        before = [r.values.copy() for r in readings]
        values, quality, bad = gate.screen_many(readings)
        assert isinstance(values, np.ndarray) == at_once
        assert len(values) == len(quality) == len(bad) == len(readings)
        for i, reading in enumerate(readings):
            one_values, one_quality, one_bad = gate.screen(reading)
            np.testing.assert_array_equal(values[i], one_values)
            assert (quality[i], bad[i]) == (int(one_quality), one_bad)
            np.testing.assert_array_equal(reading.values, before[i])  # the readings' own arrays untouched


def test_stacked_values_equal_concatenate() -> None:
    """Readings' values joined as bytes (native float64, C-contiguous) or concatenated (anything else):
    the same dtype, shape and bytes as `np.concatenate`, whatever arrays a source made."""
    rng = np.random.default_rng(3)
    base = rng.normal(size=(6, 8, 2))
    base[1, 2, 0] = np.nan
    base[2, 3, 1] = -0.0
    kinds = {
        "float64": list(base),
        "fortran": [np.asfortranarray(a) for a in base],
        "column views": [np.ascontiguousarray(np.repeat(a, 2, axis=1))[:, ::2] for a in base],
        "float32": [a.astype(np.float32) for a in base],
        "big-endian": [a.astype(">f8") for a in base],
        # 8 bytes a value too: must not be read as floats
        "int64": [np.round(np.nan_to_num(a) * 100).astype(np.int64) for a in base],
        "mixed": [*list(base[:3]), *[a.astype(np.float32) for a in base[3:]]],
    }
    for kind, arrays in kinds.items():
        first = arrays[0].copy()
        expected = np.concatenate(arrays).reshape(6, 8, 2)
        got = stacked_values(arrays, (6, 8, 2))
        assert got.dtype == expected.dtype, kind
        assert got.shape == expected.shape, kind
        assert got.tobytes() == expected.tobytes(), kind
        got[0] = 7  # the gate writes NaN into its copy: never into a reading's own array
        assert arrays[0].tobytes() == first.tobytes(), kind
