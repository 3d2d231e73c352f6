"""What the heartbeat reports: per-device last-seen, rate, gaps and bad frames, plus process figures.

Sources report readings and decoder counters here; the daemon builds a `Heartbeat` from it at each
interval. CPU and memory come from /proc (Linux), the board temperature from the thermal zone
where one is readable; nothing needs psutil.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent.events import DeviceHealth
from agent.readings import Quality, Reading


@dataclass(slots=True)
class DeviceStats:
    pseudonym: str
    lost_after_s: float
    last_seen_wall: float | None = None
    last_seen_monotonic: float | None = None
    readings_since_beat: int = 0
    gaps: int = 0
    bad_frames: int = 0
    connected: bool = False
    since_monotonic: float = field(default_factory=time.monotonic)


class Health:
    def __init__(self) -> None:
        self.devices: dict[str, DeviceStats] = {}
        self._started = time.monotonic()
        self._last_beat = self._started
        self._last_cpu = _cpu_seconds()

    def add_device(self, device_id: str, pseudonym: str, lost_after_s: float) -> None:
        self.devices[device_id] = DeviceStats(pseudonym, lost_after_s)

    def saw(self, reading: Reading) -> None:
        stats = self.devices.get(reading.device)
        if stats is None:
            return
        stats.last_seen_wall = reading.end_time
        stats.last_seen_monotonic = reading.monotonic
        stats.readings_since_beat += 1
        stats.connected = True
        if reading.quality & Quality.GAP:
            stats.gaps += 1

    def set_counters(
        self,
        device_id: str,
        *,
        bad_frames: int | None = None,
        gaps: int | None = None,
        connected: bool | None = None,
    ) -> None:
        """Counters kept by a source's decoder or driver, copied in as they change."""
        stats = self.devices[device_id]
        if bad_frames is not None:
            stats.bad_frames = bad_frames
        if gaps is not None:
            stats.gaps = gaps
        if connected is not None:
            stats.connected = connected

    def silence_s(self, device_id: str, now_monotonic: float) -> float:
        """Seconds since the device last delivered anything (since start if never)."""
        stats = self.devices[device_id]
        last = stats.last_seen_monotonic if stats.last_seen_monotonic is not None else stats.since_monotonic
        return max(0.0, now_monotonic - last)

    def uptime_s(self) -> float:
        return time.monotonic() - self._started

    def device_report(self) -> tuple[DeviceHealth, ...]:
        """Per-device health since the previous report (rates reset on each call)."""
        now = time.monotonic()
        interval = max(now - self._last_beat, 1e-6)
        self._last_beat = now
        report = []
        for stats in self.devices.values():
            report.append(
                DeviceHealth(
                    device=stats.pseudonym,
                    last_seen=stats.last_seen_wall,
                    rate_hz=stats.readings_since_beat / interval,
                    gaps=stats.gaps,
                    bad_frames=stats.bad_frames,
                    connected=stats.connected,
                )
            )
            stats.readings_since_beat = 0
        return tuple(report)

    def cpu_percent(self) -> float:
        """Process CPU use since the previous call, in % of one core."""
        now = _cpu_seconds()
        before, self._last_cpu = self._last_cpu, now
        elapsed = now[0] - before[0]
        return 100.0 * (now[1] - before[1]) / elapsed if elapsed > 0 else 0.0


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
