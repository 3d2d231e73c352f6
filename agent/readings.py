"""Readings and scores: what flows from sources through the pipeline to the alarm machine.

A `Reading` is a block of one or more evenly spaced samples of one stream, so a 250 Hz ECG source
hands over one object per device frame rather than one per sample; vitals at 1 Hz are blocks of one.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class Quality(enum.IntFlag):
    """Signal-quality flags carried by a reading. Those in `INVALIDATING` make its samples unfit for
    physiological alarms; GAP and LOW_BATTERY only inform (see `INVALIDATING`)."""

    OK = 0
    NO_CONTACT = enum.auto()  # BLE sensor-contact bit cleared, electrode off
    OUT_OF_RANGE = enum.auto()  # value outside what the sensor can physically report
    GAP = enum.auto()  # samples missing before this block (sequence gap, dropout)
    MOTION = enum.auto()  # accelerometer says the wearer is moving
    ARTIFACT = enum.auto()  # RR artifact, PLX "questionable" flag, saturated ADC
    LOW_BATTERY = enum.auto()
    DEVICE_FAULT = enum.auto()  # device-side fault reported by the device itself

    def describe(self) -> str:
        """Readable list of the set flags, e.g. ``"no_contact+motion"``; ``"ok"`` when none."""
        names = [flag.name.lower() for flag in Quality if flag and flag in self and flag.name]
        return "+".join(names) or "ok"


# The flags that say a reading's own samples are not valid: the quality gate makes them missing and a hop
# that has them is no verdict for physiological alarms. GAP (samples missing *before* this block) and
# LOW_BATTERY (a strap below 15 % may run for hours more with good data) say nothing about these samples,
# so they are information only: the values count and alarm, and battery_low is still raised from the flag.
# Until 2026-11-30 every flag invalidated: from 15 % battery nothing physiological could alarm, an active
# tachycardia ended, and a GAP every few readings silently kept a 10 s episode from confirming (clinical
# review, findings 2 and 4). MOTION stays invalidating (a moving wearer's HR/SpO2 are often artefact).
INVALIDATING = (
    Quality.NO_CONTACT | Quality.OUT_OF_RANGE | Quality.MOTION | Quality.ARTIFACT | Quality.DEVICE_FAULT
)
# The same as a plain int, for the per-reading paths: an IntFlag's `&` runs enum code (~1 µs a reading,
# +10 % on the vitals pipeline); an int's is ~30 ns.
INVALIDATING_BITS = int(INVALIDATING)
# What makes a whole hop no verdict for the physiological rules of its stream: the device's own flags.
# OUT_OF_RANGE is left out: the quality gate sets it for a value outside its channel's range and makes
# that value missing, which already takes the verdict from the rules on that channel; a rule on another
# channel must keep its own (an oximeter's SpO2 0, "no value", must not hide a tachycardia on a good HR).
VOIDS_HOP_BITS = int(INVALIDATING & ~Quality.OUT_OF_RANGE)

# Seconds between beats a heart can give (350..6 bpm; a sinus pause or AV block of 3-10 s is real): the
# quality gate's range for "rr" (agent.pipeline.quality.PHYSICAL_RANGES), and what the BLE source keeps
# of a notification's RR intervals (0 ticks and 65535 are none, and must not move the others' times).
RR_RANGE_S = (0.17, 10.0)


# Device stream ids a per-reading memo (stream id -> its device, or its stream name) keeps: far more than a
# gateway has; past it (ids made up at run time, e.g. serial HELLOs) the memo starts over, not grows.
MAX_STREAM_IDS = 100_000


def stream_id(device: str, stream: str) -> str:
    """The id of one stream of one device: ``"{device}/{stream}"``."""
    return f"{device}/{stream}"


@dataclass(frozen=True, slots=True)
class Reading:
    """`values[i, j]` is channel `channels[j]` at `wall_time + i * period_s`."""

    stream: str
    channels: tuple[str, ...]
    values: FloatArray
    wall_time: float  # Unix seconds of the first sample (device or gateway clock)
    monotonic: float  # gateway monotonic seconds at arrival, for rates and gaps
    period_s: float = 0.0  # spacing of samples in the block; a single sample's: the spacing its source
    # declares for the stream (a serial HELLO's rate), or 0
    quality: Quality = Quality.OK
    # The unit each channel's values are in, as its source knows it ("" for one it does not), or () for
    # none known: a serial HELLO's, the config's `units`, a recording's (agent.sources.declared_units).
    # A recording keeps them, so a replay converts as the device's own source would.
    units: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.values.ndim != 2 or self.values.shape[1] != len(self.channels):
            raise ValueError(
                f"{self.stream}: values must be (samples, {len(self.channels)} channels), "
                f"got shape {self.values.shape}"
            )
        if self.units and len(self.units) != len(self.channels):
            raise ValueError(f"{self.stream}: {len(self.units)} units for {len(self.channels)} channels")
        if self.values.shape[0] > 1 and not self.period_s > 0:
            raise ValueError(f"{self.stream}: a block of {self.values.shape[0]} samples needs period_s > 0")
        if not math.isfinite(self.wall_time):
            raise ValueError(f"{self.stream}: wall_time must be finite")

    @property
    def device(self) -> str:
        return self.stream.split("/", 1)[0]

    @property
    def n_samples(self) -> int:
        return int(self.values.shape[0])

    @property
    def end_time(self) -> float:
        """Wall time of the last sample in the block."""
        return self.wall_time + (self.n_samples - 1) * self.period_s

    @classmethod
    def single(
        cls,
        stream: str,
        sample: Mapping[str, float],
        wall_time: float,
        monotonic: float,
        quality: Quality = Quality.OK,
    ) -> Reading:
        """One sample given as ``{channel: value}``."""
        channels = tuple(sample)
        values = np.array([[sample[c] for c in channels]], dtype=np.float64)
        return cls(stream, channels, values, wall_time, monotonic, 0.0, quality)


@dataclass(frozen=True, slots=True)
class Score:
    """One detector's verdict on one stream at one time, with why (per-channel contributions)."""

    stream: str
    detector: str
    value: float
    threshold: float
    time: float
    contributions: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if math.isnan(self.threshold):
            raise ValueError(f"{self.detector} on {self.stream}: threshold is NaN")

    @property
    def exceeded(self) -> bool:
        return self.value > self.threshold

    def top_channels(self, n: int = 3) -> tuple[tuple[str, float], ...]:
        """The `n` channels that contributed most, largest first."""
        ranked = sorted(self.contributions.items(), key=lambda kv: kv[1], reverse=True)
        return tuple(ranked[:n])
