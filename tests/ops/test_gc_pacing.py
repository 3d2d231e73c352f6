"""The daemon's GC pacer: it freezes survivors when due, and its hourly full pass reclaims frozen cycles."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_session import session

from agent.gc_pacing import CollectorPacer
from agent.simulation import simulate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Node:
    """A container in a reference cycle: only the cyclic collector can free it."""

    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    gc.unfreeze()  # another test in this process (a benchmark's pacer) may have frozen objects
    yield
    gc.unfreeze()  # the pacer changes process-wide state; leave the test process as it was
    gc.collect()


def make_cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_nothing_happens_before_the_first_settle_is_due() -> None:
    clock = Clock()
    pacer = CollectorPacer(settle_every_s=30, full_every_s=3600, clock=clock)
    clock.now += 29.9
    assert pacer.tick() is False
    assert gc.get_freeze_count() == 0


def test_a_settle_freezes_the_survivors_and_is_rescheduled() -> None:
    clock = Clock()
    pacer = CollectorPacer(settle_every_s=30, full_every_s=3600, clock=clock)
    kept = [Node() for _ in range(1000)]
    clock.now += 30
    assert pacer.tick() is True
    assert gc.get_freeze_count() >= len(kept)
    assert pacer.last_pause_ms > 0 and pacer.max_pause_ms >= pacer.last_pause_ms
    assert pacer.tick() is False  # the next one is 30 s away
    clock.now += 30
    assert pacer.tick() is True


def test_garbage_present_at_a_settle_is_collected_not_frozen() -> None:
    clock = Clock()
    pacer = CollectorPacer(clock=clock)
    dead = make_cycle()
    pacer.settle()
    assert dead() is None


def test_a_cycle_that_dies_while_frozen_waits_for_the_full_pass() -> None:
    clock = Clock()
    pacer = CollectorPacer(settle_every_s=30, full_every_s=3600, clock=clock)
    holder = [Node()]
    holder[0].other = Node()
    holder[0].other.other = holder[0]
    ref = weakref.ref(holder[0])
    pacer.settle()  # the live cycle is frozen
    holder.clear()  # ... and becomes garbage while frozen
    clock.now += 30
    pacer.tick()  # a settle does not look at frozen objects
    gc.collect()  # nor does any automatic or explicit collection
    assert ref() is not None
    clock.now += 3600
    assert pacer.tick() is True  # the full pass is due
    assert ref() is None
    assert gc.get_freeze_count() > 0  # and everything alive is frozen again


class CountingPacer(CollectorPacer):
    def __init__(self) -> None:
        super().__init__(settle_every_s=3600)
        self.ticks = 0

    def tick(self) -> bool:
        self.ticks += 1
        return False


def test_the_daemon_pipeline_loop_ticks_its_pacer_between_turns(tmp_path: Path) -> None:
    pacer = CountingPacer()
    run = session(tmp_path, gc_pacer=pacer)
    readings, _ = simulate(run.cfg.devices[0], 3.0, 1_000_000.0)
    assert readings

    async def turns() -> None:
        task = asyncio.create_task(run._process())
        for reading in readings:
            await run.queue.put(reading)
            await asyncio.sleep(0.02)  # one turn per reading (turns are at least 10 ms apart)
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(turns())
    run.outbox.close()
    assert pacer.ticks >= len(readings)
