"""The quality gate: readings a detector must not trust become NaN, and their flags are kept.

Two sources of doubt: the device's own flags that say its samples are invalid (`INVALIDATING`: sensor
contact lost, PLX "questionable", motion, a device fault) and values outside what the sensor can report
as a measurement (e.g. HR 0, a strap's "no value", or 400 bpm), NaN included: a device's "no value" (an
SFLOAT NaN/NRes, an empty CSV field, a JSON null) on a channel a detector watches is flagged OUT_OF_RANGE
like SpO2 0, so a channel that stays blind while the device is connected raises signal_poor; a channel
the reading does not have at all is missing, not flagged (`agent.pipeline.wiring` warns about one that
has never arrived; the BLE assembler leaves out a profile's channel until it reports and once it is stale).
Until 2026-11-30 NaN compared False and passed silently (audit finding 3). Gated samples count as
missing for detectors, so they can never raise a physiological alarm; the pipeline turns persistent
poor quality into a technical alarm instead. GAP and LOW_BATTERY are kept on the reading but gate
nothing: they say nothing about these samples (the battery_low technical alarm still comes from the flag).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from agent.readings import INVALIDATING_BITS, RR_RANGE_S, FloatArray, Quality, Reading

IntArray = npt.NDArray[np.int64]
# Screened values of many readings: one (k, n, C) array when they were checked at once, else a list.
Screened = FloatArray | list[FloatArray]

# What sensors can report as a measurement; outside this a value is a fault, not a patient or machine state.
# A gated value is no verdict: it can neither start nor confirm a physiological alarm, so a range must
# never cut into what a patient getting worse can show. Until 2026-11-30 HR < 20 or > 300 bpm and SpO2
# < 50 % were "faults": at HR 18 or SpO2 45 % an active bradycardia / spo2_low alarm ended and only a LOW
# signal_poor was left (clinical review, finding 1). Now:
# - hr, pr: 1..350 bpm. Bradycardia down to asystole-like rates and VT / 1:1 flutter / infant SVT are
#   values. 0 is not: the Heart Rate Measurement's sensor-contact bits are optional (bit 2 "supported"
#   may be 0, firmware_bridge/gatt/heart_rate.py), so a strap without them, or one still locking on,
#   sends bpm 0 for "no value" with no NO_CONTACT flag; a 0 that alarmed would be a false bradycardia.
#   It stays out of range (a signal_poor, and no verdict: an active episode is held, not ended).
# - spo2: 1..100 %. Oximeters report values below 50 % (a real, severe hypoxaemia); 0 % is not a living
#   patient's reading but a probe's "no value", as above.
# - rr: 0.17..10 s between beats (350..6 bpm): a sinus pause or AV block of 3-10 s is a real interval.
#   The AF detector drops intervals outside its own [min_rr_s, max_rr_s] as artefacts anyway.
# - skin_temp: 0..50 °C, the sensor's span: a cold, shut-down periphery can read below 20 °C.
# - "temp" (the BLE thermometer) has no range here: equipment registers are often named "temp" too.
# Equipment channels get the span of the sensors themselves, not of a healthy machine: a machine shaking
# itself apart or a burning bearing is exactly the reading that must alarm. Until 2026-11-30 these were
# 0..100 mm/s, -40..200 °C and 0..1000 A: a Modbus vibration of 150 mm/s gave only a LOW signal_poor
# ("out of range"), no vibration_high, and held an active vibration_high "not judged" (equipment
# review, F5). What stays out is a sensor fault: a negative RMS or current, an ADC error word (65535),
# a garbage float. A `limit` detector whose limit lies outside its range is warned about
# (`unreachable_limit`).
# A device's configured `ranges` (`[[devices]] ranges = { vibration_rms = [0, 50] }`, its sensor's
# datasheet span) replace these for that device's channels, in both directions: outside is a fault.
# - vibration_rms: 0..2000 mm/s. ISO 10816 zone D starts at 4.5..18 mm/s (class I..IV); velocity
#   transmitters span 25..1000 mm/s, IEPE velocity sensors about 1270 mm/s peak.
# - bearing_temp: -200..850 °C, the Pt100 span of IEC 60751 (thermocouples read higher, but a bearing
#   has long seized before 850 °C).
# - motor_current: 0..50000 A: large low-voltage motors draw several kA, 6-8 times that while starting.
PHYSICAL_RANGES: Mapping[str, tuple[float, float]] = {
    "hr": (1.0, 350.0),  # bpm
    "pr": (1.0, 350.0),  # bpm, the pulse oximeter's pulse rate
    "spo2": (1.0, 100.0),  # %
    "skin_temp": (0.0, 50.0),  # °C
    "rr": RR_RANGE_S,  # s between beats (350..6 bpm)
    "ecg": (-10.0, 10.0),  # mV
    "vibration_rms": (0.0, 2000.0),  # mm/s
    "bearing_temp": (-200.0, 850.0),  # °C
    "motor_current": (0.0, 50000.0),  # A
}


def unreachable_limit(
    channel: str,
    above: float,
    below: float,
    ranges: Mapping[str, tuple[float, float]] = PHYSICAL_RANGES,
    set_by: Sequence[str] = (),
) -> tuple[str, str] | None:
    """(parameter, why) for a limit on `channel` (`above`, `below`; ±inf for none) that could never
    alarm, the gate making every value beyond it missing; None when both can. `set_by`: the keys that
    set `ranges`' span of the channel (devices' `ranges`), named beside it."""
    low, high = ranges.get(channel, (-np.inf, np.inf))
    keys = "".join(f", {key}" for key in set_by)
    accepts = f"{channel} the quality gate accepts"
    if np.isfinite(above) and above >= high:
        return "above", f"{above:g} is not below the highest {accepts} ({high:g}{keys})"
    if np.isfinite(below) and below <= low:
        return "below", f"{below:g} is not above the lowest {accepts} ({low:g}{keys})"
    return None


_FLOAT64 = np.dtype(np.float64)


def stacked_values(arrays: list[FloatArray], shape: tuple[int, int, int]) -> FloatArray:
    """`np.concatenate(arrays).reshape(shape)` for arrays of one shape (`shape[1:]`): readings' values
    stacked. Native float64, C-contiguous arrays (what the sources make) are joined as bytes: ~50 against
    ~115 ns a reading for 2,001 one-hop ECG readings (micro-benchmark, dtype check included). Any other
    array takes `concatenate`. A copy either way (`concatenate` is a third of `stack`'s cost for (1, C)
    rows)."""
    if [a.dtype for a in arrays].count(_FLOAT64) == len(arrays):  # `is` first, then ==: byte order counts
        try:
            joined = bytearray().join(cast(list[Any], arrays))  # buffers: C-contiguous arrays only
        except (BufferError, TypeError):
            pass
        else:
            return np.frombuffer(joined, np.float64).reshape(shape)
    out: FloatArray = np.concatenate(arrays).reshape(shape)
    return out


@dataclass(frozen=True, slots=True)
class Gated:
    """A reading's values restricted to `channels`, with untrusted samples set to NaN."""

    values: FloatArray  # (n, len(channels))
    quality: Quality  # the reading's flags plus OUT_OF_RANGE if any sample was out of range
    bad_samples: int  # samples (rows) made missing, wholly or in part


