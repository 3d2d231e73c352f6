"""`QualityAlarms.drain` steps the technical books exactly as stepping every noted reading's stream in
every book would (the reference below, the code before 2026-11-29 evening): a stream is stepped in a
condition's book when its reading has that condition's flags or while that book is not NORMAL, and its
bad-share tracker takes a reading that has the flags or comes while a bad stretch is open. The fast
version keeps which streams are not NORMAL or open per condition instead of asking every book and
tracker about every reading."""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from typing import Any

import numpy as np
import pytest

from agent.alarms import AlarmState, StreamRef
from agent.events import AlarmEvent
from agent.pipeline.bad_share import BadShare
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
    """Every noted reading checked against every book and tracker, and engagement asked of every book
    and tracker. The verdicts of the intermittent rule (`_verdict`, agent.pipeline.bad_share, since
    2026-11-30) are shared: what is compared is which streams are stepped and noted."""

    def drain(self) -> list[AlarmEvent]:
        rounds = noted_rounds(self._pending)  # unchanged: the rounds are not what is compared
        self._pending = []
        self._noted = set()
        events: list[AlarmEvent] = []
        books = [(condition, Quality(flags), alarm) for condition, (flags, alarm) in self._alarms.items()]
        for batch in rounds:
            for condition, flags, alarm in books:
                shares = self._shares[condition]
                due = []
                for ref, quality, time in batch:
                    bad = bool(quality & flags)
                    if bad or (ref in shares and shares[ref].open):
                        shares.setdefault(ref, BadShare()).note(time, bad)
                    if bad or alarm.state_of(ref) is not AlarmState.NORMAL:
                        state = int(alarm.state_of(ref))
                        verdict = self._verdict(condition, ref, shares.get(ref), bad, time, state)
                        due.append((ref, verdict, time))
                if due:
                    refs, values, times = zip(*due, strict=True)
                    events += self._told_intermittent(
                        condition, alarm.check(refs, values, [0.5] * len(refs), times)
                    )
                    for ref in refs:
                        if alarm.state_of(ref) is AlarmState.NORMAL:
                            self._bridged[condition].discard(ref)
            for ref, _, _ in batch:
                if any(alarm.state_of(ref) is not AlarmState.NORMAL for _, _, alarm in books) or any(
                    ref in self._shares[condition] and self._shares[condition][ref].open
                    for condition, _, _ in books
                ):
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
    assert any("intermittently" in e["explanation"]["text"] for e in fast[0])  # the share rule had a say
