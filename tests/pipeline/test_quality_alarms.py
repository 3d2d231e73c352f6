"""`QualityAlarms.drain` steps the technical books exactly as stepping every noted reading's stream in
every book would (the reference below, the code before 2026-11-29 evening): a stream is stepped in a
condition's book when its reading has that condition's flags or while that book is not NORMAL. The
fast version keeps which streams are not NORMAL per condition instead of asking every book about
every reading."""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from typing import Any

import numpy as np
import pytest

from agent.alarms import AlarmState, StreamRef
from agent.events import AlarmEvent
from agent.pipeline.technical import QualityAlarms, noted_rounds
from agent.readings import Quality

FLAGS = (
    Quality.NO_CONTACT,
    Quality.OUT_OF_RANGE,
    Quality.MOTION,
    Quality.LOW_BATTERY,
    Quality.DEVICE_FAULT,
    Quality.NO_CONTACT | Quality.MOTION,
)


class ReferenceAlarms(QualityAlarms):
    """Every noted reading checked against every book, and engagement asked of every book."""

    def drain(self) -> list[AlarmEvent]:
        rounds = noted_rounds(self._pending)  # unchanged: the rounds are not what is compared
        self._pending = []
        self._noted = set()
        events: list[AlarmEvent] = []
        books = [(Quality(flags), alarm) for flags, alarm in self._alarms.values()]
        for batch in rounds:
            for flags, alarm in books:
                due = [
                    (ref, 1.0 if quality & flags else 0.0, time)
                    for ref, quality, time in batch
                    if quality & flags or alarm.state_of(ref) is not AlarmState.NORMAL
                ]
                if due:
                    refs, values, times = zip(*due, strict=True)
                    events += alarm.check(refs, values, [0.5] * len(refs), times)
            for ref, _, _ in batch:
                if any(alarm.state_of(ref) is not AlarmState.NORMAL for _, alarm in books):
                    self._engaged.add(ref)
                else:
                    self._engaged.discard(ref)
        return events


def _feed(alarms: QualityAlarms, rng: np.random.Generator, refs: list[StreamRef], t0: float) -> list[Any]:
    """Readings of `refs` for 240 s: each stream has spells of one flag (or none) lasting 2-40 s, now and
    then a reading twice or a missed one; drained after every 1-3 s. The events, with every field."""
    spell = dict.fromkeys(refs, (Quality.OK, 0.0))
    events: list[AlarmEvent] = []
    for second in range(240):
        t = t0 + second
        for ref in refs:
            flags, until = spell[ref]
            if t >= until:
                flags = FLAGS[rng.integers(len(FLAGS))] if rng.random() < 0.4 else Quality.OK
                spell[ref] = (flags, t + float(rng.uniform(2, 40)))
            if rng.random() < 0.03:
                continue  # a missed reading
            quality = int(flags) if rng.random() < 0.9 else 0  # a spell is not always every reading
            for _ in range(2 if rng.random() < 0.02 else 1):
                alarms.observe(ref, quality, t + float(rng.uniform(0, 0.5)))
        if rng.integers(3) == 0:
            events += alarms.drain()
    events += alarms.drain()
    return [dataclasses.asdict(e) for e in events]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_drain_steps_the_books_as_every_book_for_every_reading(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    refs = [StreamRef(f"p{i}", "vitals") for i in range(40)]
    outcomes = []
    for kind in (QualityAlarms, ReferenceAlarms):
        counter = itertools.count()
        monkeypatch.setattr("agent.alarms.book.uuid7", lambda c=counter: uuid.UUID(int=next(c)))
        alarms = kind("gw", "cfg")
        events = _feed(alarms, np.random.default_rng(seed), refs, 1.8e9)
        # Saved mid-episode and restored into fresh books (a restart), then fed on.
        saved = alarms.state()
        restarted = kind("gw", "cfg")
        restarted.load_state(saved, "vitals")
        engaged_after_restart = set(restarted.watching())
        events += _feed(restarted, np.random.default_rng(seed + 100), refs, 1.8e9 + 300)
        outcomes.append((events, saved, restarted.state(), engaged_after_restart, restarted.watching()))
    fast, slow = outcomes
    assert len(fast[0]) == len(slow[0])
    np.testing.assert_equal(fast, slow)
    conditions = {e["condition"] for e in fast[0]}
    assert conditions == {"sensor_off", "signal_poor", "battery_low", "device_fault"}
    assert {e["phase"].value for e in fast[0]} >= {"start", "end"}
    assert fast[3]  # some episode was open across the restart