class QualityGate:
    def __init__(
        self,
        channels: tuple[str, ...],
        ranges: Mapping[str, tuple[float, float]] = PHYSICAL_RANGES,
        *,
        device_ranges: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
    ):
        self.channels = channels
        # A channel without a known range still has one: the finite numbers. An infinity (a float field
        # a device filled with garbage) is then out of range at no extra cost on the per-reading path.
        largest = float(np.finfo(np.float64).max)
        self._low = np.array([max(ranges.get(c, (-largest, largest))[0], -largest) for c in channels])
        self._high = np.array([min(ranges.get(c, (-largest, largest))[1], largest) for c in channels])
        self._plans: dict[tuple[str, ...], tuple[IntArray | None, bool]] = {}
        # device id -> (low, high) for the devices whose configured `ranges` replace a channel's range
        self._by_device: dict[str, tuple[FloatArray, FloatArray]] = {}
        for device, spans in (device_ranges or {}).items():
            mine = [i for i, c in enumerate(channels) if c in spans]
            if mine:
                low, high = self._low.copy(), self._high.copy()
                for i in mine:
                    low[i], high[i] = spans[channels[i]]
                self._by_device[device] = (low, high)

    def _bounds(self, reading: Reading) -> tuple[FloatArray, FloatArray]:
        """The (low, high) of each channel for `reading`'s device."""
        if self._by_device:
            own = self._by_device.get(reading.device)
            if own is not None:
                return own
        return self._low, self._high

    def apply(self, reading: Reading) -> Gated:
        return Gated(*self.screen(reading))

    def screen(self, reading: Reading) -> tuple[FloatArray, Quality, int]:
        """`apply` without the wrapper object, for the per-reading path: (values, quality, bad rows)."""
        plan = self._plans.get(reading.channels)
        if plan is None:
            plan = self._plan(reading.channels)
        columns, complete = plan
        if columns is None:
            values = reading.values
        elif complete:
            values = reading.values[:, columns]
        else:
            values = self._select(reading, columns)
        quality = reading.quality
        if int(quality) & INVALIDATING_BITS:  # the device itself says the block is untrustworthy
            return np.full_like(values, np.nan), quality, values.shape[0]
        # NaN compares False both ways: "no value" (an SFLOAT NaN/NRes, an empty CSV field) is not inside
        low, high = self._bounds(reading)
        inside = (values >= low) & (values <= high)
        if inside.all():
            return values, quality, 0
        outside = ~inside
        if columns is not None and not complete:  # a channel the reading lacks: missing (blind.py)
            outside[:, columns < 0] = False
            if not outside.any():
                return values, quality, 0
        values = np.where(outside, np.nan, values)  # per value: a bad SpO2 must not hide a good HR
        return values, quality | Quality.OUT_OF_RANGE, int(outside.any(axis=1).sum())

    def screen_many(self, readings: Sequence[Reading]) -> tuple[Screened, list[int], list[int]]:
        """`screen` for many readings at once: (values, quality flags, bad rows), one entry each.

        Readings with the same channels and length (the usual batch) are stacked and checked with a
        few array operations for all of them, and their values come back as one (k, n, C) array
        (entry i its reading's (n, C)); a per-reading check costs more than the check itself.
        Anything else falls back to `screen` one by one, and comes back as a list."""
        first = readings[0]
        channels, n = first.channels, first.values.shape[0]
        count = len(readings)
        arrays = [r.values for r in readings]
        if (
            count < 4
            or [r.channels for r in readings].count(channels) != count  # `is` first, then ==: cheap
            or list(map(len, arrays)).count(n) != count  # equal channels: equal shapes
        ):
            screened = [self.screen(r) for r in readings]
            return [v for v, _, _ in screened], [int(q) for _, q, _ in screened], [b for _, _, b in screened]
        plan = self._plans.get(channels)
        if plan is None:
            plan = self._plan(channels)
        columns, complete = plan
        stacked = stacked_values(arrays, (count, n, len(channels)))
        if columns is None:
            values = stacked
        elif complete:
            values = stacked[:, :, columns]
        else:
            values = np.full((count, n, len(self.channels)), np.nan)
            for j, i in enumerate(columns.tolist()):
                if i >= 0:
                    values[:, :, j] = stacked[:, :, i]
        ok = Quality.OK  # `int(flag)` runs enum.Flag's Python code; almost every reading is OK (a singleton)
        quality = [0 if r.quality is ok else int(r.quality) for r in readings]
        flagged = [i for i, q in enumerate(quality) if q & INVALIDATING_BITS]  # the device's own, before ours
        bad = [0] * count
        low, high = self._low, self._high
        if self._by_device and any(r.device in self._by_device for r in readings):  # (k, 1, C) per reading
            bounds = [self._bounds(r) for r in readings]
            low = np.stack([b[0] for b in bounds])[:, None, :]
            high = np.stack([b[1] for b in bounds])[:, None, :]
        inside = (values >= low) & (values <= high)  # NaN is not inside: see `screen`
        outside = None if inside.all() else ~inside
        if outside is not None and columns is not None and not complete:
            outside[:, :, columns < 0] = False
        if outside is not None and outside.any():
            rows_out: npt.NDArray[np.bool_] = np.asarray(outside.any(axis=2))  # (k, n)
            values = np.where(outside, np.nan, values)  # per value: a bad SpO2 must not hide a good HR
            for i in np.flatnonzero(rows_out.any(axis=1)).tolist():
                quality[i] |= Quality.OUT_OF_RANGE
                bad[i] = int(rows_out[i].sum())
        if flagged:  # the device itself says these blocks are untrustworthy
            values[flagged] = np.nan  # `values` is never a reading's own array: a copy made above
            for i in flagged:
                quality[i] = int(readings[i].quality)
                bad[i] = n
        return values, quality, bad

    def _plan(self, channels: tuple[str, ...]) -> tuple[IntArray | None, bool]:
        """Where each of the gate's channels sits in readings with `channels` (-1: missing; None when
        the tuples are equal), and whether all are present. Planned once per distinct tuple."""
        index = {c: i for i, c in enumerate(channels)}
        columns = None if channels == self.channels else np.array([index.get(c, -1) for c in self.channels])
        plan = (columns, columns is None or bool((columns >= 0).all()))
        self._plans[channels] = plan
        return plan

    def _select(self, reading: Reading, columns: IntArray) -> FloatArray:
        """The reading's columns in this gate's channel order; channels it lacks are NaN."""
        out = np.full((reading.n_samples, len(self.channels)), np.nan)
        for j, i in enumerate(columns.tolist()):
            if i >= 0:
                out[:, j] = reading.values[:, i]
        return out
