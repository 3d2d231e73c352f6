"""One rule for a channel's declared unit, whichever transport declared it (`agent.sources.unit_conversion`).

A serial HELLO (`HelloUnits`) and a reading's own units from a recording (`DeclaredUnits`) were two copies
of the same decision, which had drifted: the same m/s^2 channel read in m/s2 came out labelled "m/s^2"
from a HELLO and "m/s2" from a recording, and a configured unit that did not convert was blamed on the
HELLO. Both now ask the one rule; each keeps its own part (a HELLO's channel table, a device's plans).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from agent.readings import Reading
from agent.sources.declared_units import DeclaredUnits
from agent.sources.serial_units import HelloUnits
from agent.units import ExpectedUnit
from firmware_bridge.frame_messages import ChannelSpec, Hello, SampleType

PSEUDONYM = "d-unitrulepseudo"
AXES = ("acc_x", "acc_y", "acc_z")
EXPECTED = {("acc", a): ExpectedUnit("m/s2", "vib") for a in AXES}


def hello(units: tuple[str, ...]) -> Hello:
    specs = (ChannelSpec(a, u, SampleType.INT16, 100.0, 0.01) for a, u in zip(AXES, units, strict=True))
    return Hello("n", (1, 0, 0), tuple(specs))


def recorded(units: tuple[str, ...]) -> Reading:
    return Reading("fan-acc/acc", AXES, np.full((2, 3), 4.0), 1.7e9, 5.0, 0.01, units=units)


@pytest.mark.parametrize(
    "units",
    [("m/s2",) * 3, ("m/s^2", "M/S2", "m/s²"), ("g", "mg", "mm/s2"), ("mV", "", "g"), ("", "", "")],
)
def test_a_hello_and_a_recording_declaring_the_same_units_give_the_same_values_and_units(
    units: tuple[str, str, str],
) -> None:
    from_hello = HelloUnits(PSEUDONYM, EXPECTED)
    factors = from_hello.factors(hello(units), (0, 1, 2), AXES, "acc")
    hello_values = np.full((2, 3), 4.0) * (1.0 if factors is None else factors)
    hello_units = from_hello.units_of(hello(units), (0, 1, 2), AXES, "acc")
    replayed = DeclaredUnits(PSEUDONYM, {}, EXPECTED).apply(recorded(units))
    np.testing.assert_array_equal(hello_values, replayed.values)
    assert hello_units == replayed.units
    if any(units) and "mV" not in units:  # every declared unit is an acceleration: labelled as read
        assert replayed.units == tuple("m/s2" if u else "" for u in units)


def test_a_recordings_channels_in_one_unit_are_told_in_one_line(caplog: pytest.LogCaptureFixture) -> None:
    units = DeclaredUnits(PSEUDONYM, {}, EXPECTED)
    with caplog.at_level(logging.INFO, logger="agent.sources.units"):
        units.apply(recorded(("g",) * 3))
        units.apply(recorded(("g",) * 3))
    assert [r.getMessage() for r in caplog.records] == [
        f'{PSEUDONYM}: the recording declares channels "acc_x", "acc_y", "acc_z" (stream "acc") in "g"; the'
        ' samples are converted to "m/s2" (x 9.80665), the unit detector vib reads them in'
        " (detectors.vib.params.unit)"
    ]


def test_a_recorded_unit_that_does_not_convert_says_what_to_declare(caplog: pytest.LogCaptureFixture) -> None:
    units = DeclaredUnits(PSEUDONYM, {}, EXPECTED)
    with caplog.at_level(logging.INFO, logger="agent.sources.units"):
        reading = units.apply(recorded(("m/s2", "m/s2", "mV")))
    assert np.isnan(reading.values[:, 2]).all() and (reading.values[:, :2] == 4.0).all()
    assert [r.getMessage() for r in caplog.records] == [
        f'{PSEUDONYM}: the recording declares channel "acc_z" (stream "acc") in "mV", which is not a unit'
        ' convertible to "m/s2", the unit it is read in (detectors.vib.params.unit): its samples are taken'
        " as no value (NaN), so they are not judged and the signal_poor alarm is raised; declare the"
        " channel's unit in the replay device's units or detectors.vib.params.unit"
    ]


def test_a_configured_unit_over_a_hello_is_named_as_the_configs(caplog: pytest.LogCaptureFixture) -> None:
    """The config wins over the HELLO: where its unit is the one converted (or not), the line names the
    key, not the HELLO (which said m/s2)."""
    units = HelloUnits(PSEUDONYM, EXPECTED, {"acc_x": "mg", "acc_z": "mV"})
    with caplog.at_level(logging.INFO, logger="agent.sources.serial"):
        factors = units.factors(hello(("m/s2",) * 3), (0, 1, 2), AXES, "acc")
    assert factors is not None and factors[0] == pytest.approx(9.80665e-3) and factors[1] == 1.0
    assert np.isnan(factors[2])
    told = [r.getMessage() for r in caplog.records if "the config wins" not in r.getMessage()]
    assert len(told) == 2
    assert told[0].startswith(
        f'{PSEUDONYM}: the config\'s units.acc_z declares channel "acc_z" (stream "acc") in "mV", which is'
    )
    assert told[0].endswith("; fix units.acc_z or detectors.vib.params.unit")
    assert told[1].startswith(
        f'{PSEUDONYM}: the config\'s units.acc_x declares channel "acc_x" (stream "acc") in "mg"; the samples'
    )
