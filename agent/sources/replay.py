"""Replay source: plays a recording (`agent.sources.record`) back as a device, at `speed` x real time.

The device part of each stream id is replaced by the configured device's id, so a recording of
``bed-7`` can run as any device; channels, values, wall times, periods and quality flags come back
exactly as recorded, and `monotonic` is the gateway's clock at emission. Units recorded with the
readings (a serial HELLO's, a device's `units`), or the replay device's own `units` over them, are
converted to the detectors' as the live source did (`agent.sources.declared_units`). Pacing follows
the recorded wall times like the simulator's: a reading `s` recorded seconds after the first is released no
earlier than `s / speed` real seconds after the first one went out; speed 0 is as fast as possible,
yielding to the event loop every `UNPACED_BATCH` readings. The source ends (StopAsyncIteration) at
the end of the recording, and the daemon then stops pumping that device.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from types import MappingProxyType, TracebackType

from agent.config.schema import DeviceConfig
from agent.errors import ConfigError
from agent.logs import device_name
from agent.readings import Reading, stream_id
from agent.sources.counters import SourceStats
from agent.sources.declared_units import DeclaredUnits
from agent.sources.record import read_recording
from agent.units import ExpectedUnits

MIN_SLEEP_S = 0.02
UNPACED_BATCH = 256


class ReplaySource:
    def __init__(
        self,
        device: DeviceConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        expected_units: ExpectedUnits | None = None,
    ) -> None:
        if device.replay is None:
            raise ConfigError(f"devices.{device.id}.replay", "transport replay needs a [replay] table")
        if not device.replay.path.exists():
            raise ConfigError(
                f"devices.{device.id}.replay.path", f"no such file or folder: {device.replay.path}"
            )
        self.device = device
        self.speed = device.replay.speed
        self._clock = clock
        self._sleep = sleep
        self._readings: Iterator[Reading] | None = None
        self._first: tuple[float, float] | None = None  # (recorded wall time, real clock) of the first
        self._count = 0
        # the recorded units (a HELLO's, a config's) or the config's `units`: converted as live
        self._units = DeclaredUnits(device_name(device.id), dict(device.units), expected_units or {})

    @property
    def stats(self) -> SourceStats:
        return SourceStats(
            connected=self._readings is not None, readings=self._count, errors=MappingProxyType({})
        )

    async def __aenter__(self) -> ReplaySource:
        assert self.device.replay is not None
        self._readings = read_recording(self.device.replay.path, device_name(self.device.id))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._readings = None

    def __aiter__(self) -> ReplaySource:
        return self

    async def __anext__(self) -> Reading:
        if self._readings is None:
            raise StopAsyncIteration
        reading = next(self._readings, None)
        if reading is None:
            self._readings = None
            raise StopAsyncIteration
        if self._first is None:
            self._first = (reading.wall_time, self._clock())
        if self.speed > 0:
            due = self._first[1] + (reading.wall_time - self._first[0]) / self.speed
            ahead = due - self._clock()
            if ahead > MIN_SLEEP_S:
                await self._sleep(ahead)
        elif self._count % UNPACED_BATCH == UNPACED_BATCH - 1:
            await self._sleep(0.0)
        self._count += 1
        name = reading.stream.split("/", 1)[-1]
        own = replace(reading, stream=stream_id(self.device.id, name), monotonic=time.monotonic())
        return self._units.apply(own)
