"""The simulator as an async source: same readings as `simulate`, paced by speed, closable."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from simhelpers import START, wearable

from agent.readings import Reading
from agent.simulation import SimulatorSource, simulate


def key(r: Reading) -> tuple[object, ...]:
    return (r.stream, r.wall_time, int(r.quality), r.period_s, r.values.tobytes())


def test_source_at_speed_100_delivers_what_simulate_gives_and_is_paced() -> None:
    device = wearable(4, ("tachycardia", 20, 40), speed=100.0)
    expected, truth = simulate(device, 300, START)

    async def run() -> tuple[list[Reading], float]:
        got: list[Reading] = []
        t0 = time.monotonic()
        async with SimulatorSource(device, start_time=START) as source:
            assert [g.condition for g in source.ground_truth] == [g.condition for g in truth]
            async for reading in source:
                if reading.wall_time >= START + 300:
                    break
                got.append(reading)
        return got, time.monotonic() - t0

    got, elapsed = asyncio.run(run())
    assert [key(r) for r in got] == [key(r) for r in expected]
    assert 2.0 <= elapsed < 20.0  # 300 simulated s at 100x is 3 real s; only a rough bound on a busy machine
    mono = np.array([r.monotonic for r in got])
    assert np.all(np.diff(mono) >= 0)


def test_pacing_with_injected_clock_and_sleep() -> None:
    now = [1000.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    async def run() -> list[Reading]:
        out: list[Reading] = []
        source = SimulatorSource(wearable(1, speed=10.0), clock=lambda: now[0], sleep=fake_sleep)
        async with source:
            assert source.start_time == 1000.0  # defaults to the clock
            async for reading in source:
                out.append(reading)
                # the source never runs ahead of simulated time / speed by more than a sleep's slack
                assert reading.wall_time - 1000.0 <= (now[0] - 1000.0) * 10.0 + 0.5
                if reading.wall_time >= 1000.0 + 120:
                    break
        return out

    out = asyncio.run(run())
    assert out[0].wall_time == 1000.0
    assert abs(sum(slept) - 12.0) < 0.5  # 120 simulated s at 10x
    assert len(slept) < 400  # batched, not one sleep per reading


def test_a_paced_source_behind_its_speed_still_gives_the_loop_its_turns() -> None:
    """Generating slower than `speed` (the pacing clock always past the due time): before, the source
    never suspended, so heartbeats, the uplink and SIGTERM waited for it."""
    ticks = 0

    async def other_task() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    async def run() -> int:
        ticker = asyncio.create_task(other_task())
        await asyncio.sleep(0)
        late = iter(range(10**9))  # every look at the pacing clock is a second later: always behind
        source = SimulatorSource(
            wearable(1, speed=10.0), start_time=START, clock=lambda: START + next(late) * 1.0
        )
        n = 0
        async with source:
            async for _ in source:
                n += 1
                if n == 4 * 256:
                    break
        ticker.cancel()
        return ticks

    assert asyncio.run(run()) >= 3  # about one turn per UNPACED_BATCH readings


def test_unpaced_speed_zero_and_close_stops_iteration() -> None:
    async def run() -> int:
        n = 0
        async with SimulatorSource(wearable(1, speed=0.0), start_time=START) as source:
            async for _ in source:
                n += 1
                if n == 2000:
                    break
        async for _ in source:  # closed: iteration ends at once
            n += 1
        return n

    assert asyncio.run(run()) == 2000


def test_source_skips_chunks_lost_to_a_long_dropout() -> None:
    device = wearable(1, ("dropout", 50, 200), speed=0.0)

    async def run() -> list[Reading]:
        out: list[Reading] = []
        async with SimulatorSource(device, start_time=START) as source:
            async for reading in source:
                out.append(reading)
                if reading.wall_time >= START + 300:
                    break
        return out

    times = np.array([r.wall_time - START for r in asyncio.run(run())])
    assert not np.any((times >= 50) & (times < 250))
    assert times.max() >= 300 and np.all(np.diff(times) >= 0)
