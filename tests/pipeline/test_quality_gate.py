"""The quality gate: device flags and physically impossible values become missing, and are counted."""

from __future__ import annotations

import numpy as np

from agent.pipeline.quality import QualityGate
from agent.readings import Quality, Reading


def reading(values: list[list[float]], channels: tuple[str, ...], quality: Quality = Quality.OK) -> Reading:
    return Reading("d/vitals", channels, np.array(values, dtype=float), 0.0, 0.0, 1.0, quality)


def test_good_values_pass_unchanged() -> None:
    gated = QualityGate(("hr", "spo2")).apply(reading([[72, 98]], ("hr", "spo2")))
    assert gated.values.tolist() == [[72, 98]] and gated.quality is Quality.OK and gated.bad_samples == 0


def test_device_flag_hides_the_whole_block() -> None:
    gated = QualityGate(("hr",)).apply(reading([[72], [73]], ("hr",), Quality.NO_CONTACT))
    assert np.isnan(gated.values).all() and gated.quality & Quality.NO_CONTACT and gated.bad_samples == 2


def test_out_of_range_value_is_hidden_without_hiding_its_neighbours() -> None:
    gated = QualityGate(("hr", "spo2")).apply(reading([[0, 97], [75, 140]], ("hr", "spo2")))
    assert np.isnan(gated.values[0, 0]) and gated.values[0, 1] == 97
    assert gated.values[1, 0] == 75 and np.isnan(gated.values[1, 1])
    assert gated.quality & Quality.OUT_OF_RANGE and gated.bad_samples == 2


def test_channels_are_selected_by_name_and_missing_ones_are_nan() -> None:
    gated = QualityGate(("spo2", "hr", "resp")).apply(reading([[72, 98]], ("hr", "spo2")))
    assert gated.values[0, :2].tolist() == [98, 72] and np.isnan(gated.values[0, 2])


def test_an_infinity_is_out_of_range_on_a_channel_without_a_known_range() -> None:
    gate = QualityGate(("pressure", "hr"))  # no physical range is known for "pressure"
    block = reading([[float("inf"), 72], [2.5, 75], [-float("inf"), float("inf")]], ("pressure", "hr"))
    for values, quality, bad in (gate.screen(block), *zip(*gate.screen_many([block] * 4), strict=True)):
        assert np.isnan(values[0, 0]) and values[1].tolist() == [2.5, 75] and np.isnan(values[2]).all()
        assert quality & Quality.OUT_OF_RANGE and bad == 2


def test_nan_on_a_watched_channel_is_no_value_and_flagged_per_value() -> None:
    # a device's "no value" (SFLOAT NaN, an empty CSV field) on SpO2 is OUT_OF_RANGE like SpO2 0, so a
    # channel that stays blind raises signal_poor; the good HR beside it stays (audit finding 3)
    gate = QualityGate(("hr", "spo2"))
    block = reading([[72, float("nan")], [73, 97]], ("hr", "spo2"))
    for values, quality, bad in (gate.screen(block), *zip(*gate.screen_many([block] * 4), strict=True)):
        assert values[0, 0] == 72 and np.isnan(values[0, 1]) and values[1].tolist() == [73, 97]
        assert quality & Quality.OUT_OF_RANGE and bad == 1


def test_a_channel_the_reading_lacks_is_missing_not_flagged() -> None:
    # an HR strap sharing "vitals" with oximeters has no spo2 at all: not "no value", no signal_poor
    gate = QualityGate(("hr", "spo2"))
    block = reading([[72], [73]], ("hr",))
    for values, quality, bad in (gate.screen(block), *zip(*gate.screen_many([block] * 4), strict=True)):
        assert values[:, 0].tolist() == [72, 73] and np.isnan(values[:, 1]).all()
        assert quality == Quality.OK and bad == 0
    nan_hr = reading([[float("nan")]], ("hr",))  # but its own HR as NaN is flagged
    assert gate.screen(nan_hr)[1] & Quality.OUT_OF_RANGE
