"""`agent.alarms.book._finite` is `np.nan_to_num` byte for byte (it only skips the call when nothing is
to replace), on the values the books hand it: NaN, infinities, signed zeros, subnormals."""

from __future__ import annotations

import numpy as np
import pytest

from agent.alarms.book import _finite

SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 5e-324, -5e-324, 1.7976931348623157e308, 1.0, -2.5]


@pytest.mark.parametrize("nan", [0.0, 1.5])
def test_finite_equals_nan_to_num(nan: float) -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        shape = (int(rng.integers(0, 6)),) if rng.random() < 0.5 else (int(rng.integers(0, 5)), 3)
        values = rng.normal(size=shape)
        if values.size and rng.random() < 0.7:  # some special values, or none (the usual hop)
            picks = rng.integers(0, values.size, size=int(rng.integers(1, values.size + 1)))
            values.flat[picks] = rng.choice(SPECIAL, size=picks.size)
        expected = np.nan_to_num(values, nan=nan)
        got = _finite(values.copy(), nan=nan)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert got.tobytes() == expected.tobytes()


def test_finite_replaces_what_is_not_finite() -> None:
    got = _finite(np.array([np.nan, np.inf, -np.inf, -0.0]))
    assert got.tolist() == [0.0, np.finfo(np.float64).max, np.finfo(np.float64).min, -0.0]
