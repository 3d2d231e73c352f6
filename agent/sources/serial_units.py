"""A serial HELLO's channel units against the unit the detectors read those channels in.

A HELLO declares each channel's unit ("physical value = raw x scale + offset, in `unit`",
docs/serial-protocol.md), and a detector such as vibration takes its samples in its own configured unit.
Until 2026-11-30 the declared unit was thrown away: an accelerometer declaring "m/s2" was read as g, and
a 2.0 mm/s machine (zone B) alarmed at 19.6 mm/s (zone D) while it ran (equipment review, F3).

The rule every source shares (`agent.sources.unit_conversion`) decides per channel, against the unit
the wiring expects on each (stream name, channel): taken as it comes, converted (said at INFO, one line
for the channels of a block that share their units), or no value (NaN, warned naming the device,
channel, both units and the config key). A block's stream is known only once its channels and rate are
(`serial_frames.waveform_stream`), so this is worked out per combination of HELLO channels a block
carries, once per HELLO, and kept. "Once per HELLO" is once per channel table: the same HELLO sent
again (after a reconnect) is not told again, one with another table is.

The device's `units` key (`units = { acc_z = "g" }`) declares a channel's unit too. Where it and the
HELLO disagree (not the same unit in another spelling), the config wins, warned once per HELLO naming
both and the key: the operator can correct a config on site, not a firmware that mislabels its unit,
and the key is a statement made for this one device (remove it to take the HELLO's). Where they agree,
or the HELLO declares none, it is as if the HELLO had said it. `units_of` gives the units a block's
values are in, for the reading (a recording keeps them: `agent.sources.record`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from agent.readings import FloatArray
from agent.sources.unit_conversion import Plan, UnitConversion
from agent.units import ExpectedUnits, canonical
from firmware_bridge.frame_messages import ChannelSpec, Hello

log = logging.getLogger("agent.sources.serial")  # the serial source's logger: docs name it

MAX_KEPT = 256  # channel combinations whose factors are kept per HELLO (a device chooses them)
# who declares a unit the config does not, and what to fix where it does not convert
HELLO = ("the serial device's HELLO", "fix the firmware's unit (docs/serial-protocol.md, HELLO)")


class HelloUnits:
    """Per DATA block: the factors that bring its columns into the expected units, or None (no change)."""

    def __init__(
        self, name: str, expected: ExpectedUnits, configured: Mapping[str, str] | None = None
    ) -> None:
        self.name = name  # the device's pseudonym, for log lines
        self._conversion = UnitConversion(name, expected, configured or {}, HELLO, log)
        self._hello: Hello | None = None
        self._plans: dict[tuple[int, ...], Plan] = {}  # per block's channel indices, for this HELLO

    def factors(
        self, hello: Hello, indices: tuple[int, ...], names: tuple[str, ...], stream: str
    ) -> FloatArray | None:
        """Column factors for a block of `hello`'s channels `indices` (named `names`) on `stream`."""
        if not self._conversion.expected:
            return None
        return self._plan(hello, indices, names, stream)[0]

    def units_of(
        self, hello: Hello, indices: tuple[int, ...], names: tuple[str, ...], stream: str
    ) -> tuple[str, ...]:
        """The units a block's values are in after `factors`: the declared ones, or the expected one
        where converted; "" where none is known (or the samples became no value)."""
        return self._plan(hello, indices, names, stream)[1]

    def _plan(self, hello: Hello, indices: tuple[int, ...], names: tuple[str, ...], stream: str) -> Plan:
        if hello is not self._hello:
            if hello != self._hello:  # another table: its units are looked at afresh
                self._plans.clear()
                self._conversion.forget()
            self._hello = hello
        plan = self._plans.get(indices)
        if plan is None:
            specs = [hello.channels[i] for i in indices]
            if self._conversion.expected:  # as the factors: only where a detector reads a unit
                for name, spec in zip(names, specs, strict=True):
                    self._tell_disagreement(stream, name, spec)
            plan = self._conversion.plan(stream, names, [spec.unit for spec in specs])
            if len(self._plans) < MAX_KEPT:
                self._plans[indices] = plan
        return plan

    def _tell_disagreement(self, stream: str, name: str, spec: ChannelSpec) -> None:
        configured, hello_unit = self._conversion.configured.get(name), spec.unit.strip()
        if not configured or not hello_unit or configured == hello_unit:
            return
        if canonical(configured) is not None and canonical(configured) == canonical(hello_unit):
            return
        if not self._conversion.once(stream, name, "?" + hello_unit):
            return
        log.warning(
            '%s: the serial device\'s HELLO declares channel "%s" (stream "%s") in "%s", but the config'
            ' says "%s" (units.%s): the config wins and the samples are taken in "%s"; remove units.%s'
            " to take the HELLO's unit, or fix the one that is wrong",
            self.name,
            name,
            stream,
            hello_unit,
            configured,
            name,
            configured,
            name,
        )
