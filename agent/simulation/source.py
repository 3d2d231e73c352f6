"""The simulator as a source: plays a device's generated readings at `speed` times real time, forever.

Generators produce fixed 60 s chunks of readings in time order, so an endless run holds one chunk at a
time. The source paces against a monotonic clock (`time.monotonic`; the wall `clock` only sets
`start_time`, so a step of the gateway's wall clock neither floods the agent with the readings of the
skipped hours nor silences the device for as long as a step back): a reading `s` simulated seconds after
`start_time` is released no earlier than `s / speed` real seconds after the first one, and it only sleeps
when it is more than
`MIN_SLEEP_S` ahead, so at high speed readings go out in batches between sleeps instead of one sleep per
sample. Speed 0 means as fast as possible (yielding to the event loop every `UNPACED_BATCH` readings, as a
paced source does whenever it falls behind its speed).
`simulate` runs the same generator without sleeping, for tests and evaluation, so both deliver the same
readings; only `monotonic` differs (gateway monotonic time at emission for the source, simulated seconds
for `simulate`).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace
from types import TracebackType
from typing import Protocol

from agent.config.schema import DeviceConfig
from agent.readings import Reading
from agent.simulation.episodes import GroundTruth, validate_simulator
from agent.simulation.equipment import EquipmentGenerator
from agent.simulation.wearable import WearableGenerator

MIN_SLEEP_S = 0.02
UNPACED_BATCH = 256


class ChunkGenerator(Protocol):
    """What `SimulatorSource` needs from a device model."""

    chunk_s: float
    ground_truth: list[GroundTruth]

    def chunk(self, index: int) -> list[Reading]: ...


def make_generator(device: DeviceConfig, start_time: float) -> ChunkGenerator:
    """The generator for `device`'s kind; raises `ConfigError` for a bad simulator section."""
    validate_simulator(device)
    if device.kind == "equipment":
        return EquipmentGenerator(device, start_time)
    return WearableGenerator(device, start_time)


def simulate(
    device: DeviceConfig, duration_s: float, start_time: float
) -> tuple[list[Reading], list[GroundTruth]]:
    """All readings of the first `duration_s` simulated seconds, and the ground truth of that span.

    Ground-truth episodes starting after the span are left out; those running past its end are cut there.
    """
    generator = make_generator(device, start_time)
    end = start_time + duration_s
    readings: list[Reading] = []
    for index in range(math.ceil(duration_s / generator.chunk_s)):
        readings.extend(r for r in generator.chunk(index) if r.monotonic < duration_s)  # simulated s
    assert device.simulator is not None  # validated by make_generator
    # decide in simulated seconds: start_time + start_s can round onto the end of the span
    episodes = device.simulator.episodes
    truth = [
        replace(g, end=min(g.end, end))
        for g, e in zip(generator.ground_truth, episodes, strict=True)
        if e.start_s < duration_s
    ]
    return readings, truth


class SimulatorSource:
    """Async context manager and async iterator of the readings of one simulated device."""

    def __init__(
        self,
        device: DeviceConfig,
        *,
        start_time: float | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        validate_simulator(device)
        assert device.simulator is not None  # checked just above
        self.device = device
        self.speed = device.simulator.speed
        self.start_time = clock() if start_time is None else start_time
        # The pacing clock: monotonic, unless a test gives one clock for both (its simulated time).
        self._pace_clock = monotonic or (time.monotonic if clock is time.time else clock)
        self._sleep = sleep
        self._generator = make_generator(device, self.start_time)
        self._pending: deque[Reading] = deque()
        self._next_chunk = 0
        self._real_start: float | None = None
        self._emitted = 0
        self._closed = False

    @property
    def ground_truth(self) -> list[GroundTruth]:
        """Every configured episode in wall time (including those not reached yet)."""
        return list(self._generator.ground_truth)

    async def __aenter__(self) -> SimulatorSource:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        self._pending.clear()

    def __aiter__(self) -> SimulatorSource:
        return self

    async def __anext__(self) -> Reading:
        if self._closed:
            raise StopAsyncIteration
        while not self._pending:  # a chunk can be empty (a dropout covering it)
            self._pending.extend(self._generator.chunk(self._next_chunk))
            self._next_chunk += 1
        reading = self._pending.popleft()
        if self._real_start is None:
            self._real_start = self._pace_clock()
        slept = False
        if self.speed > 0:
            due = self._real_start + (reading.wall_time - self.start_time) / self.speed
            ahead = due - self._pace_clock()
            if ahead > MIN_SLEEP_S:
                await self._sleep(ahead)
                slept = True
        if not slept and self._emitted % UNPACED_BATCH == UNPACED_BATCH - 1:
            # Unpaced, or paced but behind (generating slower than `speed`: 2,000 episodes at speed
            # 100): without this the source never suspends and heartbeats, the uplink, the watchdog
            # and SIGTERM wait for it (offline-clinic audit, finding 5).
            await self._sleep(0.0)
        self._emitted += 1
        if self._closed:  # closed while we slept
            raise StopAsyncIteration
        return replace(reading, monotonic=time.monotonic())
