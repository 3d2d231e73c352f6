"""What the heartbeat reports: per-device last-seen, rate, gaps, bad frames and errors, plus process figures.

Readings are counted here as the pipeline takes them; a source's own counters (`SourceStats`: bad
frames, reconnects, errors by kind, whether its link is up) are copied in by the daemon's monitor
every second and before each heartbeat. A source that keeps such counters is the only judge of
`connected`: a reading still queued from before an unplug must not mark the device connected again.
The daemon may reopen a failed source, which starts from zero: the counters of earlier sources are
kept as a base, so the heartbeat's counts only grow. The daemon builds a `Heartbeat` from all this at
each interval. CPU and memory come from /proc (Linux), the board temperature from the thermal zone
where one is readable; nothing needs psutil.

Rate. `rate_hz` is readings per second of the time the device was connected within the interval, so
a device reconnected 7 s before a heartbeat reads its real rate, not 7 readings spread over the whole
interval. Connection changes are seen when the counters are copied (once a second) and placed more
closely by the readings' arrival times (`DeviceStats.set_connected`). The time is at least
`MIN_RATE_SPAN_S` (or the interval, if shorter), so one reading just after a reconnect is not read as
a burst.
"""

from __future__ import annotations

import os
import resource
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent.detectors.spo2 import DesaturationDetector
from agent.events import DeviceHealth
from agent.readings import MAX_STREAM_IDS, Quality, Reading
from agent.sources.counters import RrSeen, SourceStats

if TYPE_CHECKING:
    from agent.pipeline.stream import StreamPipeline

MIN_RATE_SPAN_S = 1.0  # the monitor's period: connection changes are known within this


@dataclass(slots=True)
class DeviceStats:
    pseudonym: str
    lost_after_s: float
    last_seen_wall: float | None = None
    last_seen_monotonic: float | None = None
    readings_since_beat: int = 0
    gaps: int = 0
    bad_frames: int = 0
    reconnects: int = 0
    connected: bool = False
    since_monotonic: float = field(default_factory=time.monotonic)
    link_reported: bool = False  # the open source keeps its own `connected`: readings do not set it
    sources_opened: int = 0
    bad_frames_before: int = 0  # of sources closed earlier in this session
    reconnects_before: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # by kind, non-zero only, since start
    errors_before: Counter[str] = field(default_factory=Counter)  # of sources closed earlier
    desaturation_index_per_h: float | None = None
    beats_stream: str | None = None  # the RR stream made of the beats found in its ECG ([devices.beats])
    beats_since_beat: int = 0  # intervals on it since the last heartbeat
    up_s: float = 0.0  # connected seconds of the current interval, up to `up_since`
    up_since: float | None = None  # monotonic start of the current connected stretch (or interval)
    seen_up_at: float = 0.0  # when the link was last seen up
    down_at: float = field(default_factory=time.monotonic)  # when it was last seen not connected
    first_after_down: float | None = None  # arrival of the first reading since then
    profiles_heard: dict[str, float] = field(default_factory=dict)  # BLE: `SourceStats.profiles_heard`
    battery_heard: float | None = None  # BLE: `SourceStats.battery_heard`
    rr: RrSeen = field(default_factory=RrSeen)  # BLE: `SourceStats.rr`, as of the last copy
    # BLE profiles whose restored profile_silent episode is still open: profile -> (monotonic start of
    # the silence, the time the open source first reported for it or None). See `resume_profile_silence`.
    profiles_resumed: dict[str, tuple[float, float | None]] = field(default_factory=dict)

    def set_connected(self, connected: bool, now: float) -> None:
        """Follow the link state, accounting connected time for the rate. The copy that shows a change
        comes up to a second late, so the readings' arrival times place it: a reading that arrived
        after the link was seen down came over the new link (the stretch starts at the first such),
        and a lost link was up until its last reading (or the last copy that saw it up)."""
        if connected:
            if self.up_since is None:
                self.up_since = min(now, self.first_after_down or now)
            self.seen_up_at = now
        elif self.up_since is not None:
            last = max(self.seen_up_at, self.last_seen_monotonic or 0.0, self.up_since)
            self.up_s += min(last, now) - self.up_since
            self.up_since = None
            self.down_at = now
            self.first_after_down = None
        self.connected = connected

    def arrived(self, monotonic: float) -> None:
        """A reading arrived (at the source) at `monotonic` while the link is not known to be up."""
        if self.first_after_down is None and monotonic >= self.down_at:
            self.first_after_down = monotonic

    def connected_s(self, now: float) -> float:
        """Seconds connected in the current interval, up to `now`."""
        return self.up_s + (now - self.up_since if self.up_since is not None else 0.0)

    def new_interval(self, now: float) -> None:
        self.readings_since_beat = 0
        self.beats_since_beat = 0
        self.up_s = 0.0
        if self.up_since is not None:
            self.up_since = now
        if self.first_after_down is not None:
            self.first_after_down = max(self.first_after_down, now)


