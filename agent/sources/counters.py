"""Counters a source keeps about its link, read by the daemon for the heartbeat.

Every device source exposes ``stats -> SourceStats``: a frozen snapshot, cheap to take, so the daemon
can copy it into `agent.health.Health.set_counters` whenever it likes without locking. `bad_frames`
counts input the decoder rejected (corrupt frames, bad lines, undecodable GATT values); `gaps` counts
gap episodes (device sequence gaps and reconnects after data had flowed); `reconnects` counts links
re-established after a loss. `errors` breaks link failures down by kind (e.g. ``"out_of_slots"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class RrSeen:
    """A device's measure at one moment (monotonic times), as its source hands it to the daemon
    (`agent.sources.rr_validity`)."""

    bad_s: float = 0.0  # seconds of the last minute its RR intervals were mostly impossible
    last_bad: float = float("-inf")  # the latest notification where they were
    last_rr: float = float("-inf")  # the latest notification with RR intervals at all
    first_rr: float = float("-inf")  # the first one since the source started (its measure is this old)


@dataclass(frozen=True, slots=True)
class SourceStats:
    connected: bool = False
    readings: int = 0
    bytes_in: int = 0  # bytes received from the device (serial) or notification payload bytes (BLE)
    bad_frames: int = 0
    gaps: int = 0
    reconnects: int = 0
    errors: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    # BLE: gateway monotonic time each profile that notifies all the time was last heard (since the link
    # first came up, if never), for the daemon's profile_silent alarm
    profiles_heard: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    # BLE: gateway monotonic time the battery level last came (read at connect or notified), for the
    # device_lost text of a device that sends nothing else
    battery_heard: float | None = None
    # BLE heart rate: how much of the last minute its RR intervals were mostly impossible, for rr_invalid
    rr: RrSeen = field(default_factory=RrSeen)


@runtime_checkable
class HasStats(Protocol):
    @property
    def stats(self) -> SourceStats: ...


def source_stats(source: object) -> SourceStats | None:
    """The counters of `source`, or None for a source that keeps none (the simulator)."""
    return source.stats if isinstance(source, HasStats) else None
