"""The simulator source paces on the monotonic clock: a step of the gateway's wall clock (NTP's first
sync, an admin) neither floods the agent with the simulated readings of the skipped days nor silences
the device for as long as a step back (tests/pipeline/test_clock_jumps.py has the pipeline's part)."""

from __future__ import annotations

import asyncio

import pytest
from simhelpers import wearable

from agent.simulation import SimulatorSource

DAY_S = 86_400.0


@pytest.mark.parametrize("step", [3 * DAY_S, -3_600.0], ids=["forward-3d", "back-1h"])
def test_a_step_of_the_wall_clock_does_not_change_the_pace(step: float) -> None:
    mono = [500.0]
    offset = [1_764_000_000.0 - 3 * DAY_S]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        mono[0] += seconds

    async def run() -> None:
        source = SimulatorSource(
            wearable(1, speed=1.0),
            clock=lambda: mono[0] + offset[0],
            monotonic=lambda: mono[0],
            sleep=fake_sleep,
        )
        start_mono = mono[0]
        stepped = False
        async with source:
            async for reading in source:
                simulated = reading.wall_time - source.start_time
                if simulated >= 60 and not stepped:
                    offset[0] += step
                    stepped = True
                # never ahead of real time by more than a sleep's slack: no flood after a forward step
                assert simulated <= mono[0] - start_mono + 0.5
                if simulated >= 120:
                    return

    asyncio.run(run())
    assert max(slept) < 5.0  # no hour-long sleep after a step back
    assert sum(slept) == pytest.approx(120, abs=1.0)
