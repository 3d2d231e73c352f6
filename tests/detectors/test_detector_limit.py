"""The `limit` detector: signed distance past the nearest limit over the new samples of the hop."""

from __future__ import annotations

import math

import numpy as np
import pytest
from detector_drive import T0, make

from agent.config.schema import DetectorConfig
from agent.detectors import WindowBlock, build_detector
from agent.errors import ConfigError


def score(detector, rows: list[list[float]], hop: int):  # type: ignore[no-untyped-def]
    values = np.array(rows, dtype=float)[:, :, None]
    n = values.shape[0]
    return detector.score(WindowBlock(values, np.arange(n), np.full(n, T0), hop))


def test_score_is_how_far_past_the_limit_the_worst_new_sample_is() -> None:
    d = make("limit", ("hr",), rate=4.0, above=120, below=40, hop_s=1.0)
    assert (d.window, d.hop) == (4, 4)
    out = score(
        d, [[100, 110, 130, 125], [60, 50, 35, 45], [100, 100, 100, 100], [130, np.nan, np.nan, np.nan]], 4
    )
    np.testing.assert_allclose(out.scores, [10.0, 5.0, -20.0, 10.0])
    np.testing.assert_allclose(out.observed, [130, 35, 100, 130])  # the sample that gave the score
    np.testing.assert_allclose(out.limits, [120, 40, 120, 120])
    assert out.exceeded.tolist() == [True, True, False, True]
    np.testing.assert_allclose(out.contributions[:, 0], [1, 1, 0, 1])
    assert np.isnan(out.baseline).all()


def test_nan_samples_never_score_and_an_all_nan_hop_gives_no_verdict() -> None:
    d = make("limit", ("hr",), above=120)
    out = score(d, [[np.nan], [500.0]], 1)
    assert math.isnan(out.scores[0]) and not out.exceeded[0]
    assert out.scores[1] == 380.0
    assert math.isnan(out.observed[0]) and math.isnan(out.limits[0])


def test_one_sided_limits() -> None:
    low_only = make("limit", ("spo2",), below=90)
    out = score(low_only, [[85.0], [99.0]], 1)
    np.testing.assert_allclose(out.scores, [5.0, -9.0])
    np.testing.assert_allclose(out.limits, [90, 90])


def test_a_value_on_a_limit_is_inside_it() -> None:
    """docs/detectors.md: a limit is strict ("hr 121 bpm above limit 120 bpm"); `above = 119.5` for
    "120 or more". Pins the documented behaviour (the BLE review of 2026-11-30 asked; unchanged)."""
    hr = make("limit", ("hr",), above=120, below=40)
    out = score(hr, [[120.0], [121.0], [40.0], [39.0]], 1)
    assert out.exceeded.tolist() == [False, True, False, True]
    spo2 = make("limit", ("spo2",), below=90)
    assert score(spo2, [[90.0], [89.0]], 1).exceeded.tolist() == [False, True]
    or_more = make("limit", ("hr",), above=119.5)
    assert score(or_more, [[119.0], [120.0]], 1).exceeded.tolist() == [False, True]


def test_only_the_new_samples_of_the_hop_count() -> None:
    d = make("limit", ("hr",), above=120, window_s=5.0)
    out = score(d, [[200, 200, 200, 200, 100]], 1)
    assert out.scores[0] == -20.0


def test_calibration_never_moves_clinical_limits() -> None:
    d = make("limit", ("hr",), above=120)
    values = np.full((2, 100, 1), 150.0)
    d.calibrate(WindowBlock(values, np.arange(2), np.full(2, T0), 1), 1.0, 1.0)
    assert d.threshold == 0.0 and d.above == 120.0


@pytest.mark.parametrize(
    ("params", "channels", "path", "problem"),
    [
        ({}, ("hr",), "detectors.lim.params.above", "neither"),
        ({"above": "abc"}, ("hr",), "detectors.lim.params.above", 'expected a number, got "abc"'),
        ({"above": 100, "below": 120}, ("hr",), "detectors.lim.params.below", "less than above"),
        ({"above": 100, "hop_s": 0}, ("hr",), "detectors.lim.params.hop_s", "positive"),
        ({"above": 100, "abov": 1}, ("hr",), "detectors.lim.params.abov", "unknown parameter"),
        ({"above": 100}, ("hr", "spo2"), "detectors.lim.channels", "exactly 1"),
    ],
)
def test_bad_params_name_the_key(
    params: dict[str, object], channels: tuple[str, ...], path: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        build_detector(DetectorConfig("lim", "limit", "vitals", channels, params=params), 1.0)
    assert info.value.path == path
    assert problem in info.value.problem
