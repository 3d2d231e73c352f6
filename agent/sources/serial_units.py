"""A serial HELLO's channel units against the unit the detectors read those channels in.

A HELLO declares each channel's unit ("physical value = raw x scale + offset, in `unit`",
docs/serial-protocol.md), and a detector such as vibration takes its samples in its own configured unit.
Until 2026-11-30 the declared unit was thrown away: an accelerometer declaring "m/s2" was read as g, and
a 2.0 mm/s machine (zone B) alarmed at 19.6 mm/s (zone D) while it ran (equipment review, F3).

The pipeline's wiring tells the source the unit expected on each (stream name, channel)
(`agent.pipeline.wiring.expected_units`). A block's stream is known only once its channels and rate are
(`serial_frames.waveform_stream`), so the factors are worked out per combination of HELLO channels a
block carries, once per HELLO, and kept:
- no expected unit for the channel, or an empty declared unit: as before, taken as it comes;
- the same unit in another spelling ("m/s^2" for "m/s2"): taken as it comes;
- another unit of the same quantity ("m/s2" or "mg" for g): converted, said once per HELLO at INFO
  (one line for the channels of a block that share their units);
- a unit that is not one of that quantity ("mV", an unknown word): the channel's samples become NaN
  ("no value"), warned once per HELLO naming the device, channel, both units and the config key.
  NaN rather than refusing the block: the block's other channels stay judged, and a watched channel
  without a value is flagged by the quality gate, so it raises the signal_poor technical alarm instead
  of the silence (device_lost, "no data") a refused block would look like; the data is never judged as
  if it were in the expected unit.
"Once per HELLO" is once per channel table: the same HELLO sent again (after a reconnect) is not told
again, one with another table is.

The device's `units` key (`units = { acc_z = "g" }`) declares a channel's unit too. Where it and the
HELLO disagree (not the same unit in another spelling), the config wins, warned once per HELLO naming
both and the key: the operator can correct a config on site, not a firmware that mislabels its unit,
and the key is a statement made for this one device (remove it to take the HELLO's). Where they agree,
or the HELLO declares none, it is as if the HELLO had said it. `units_of` gives the units a block's
values are in, for the reading (a recording keeps them: `agent.sources.record`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import numpy as np

from agent.readings import FloatArray
from agent.units import ExpectedUnit, ExpectedUnits, canonical, factor
from firmware_bridge.frame_messages import ChannelSpec, Hello

log = logging.getLogger("agent.sources.serial")  # the serial source's logger: docs name it

MAX_KEPT = 256  # channel combinations whose factors are kept per HELLO (a device chooses them)


class HelloUnits:
    """Per DATA block: the factors that bring its columns into the expected units, or None (no change)."""

    def __init__(
        self, name: str, expected: ExpectedUnits, configured: Mapping[str, str] | None = None
    ) -> None:
        self.name = name  # the device's pseudonym, for log lines
        self._expected = expected
        self._configured = configured or {}  # channel -> unit: the device's `units` key
        self._hello: Hello | None = None
        self._kept: dict[tuple[int, ...], FloatArray | None] = {}
        self._units: dict[tuple[int, ...], tuple[str, ...]] = {}  # the units of a block's values, after
        self._told: set[tuple[str, str, str]] = set()  # (stream, channel, declared unit) of this HELLO

    def factors(
        self, hello: Hello, indices: tuple[int, ...], names: tuple[str, ...], stream: str
    ) -> FloatArray | None:
        """Column factors for a block of `hello`'s channels `indices` (named `names`) on `stream`."""
        if not self._expected:
            return None
        self._look_at(hello)
        if indices in self._kept:
            return self._kept[indices]
        converted: dict[tuple[str, ExpectedUnit, float], list[str]] = {}  # told together
        found = [
            self._factor(stream, name, hello.channels[i], converted)
            for name, i in zip(names, indices, strict=True)
        ]
        for (declared, expected, k), channels in converted.items():
            log.info(
                '%s: the serial device\'s HELLO declares %s %s (stream "%s") in "%s"; the samples are'
                ' converted to "%s" (x %.6g), the unit detector %s reads them in (%s)',
                self.name,
                "channel" if len(channels) == 1 else "channels",
                ", ".join(f'"{c}"' for c in channels),
                stream,
                declared,
                expected.unit,
                k,
                expected.detector,
                expected.key,
            )
        result = None if all(f == 1.0 for f in found) else np.array(found, dtype=np.float64)
        if len(self._kept) < MAX_KEPT:
            self._kept[indices] = result
            self._units[indices] = self._after(
                stream, names, tuple(hello.channels[i] for i in indices), result
            )
        return result

    def units_of(
        self, hello: Hello, indices: tuple[int, ...], names: tuple[str, ...], stream: str
    ) -> tuple[str, ...]:
        """The units a block's values are in after `factors` (call it first): the declared ones, or the
        expected one where converted; "" where none is known (or the samples became no value)."""
        self._look_at(hello)
        kept = self._units.get(indices)
        if kept is not None:
            return kept
        result = self._kept.get(indices) if self._expected else None
        units = self._after(stream, names, tuple(hello.channels[i] for i in indices), result)
        if len(self._units) < MAX_KEPT:
            self._units[indices] = units
        return units

    def _after(
        self, stream: str, names: tuple[str, ...], specs: tuple[ChannelSpec, ...], found: FloatArray | None
    ) -> tuple[str, ...]:
        units = []
        for j, (name, spec) in enumerate(zip(names, specs, strict=True)):
            declared = self._declared(name, spec)
            expected = self._expected.get((stream, name))
            if found is not None and expected is not None and declared:
                units.append("" if math.isnan(found[j]) else expected.unit)
            else:
                units.append(declared)
        return tuple(units) if any(units) else ()

    def _look_at(self, hello: Hello) -> None:
        if hello is not self._hello:
            if hello != self._hello:  # another table: its units are looked at afresh
                self._kept.clear()
                self._units.clear()
                self._told.clear()
            self._hello = hello

    def _declared(self, name: str, spec: ChannelSpec) -> str:
        """The unit of channel `name`: the config's `units` over the HELLO's (see the module docstring)."""
        return self._configured.get(name) or spec.unit.strip()

    def _tell_disagreement(self, stream: str, name: str, spec: ChannelSpec) -> None:
        configured, hello_unit = self._configured.get(name), spec.unit.strip()
        if not configured or not hello_unit or (stream, name, "?" + hello_unit) in self._told:
            return
        same = canonical(configured) is not None and canonical(configured) == canonical(hello_unit)
        if same or configured == hello_unit:
            return
        self._told.add((stream, name, "?" + hello_unit))
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

    def _factor(
        self,
        stream: str,
        name: str,
        spec: ChannelSpec,
        converted: dict[tuple[str, ExpectedUnit, float], list[str]],
    ) -> float:
        """The factor of one channel; a conversion not yet told is added to `converted`."""
        expected = self._expected.get((stream, name))
        self._tell_disagreement(stream, name, spec)
        declared = self._declared(name, spec)
        if expected is None or not declared:
            return 1.0
        found = factor(declared, expected.unit)
        told = (stream, name, declared) in self._told
        self._told.add((stream, name, declared))
        if found is None:
            if not told:
                _tell_unconvertible(self.name, stream, name, declared, expected.unit, expected.key)
            return math.nan
        if found != 1.0 and not told:
            converted.setdefault((declared, expected, found), []).append(name)
        return found


def _tell_unconvertible(name: str, stream: str, channel: str, declared: str, unit: str, key: str) -> None:
    log.warning(
        '%s: the serial device\'s HELLO declares channel "%s" (stream "%s") in "%s", which is not a unit'
        ' convertible to "%s", the unit it is read in (%s): its samples are taken as no value (NaN), so'
        " they are not judged and the signal_poor alarm is raised; fix the firmware's unit"
        " (docs/serial-protocol.md, HELLO) or %s",
        name,
        channel,
        stream,
        declared,
        unit,
        key,
        key,
    )