class Health:
    def __init__(self, *, vitals: bool = True) -> None:
        """`vitals` (`privacy.vitals_in_heartbeat`): whether device reports carry the health-derived
        figures (beats per minute, the desaturation index) and count readings that come one per heart
        beat (RR intervals) in `rate_hz`, which would then follow the heart rate."""
        self.vitals = vitals
        self.devices: dict[str, DeviceStats] = {}
        self._device_of: dict[str, str] = {}  # device stream id -> device id, for `saw`
        self._started = time.monotonic()
        self._last_beat = self._started
        self._last_cpu = _cpu_seconds()

    def add_device(
        self, device_id: str, pseudonym: str, lost_after_s: float, beats_stream: str | None = None
    ) -> None:
        self.devices[device_id] = DeviceStats(pseudonym, lost_after_s, beats_stream=beats_stream)

    def saw(self, reading: Reading) -> None:
        device = self._device_of.get(reading.stream)
        if device is None:  # a device stream's first reading: `Reading.device` splits the id each time
            if len(self._device_of) >= MAX_STREAM_IDS:
                self._device_of.clear()
            device = self._device_of[reading.stream] = reading.device
        stats = self.devices.get(device)
        if stats is None:
            return
        stats.last_seen_wall = reading.end_time
        stats.last_seen_monotonic = reading.monotonic
        if self.vitals or reading.channels[0] != "rr":  # one RR reading per beat: a heart rate
            stats.readings_since_beat += 1
        if stats.up_since is None:
            stats.arrived(reading.monotonic)
            if not stats.link_reported:
                stats.set_connected(True, time.monotonic())
        if reading.quality & Quality.GAP:
            stats.gaps += 1
        if reading.stream == stats.beats_stream and reading.channels[0] == "rr" and reading.values[0, 0] > 0:
            stats.beats_since_beat += 1  # an interval found (not a "no value" or a pause reading)

    def set_counters(
        self,
        device_id: str,
        *,
        bad_frames: int | None = None,
        gaps: int | None = None,
        connected: bool | None = None,
        reconnects: int | None = None,
    ) -> None:
        """Counters kept by a source's decoder or driver, copied in as they change."""
        stats = self.devices[device_id]
        if bad_frames is not None:
            stats.bad_frames = bad_frames
        if gaps is not None:
            stats.gaps = gaps
        if connected is not None:
            stats.set_connected(connected, time.monotonic())
        if reconnects is not None:
            stats.reconnects = reconnects

    def source_opened(self, device_id: str) -> None:
        """The daemon opened (or, after a failure, reopened: a reconnect) the device's source."""
        stats = self.devices[device_id]
        if stats.sources_opened:
            stats.reconnects_before += 1
        stats.sources_opened += 1
        stats.reconnects = stats.reconnects_before

    def copy_source_stats(self, device_id: str, source: SourceStats | None) -> None:
        """Take an open source's own counters; None (the simulator keeps none): open means connected."""
        stats = self.devices[device_id]
        now = time.monotonic()
        if source is None:
            stats.link_reported = False
            stats.set_connected(True, now)
            return
        stats.link_reported = True
        stats.set_connected(source.connected, now)
        stats.bad_frames = stats.bad_frames_before + source.bad_frames
        stats.reconnects = stats.reconnects_before + source.reconnects
        errors = stats.errors_before + Counter(source.errors)  # `+` keeps positive counts only
        stats.errors = dict(sorted(errors.items()))
        stats.profiles_heard = dict(source.profiles_heard)
        stats.battery_heard = source.battery_heard
        stats.rr = source.rr
        for profile, (origin, link_up) in list(stats.profiles_resumed.items()):
            heard = stats.profiles_heard.get(profile)
            if heard is None:
                continue
            if link_up is None:
                stats.profiles_resumed[profile] = (origin, heard)  # the link's start, not a notification
            elif heard != link_up:
                del stats.profiles_resumed[profile]  # a notification: the profile is heard again

    def source_closed(self, device_id: str) -> None:
        """The device's source ended or failed (copy its last counters first): not connected, and its
        counts become the base of the next source's."""
        stats = self.devices[device_id]
        stats.set_connected(False, time.monotonic())
        stats.link_reported = False
        stats.bad_frames_before = stats.bad_frames
        stats.reconnects_before = stats.reconnects
        stats.errors_before = Counter(stats.errors)
        for profile, (origin, _) in stats.profiles_resumed.items():
            stats.profiles_resumed[profile] = (origin, None)  # the next source's link starts anew

    def set_desaturation_indices(self, by_device: Mapping[str, float]) -> None:
        """Oxygen desaturation index (events/h) per device id; devices left out carry none."""
        for device_id, stats in self.devices.items():
            stats.desaturation_index_per_h = by_device.get(device_id)

    def resume_silence(self, device_id: str, silent_s: float, now_monotonic: float) -> None:
        """The device has been silent `silent_s` already (a restored device_lost episode: see
        `agent.resumed_silence`): its silence goes on from there, not from this session's start."""
        stats = self.devices.get(device_id)
        if stats is not None and stats.last_seen_monotonic is None:
            stats.since_monotonic = min(stats.since_monotonic, now_monotonic - silent_s)

    def silent_since(self, device_id: str) -> float:
        """The monotonic time the device's silence began: its last reading, or the session's start if
        none came (or the start of a silence resumed from before it)."""
        stats = self.devices[device_id]
        return stats.last_seen_monotonic if stats.last_seen_monotonic is not None else stats.since_monotonic

    def resume_profile_silence(
        self, device_id: str, profile: str, silent_s: float, now_monotonic: float
    ) -> None:
        """The BLE profile has been silent `silent_s` already (a restored profile_silent episode). A new
        source reports a silent profile as heard when its link came up (its grace before counting), so
        that first time is not taken for a notification: the silence goes on until the time changes."""
        stats = self.devices.get(device_id)
        if stats is not None:
            stats.profiles_resumed[profile] = (now_monotonic - silent_s, None)

    def silence_s(self, device_id: str, now_monotonic: float) -> float:
        """Seconds since the device last delivered anything (since start if never)."""
        return max(0.0, now_monotonic - self.silent_since(device_id))

    def profile_silence_s(self, device_id: str, profile: str, now_monotonic: float) -> float:
        """Seconds a BLE profile that notifies all the time has been silent while the device delivers
        readings; 0 while the whole device is silent for its `lost_after_s` (that is device_lost), or
        when the source has not subscribed to the profile."""
        stats = self.devices[device_id]
        resumed = stats.profiles_resumed.get(profile)
        heard = resumed[0] if resumed is not None else stats.profiles_heard.get(profile)
        if heard is None or self.silence_s(device_id, now_monotonic) >= stats.lost_after_s:
            return 0.0
        return max(0.0, now_monotonic - heard)

    def only_battery(self, device_id: str, now_monotonic: float) -> bool:
        """The battery level came from the device during its current silence (a BLE device whose
        measurement profiles send nothing still answers the battery read and may notify it)."""
        heard = self.devices[device_id].battery_heard
        return heard is not None and heard >= now_monotonic - self.silence_s(device_id, now_monotonic)

    def rr_seen(self, device_id: str) -> RrSeen:
        """How much of the last minute the device's RR intervals were mostly impossible, as of the last
        copy of its source's counters (`agent.sources.rr_validity`)."""
        return self.devices[device_id].rr

    def uptime_s(self) -> float:
        return time.monotonic() - self._started

    def device_report(self, reset: bool = True) -> tuple[DeviceHealth, ...]:
        """Per-device health since the previous report; the rates restart from here unless not `reset`
        (a look between heartbeats: `edge-agent status` before the first one)."""
        now = time.monotonic()
        interval = max(now - self._last_beat, 1e-6)
        if reset:
            self._last_beat = now
        report = []
        for stats in self.devices.values():
            span = max(stats.connected_s(now), min(interval, MIN_RATE_SPAN_S))
            report.append(
                DeviceHealth(
                    device=stats.pseudonym,
                    last_seen=stats.last_seen_wall,
                    rate_hz=stats.readings_since_beat / span,
                    gaps=stats.gaps,
                    bad_frames=stats.bad_frames,
                    connected=stats.connected,
                    reconnects=stats.reconnects,
                    errors=dict(stats.errors),
                    desaturation_index_per_h=stats.desaturation_index_per_h if self.vitals else None,
                    beats_per_min=60.0 * stats.beats_since_beat / span
                    if stats.beats_stream and self.vitals
                    else None,
                )
            )
            if reset:
                stats.new_interval(now)
        return tuple(report)

    def cpu_percent(self, reset: bool = True) -> float:
        """Process CPU use since the previous call (that reset), in % of one core."""
        now = _cpu_seconds()
        before = self._last_cpu
        if reset:
            self._last_cpu = now
        elapsed = now[0] - before[0]
        return 100.0 * (now[1] - before[1]) / elapsed if elapsed > 0 else 0.0


def desaturation_indices(streams: Iterable[StreamPipeline]) -> dict[str, float]:
    """ODI (events per scored hour) per device id, from every spo2_desaturation detector of the
    pipeline; where two detectors score the same device, the first configured one wins. Devices no
    such detector has scored yet are left out."""
    by_device: dict[str, float] = {}
    for stream in streams:
        for watch in stream.watches:
            if isinstance(watch.detector, DesaturationDetector):
                odi = watch.detector.desaturation_indices(stream.windows.streams)
                for stream_id, value in odi.items():
                    by_device.setdefault(stream_id.split("/", 1)[0], value)
    return by_device


def _cpu_seconds() -> tuple[float, float]:
    """(monotonic time, CPU seconds used by this process so far)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.monotonic(), usage.ru_utime + usage.ru_stime


def rss_bytes() -> int | None:
    """Current resident set size from /proc (peak RSS from getrusage as a fallback)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def board_temperature_c() -> float | None:
    """The SoC temperature on a Raspberry Pi / Jetson / most Linux boards, None where not readable."""
    try:
        return int(Path("/sys/class/thermal/thermal_zone0/temp").read_text()) / 1000.0
    except (OSError, ValueError):
        return None
