"""Readings into the units the detectors read them in, from the units declared for their channels.

A CSV vibration sensor sending g, read by a detector in m/s2, was judged 9.81 times too low; one in
mm/s2 1000 times too high: the line formats and Modbus carry values only, and until 2026-12-01 only a
serial HELLO's units were converted (`agent.sources.serial_units`). A channel's unit is declared by:
- the device's `units` key (`units = { vibration_rms = "g" }`), for any transport that has no fixed
  units; over a HELLO's own unit, see `serial_units`;
- else the reading's own `units`: a replayed recording of a HELLO device keeps the HELLO's units
  (`agent.sources.record`), so a replay is judged as the live device was.
Converted by the rule every source shares (`agent.sources.unit_conversion`): to the unit the detectors
read the (stream, channel) in, said once at INFO; a unit that does not convert makes the channel's
samples NaN (no value: flagged by the quality gate, never judged as if in the detector's unit), warned
once. A configured unit that does not convert is refused before start (`wiring.check_wiring`), so that
is left to recorded units. A device without the key whose readings declare no units gets its readings
back untouched: the same objects, bit-identical.
The plan (factors, units) is worked out once per (stream, channels, units) and kept.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from agent.readings import Reading
from agent.sources.unit_conversion import Plan, UnitConversion
from agent.units import ExpectedUnits

log = logging.getLogger("agent.sources.units")

MAX_KEPT = 256  # plans kept per device: (stream, channels, units) combinations are few
# who declares a unit the config does not, and what to do where it does not convert
RECORDED = ("the recording", "declare the channel's unit in the replay device's units")


class DeclaredUnits:
    """One device's readings into the detectors' units (see the module docstring)."""

    def __init__(self, name: str, configured: Mapping[str, str], expected: ExpectedUnits) -> None:
        self.name = name  # the device's pseudonym, for log lines
        self._conversion = UnitConversion(name, expected, configured, RECORDED, log)
        self._plans: dict[tuple[str, tuple[str, ...], tuple[str, ...]], Plan] = {}

    def apply(self, reading: Reading) -> Reading:
        """`reading` in the detectors' units, with the units its values are now in."""
        if not self._conversion.configured and not reading.units:
            return reading
        stream = reading.stream.split("/", 1)[-1]
        key = (stream, reading.channels, reading.units)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._conversion.plan(stream, reading.channels, reading.units)
            if len(self._plans) < MAX_KEPT:
                self._plans[key] = plan
        factors, units = plan
        if factors is None:
            return reading if units == reading.units else replace(reading, units=units)
        values = reading.values * factors
        values.flags.writeable = False
        return replace(reading, values=values, units=units)
