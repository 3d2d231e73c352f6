"""Vibration features against closed-form values, and ISO 10816 zones by machine class."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from agent.config.schema import DetectorConfig
from agent.detectors.base import WindowBlock
from agent.detectors.vibration import ISO_10816_CLASSES, VibrationDetector
from agent.errors import ConfigError

RATE = 4096.0
G = 9.80665


def make(channels: tuple[str, ...] = ("x", "y", "z"), **params: Any) -> VibrationDetector:
    config = DetectorConfig("vib", "vibration", "accel", channels, rate_hz=RATE, params=params)
    return VibrationDetector.from_config(config, RATE)


def sine_in_g(velocity_rms_mm_s: float, freq: float, n: int, phase: float = 0.0) -> np.ndarray:
    """Acceleration (g) of a sinusoidal vibration with the given velocity RMS."""
    t = np.arange(n) / RATE
    amplitude = velocity_rms_mm_s * np.sqrt(2) * 1e-3 * 2 * np.pi * freq / G
    return np.asarray(amplitude * np.sin(2 * np.pi * freq * t + phase))


def block(values: np.ndarray) -> WindowBlock:
    n = values.shape[0]
    return WindowBlock(values, np.arange(n), np.zeros(n), values.shape[1])


@pytest.mark.parametrize("freq", [25.0, 50.0, 157.3, 600.0])
def test_velocity_rms_of_a_sine_matches_its_definition(freq: float) -> None:
    d = make()
    x = sine_in_g(4.0, freq, d.window)
    values = np.stack([x, 0.5 * x, np.zeros_like(x)], axis=-1)[None]
    f = d.features(values)
    np.testing.assert_allclose(f.velocity_rms[0, :2], [4.0, 2.0], rtol=0.03)
    assert f.velocity_rms[0, 2] == 0.0
    np.testing.assert_allclose(f.crest[0, :2], np.sqrt(2), rtol=0.01)  # sine: peak/RMS = sqrt 2
    np.testing.assert_allclose(f.kurtosis[0, :2], 1.5, rtol=0.02)  # sine: E[x^4]/E[x^2]^2 = 3/2


def test_band_energies_split_the_signal_power() -> None:
    d = make(bands=[[0, 100], [100, 1000], [1000, 2048]])
    x = sine_in_g(2.0, 60.0, d.window) + sine_in_g(1.0, 400.0, d.window)
    f = d.features(np.stack([x, x, x], axis=-1)[None])
    energy = f.band_energy[0, 0]
    assert energy.sum() == pytest.approx(f.rms[0, 0] ** 2, rel=0.02)
    expected_60 = (2.0 * np.sqrt(2) * 1e-3 * 2 * np.pi * 60 / G) ** 2 / 2
    assert energy[0] == pytest.approx(expected_60, rel=0.05)
    assert energy[2] < 1e-3 * energy.sum()


def test_impulses_raise_kurtosis_and_crest_before_rms_moves() -> None:
    d = make(("x",))
    rng = np.random.default_rng(1)
    smooth = rng.normal(0, 0.05, d.window)
    impulsive = smooth.copy()
    impulsive[::400] += 0.6  # bearing outer-race impacts
    f = d.features(np.stack([smooth, impulsive])[:, :, None])
    assert f.kurtosis[1, 0] > 3 * f.kurtosis[0, 0]
    assert f.crest[1, 0] > 2 * f.crest[0, 0]
    assert f.rms[1, 0] < 1.5 * f.rms[0, 0]


@pytest.mark.parametrize("machine", sorted(ISO_10816_CLASSES))
def test_zones_and_score_follow_the_machine_class(machine: str) -> None:
    a_b, b_c, c_d = ISO_10816_CLASSES[machine]
    d = make(("x",), machine_class=machine)
    velocities = [0.5 * a_b, (a_b + b_c) / 2, (b_c + c_d) / 2, 1.5 * c_d]
    values = np.stack([sine_in_g(v, 50.0, d.window) for v in velocities])[:, :, None]
    out = d.score(block(values))
    assert list(d.zone(out.observed)) == [0, 1, 2, 3]
    np.testing.assert_allclose(out.scores, np.array(velocities) / b_c, rtol=0.03)
    assert list(out.exceeded) == [False, False, True, True]
    np.testing.assert_allclose(out.limits, b_c)


def test_the_worst_axis_scores_and_contributions_name_it() -> None:
    d = make(zone_boundaries=[1.0, 2.0, 4.0], alarm_zone="D")
    x = sine_in_g(1.0, 80.0, d.window)
    values = np.stack([x, 5 * x, x], axis=-1)[None]
    out = d.score(block(values))
    assert out.scores[0] == pytest.approx(5.0 / 4.0, rel=0.03)
    assert int(np.argmax(out.contributions[0])) == 1


def test_metres_per_second_squared_input() -> None:
    d_g, d_si = make(("x",)), make(("x",), unit="m/s2")
    x = sine_in_g(3.0, 50.0, d_g.window)
    v_g = d_g.features(x[None, :, None]).velocity_rms
    v_si = d_si.features((x * G)[None, :, None]).velocity_rms
    np.testing.assert_allclose(v_g, v_si, rtol=1e-9)


def test_a_gappy_window_gives_no_verdict() -> None:
    d = make(("x",))
    x = sine_in_g(3.0, 50.0, d.window)
    x[: d.window // 5] = np.nan
    assert np.isnan(d.score(block(x[None, :, None])).scores[0])


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"machine_class": "V"}, "machine_class"),
        ({"zone_boundaries": [3.0, 2.0, 4.0]}, "zone_boundaries"),
        ({"iso_low_hz": 3000.0}, "iso_high_hz"),
        ({"bands": [[10, 5000]]}, "bands[0]"),
        ({"unit": "mV"}, "unit"),
        ({"unit": 9.81}, "unit"),
    ],
)
def test_bad_params_name_their_key(params: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        make(**params)
    assert err.value.path == f"detectors.vib.params.{key}"


@pytest.mark.parametrize("unit", ["g", "G", "mg", "m/s2", "m/s^2", "m/s²", "mm/s2", "mm/s^2"])
def test_the_unit_may_be_any_acceleration_unit_in_any_usual_spelling(unit: str) -> None:
    """The same physical tone, 4 mm/s at 50 Hz, written in `unit`, gives 4 mm/s ("mg" was refused)."""
    in_unit = {"g": 1.0, "mg": 1e3, "m/s2": G, "mm/s2": G * 1e3}[
        unit.lower().replace("^", "").replace("²", "2")
    ]
    d = make(unit=unit)
    x = in_unit * sine_in_g(4.0, 50.0, d.window)
    velocity = d.features(np.stack([x, x, x], axis=-1)[None]).velocity_rms
    np.testing.assert_allclose(velocity, 4.0, rtol=0.01)
