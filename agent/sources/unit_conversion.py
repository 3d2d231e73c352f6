"""A channel's declared unit against the unit the detectors read it in: the rule every source applies.

A channel's unit is declared by the device's `units` key, else by what the transport itself says: a
serial HELLO (`serial_units`) or a reading's own units, from a recording (`declared_units`). The config
wins: the key is a statement made for this one device, which the operator can correct on site. The
pipeline's wiring tells the unit a detector reads each (stream name, channel) in
(`agent.pipeline.wiring.expected_units`). Per channel:
- no expected unit, or no declared one: taken as it comes (an empty unit is the detector's, as before);
- the same unit in another spelling ("m/s^2" for "m/s2"): taken as it comes;
- another unit of the same quantity ("m/s2" or "mg" for g; `agent.units.factor`): converted, said once
  at INFO, in one line for the channels of a block that share their declared unit and who declared it;
- a unit that is not one of that quantity ("mV", an unknown word): the channel's samples become NaN
  ("no value"), warned once naming the device, channel, both units and what to fix. NaN rather than
  refusing the block: its other channels stay judged, and a watched channel without a value is flagged
  by the quality gate, so it raises the signal_poor technical alarm instead of the silence (device_lost)
  a refused block would look like; the data is never judged as if it were in the expected unit.
"Once" is per (stream, channel, declared unit), until `forget` (a serial device's new HELLO). A plan is
worked out per block shape; the caller keeps it (the transport knows what a shape is).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np

from agent.readings import FloatArray
from agent.units import ExpectedUnit, ExpectedUnits, factor

Plan = tuple[FloatArray | None, tuple[str, ...]]  # column factors (None: none to apply), units after


class UnitConversion:
    """One device's channels into the detectors' units, and the told-once log lines about it."""

    def __init__(
        self,
        name: str,
        expected: ExpectedUnits,
        configured: Mapping[str, str],
        own: tuple[str, str],
        log: logging.Logger,
    ) -> None:
        """`own`: who declares a unit the config does not, and what to fix where it does not convert
        ("the serial device's HELLO", "fix the firmware's unit ..."); `log`: the source's logger."""
        self.name = name  # the device's pseudonym, for log lines
        self.expected = expected
        self.configured = configured  # channel -> unit, the device's `units` key
        self._own, self._own_fix = own
        self._log = log
        self._told: set[tuple[str, str, str]] = set()

    def once(self, stream: str, channel: str, what: str) -> bool:
        """True the first time (since `forget`) for this (stream, channel, what): tell it then only."""
        key = (stream, channel, what)
        if key in self._told:
            return False
        self._told.add(key)
        return True

    def forget(self) -> None:
        """Tell everything afresh (a serial device's new HELLO: another channel table)."""
        self._told.clear()

    def declared(self, channel: str, own: str) -> str:
        """The unit of `channel`: the config's `units` over the transport's own `own`."""
        return self.configured.get(channel) or own.strip()

    def plan(self, stream: str, channels: Sequence[str], own: Sequence[str]) -> Plan:
        """Factors and the units after them for a block of `channels` on `stream`, whose transport
        declares `own` (one per channel, or empty for none)."""
        converted: dict[tuple[str, str, ExpectedUnit, float], list[str]] = {}  # told together
        found, units = [], []
        for j, channel in enumerate(channels):
            declared = self.declared(channel, own[j] if own else "")
            expected = self.expected.get((stream, channel))
            if expected is None or not declared:
                found.append(1.0)
                units.append(declared)
                continue
            who = f"the config's units.{channel}" if channel in self.configured else self._own
            k = factor(declared, expected.unit)
            first = self.once(stream, channel, declared)
            if k is None:
                if first:
                    self._tell_unconvertible(stream, channel, declared, who, expected)
                found.append(math.nan)
                units.append("")
                continue
            if k != 1.0 and first:
                converted.setdefault((who, declared, expected, k), []).append(channel)
            found.append(k)
            units.append(expected.unit)
        for (who, declared, expected, k), names in converted.items():
            self._log.info(
                '%s: %s declares %s %s (stream "%s") in "%s"; the samples are converted to "%s" (x %.6g),'
                " the unit detector %s reads them in (%s)",
                self.name,
                who,
                "channel" if len(names) == 1 else "channels",
                ", ".join(f'"{c}"' for c in names),
                stream,
                declared,
                expected.unit,
                k,
                expected.detector,
                expected.key,
            )
        factors = None if all(k == 1.0 for k in found) else np.array(found, dtype=np.float64)
        return factors, tuple(units) if any(units) else ()

    def _tell_unconvertible(
        self, stream: str, channel: str, declared: str, who: str, expected: ExpectedUnit
    ) -> None:
        fix = f"fix units.{channel}" if channel in self.configured else self._own_fix
        self._log.warning(
            '%s: %s declares channel "%s" (stream "%s") in "%s", which is not a unit convertible to "%s",'
            " the unit it is read in (%s): its samples are taken as no value (NaN), so they are not"
            " judged and the signal_poor alarm is raised; %s or %s",
            self.name,
            who,
            channel,
            stream,
            declared,
            expected.unit,
            expected.key,
            fix,
            expected.key,
        )
