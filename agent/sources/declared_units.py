"""Readings into the units the detectors read them in, from the units declared for their channels.

A CSV vibration sensor sending g, read by a detector in m/s2, was judged 9.81 times too low; one in
mm/s2 1000 times too high: the line formats and Modbus carry values only, and until 2026-12-01 only a
serial HELLO's units were converted (`agent.sources.serial_units`). A channel's unit is declared by:
- the device's `units` key (`units = { vibration_rms = "g" }`), for any transport that has no fixed
  units; over a HELLO's own unit, see `serial_units`;
- else the reading's own `units`: a replayed recording of a HELLO device keeps the HELLO's units
  (`agent.sources.record`), so a replay is judged as the live device was.
Converted as `serial_units` does, by the same table (`agent.units.factor`): to the unit the detectors
read the (stream, channel) in (`agent.pipeline.wiring.expected_units`), said once at INFO; a unit that
does not convert makes the channel's samples NaN (no value: flagged by the quality gate, never judged
as if in the detector's unit), warned once. A configured unit that does not convert is refused before
start (`wiring.check_wiring`), so that is left to recorded units. A device without the key whose
readings declare no units gets its readings back untouched: the same objects, bit-identical.
The plan (factors, units) is worked out once per (stream, channels, units) and kept.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from agent.readings import FloatArray, Reading
from agent.units import ExpectedUnits, factor

log = logging.getLogger("agent.sources.units")

MAX_KEPT = 256  # plans kept per device: (stream, channels, units) combinations are few

Plan = tuple[FloatArray | None, tuple[str, ...]]  # column factors (None: none to apply), units after


class DeclaredUnits:
    """One device's readings into the detectors' units (see the module docstring)."""

    def __init__(self, name: str, configured: Mapping[str, str], expected: ExpectedUnits) -> None:
        self.name = name  # the device's pseudonym, for log lines
        self._configured = configured  # channel -> unit, the device's `units` key
        self._expected = expected
        self._plans: dict[tuple[str, tuple[str, ...], tuple[str, ...]], Plan] = {}
        self._told: set[tuple[str, str, str]] = set()  # (stream, channel, declared unit)

    def apply(self, reading: Reading) -> Reading:
        """`reading` in the detectors' units, with the units its values are now in."""
        if not self._configured and not reading.units:
            return reading
        stream = reading.stream.split("/", 1)[-1]
        key = (stream, reading.channels, reading.units)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plan(stream, reading.channels, reading.units)
            if len(self._plans) < MAX_KEPT:
                self._plans[key] = plan
        factors, units = plan
        if factors is None:
            return reading if units == reading.units else replace(reading, units=units)
        values = reading.values * factors
        values.flags.writeable = False
        return replace(reading, values=values, units=units)

    def _plan(self, stream: str, channels: tuple[str, ...], own: tuple[str, ...]) -> Plan:
        found, units = [], []
        for j, channel in enumerate(channels):
            declared = self._configured.get(channel) or (own[j].strip() if own else "")
            k, unit = self._factor(stream, channel, declared)
            found.append(k)
            units.append(unit)
        factors = None if all(k == 1.0 for k in found) else np.array(found, dtype=np.float64)
        return factors, tuple(units) if any(units) else ()

    def _factor(self, stream: str, channel: str, declared: str) -> tuple[float, str]:
        """The factor of one channel and the unit its values are in after it."""
        expected = self._expected.get((stream, channel))
        if expected is None or not declared:
            return 1.0, declared
        found = factor(declared, expected.unit)
        told = (stream, channel, declared) in self._told
        self._told.add((stream, channel, declared))
        where = f"units.{channel}" if channel in self._configured else "the recording"
        if found is None:
            if not told:
                log.warning(
                    '%s: channel "%s" (stream "%s") is declared in "%s" (%s), which is not a unit'
                    ' convertible to "%s", the unit detector %s reads it in (%s): its samples are taken'
                    " as no value (NaN), so they are not judged and the signal_poor alarm is raised",
                    self.name,
                    channel,
                    stream,
                    declared,
                    where,
                    expected.unit,
                    expected.detector,
                    expected.key,
                )
            return math.nan, ""
        if found != 1.0 and not told:
            log.info(
                '%s: channel "%s" (stream "%s") is declared in "%s" (%s); its samples are converted to'
                ' "%s" (x %.6g), the unit detector %s reads them in (%s)',
                self.name,
                channel,
                stream,
                declared,
                where,
                expected.unit,
                found,
                expected.detector,
                expected.key,
            )
        return found, expected.unit
