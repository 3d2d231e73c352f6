"""Signal quality that comes and goes raises its technical alarm (review "ble", F3, 2026-11-30).

The quality alarms needed 10 s of unbroken flagged readings, so a strap that lost contact 9 s of every 10
(or 7 of 10, 5 of 10, 4 of 5) raised nothing for as long as it lasted, while the physiological rules
judged only what was left. `QualityAlarms` now also keeps a pending episode over good readings while the
stream was bad for at least 45 % of the last minute (`agent.pipeline.bad_share`); the 10 s rule, short
flickers and steady signals behave as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pytest

from agent.alarms import StreamRef
from agent.events import AlarmEvent, Phase
from agent.pipeline.bad_share import HOLD_S, WINDOW_S, BadShare
from agent.pipeline.technical import QualityAlarms
from agent.readings import Quality

T0 = 1.8e9
REF = StreamRef("d-aaaaaaaaaaaaaaaa", "vitals")

# (seconds flagged, seconds good) of the review's patterns
PATTERNS = [(9, 1), (7, 3), (5, 5), (4, 1)]
CONDITIONS = [(Quality.NO_CONTACT, "sensor_off"), (Quality.OUT_OF_RANGE, "signal_poor")]


def flicker(bad_s: int, good_s: int) -> Callable[[float], bool]:
    """Whether the pattern is flagged `t` seconds into it."""
    return lambda t: (t % (bad_s + good_s)) < bad_s - 1e-9


def feed(
    flagged: Callable[[float], bool],
    seconds: float,
    *,
    flag: Quality = Quality.NO_CONTACT,
    rate_hz: float = 1.0,
    jitter_s: float = 0.0,
    alarms: QualityAlarms | None = None,
    start: float = 0.0,
) -> tuple[list[AlarmEvent], QualityAlarms]:
    """Readings of one stream at `rate_hz` from `start` s for `seconds`, flagged where `flagged(t)`,
    drained after each reading (a flush per reading, as a 1 s hop has it). Each event's `emitted`
    (in `EMITTED`) is the time of the reading that gave it."""
    alarms = alarms or QualityAlarms("gw", "cfg")
    rng = np.random.default_rng(7)
    events: list[AlarmEvent] = []
    for k in range(round(seconds * rate_hz)):
        t = start + k / rate_hz
        at = T0 + t + (float(rng.uniform(-jitter_s, jitter_s)) if jitter_s else 0.0)
        alarms.observe(REF, int(flag) if flagged(t) else 0, at)
        for event in alarms.drain():
            EMITTED[event.id, event.seq] = at
            events.append(event)
    return events, alarms


EMITTED: dict[tuple[str, int], float] = {}


def emitted(event: AlarmEvent) -> float:
    return EMITTED[event.id, event.seq]


def phases(events: Iterable[AlarmEvent], condition: str) -> list[Phase]:
    return [e.phase for e in events if e.condition == condition]


@pytest.mark.parametrize(("flag", "condition"), CONDITIONS, ids=[c for _, c in CONDITIONS])
@pytest.mark.parametrize(("bad_s", "good_s"), PATTERNS, ids=[f"{b}of{b + g}" for b, g in PATTERNS])
@pytest.mark.parametrize("rate_hz", [1.0, 2.0], ids=["1Hz", "2Hz"])
def test_a_flickering_signal_raises_one_alarm_that_ends_once_it_is_steady(
    flag: Quality, condition: str, bad_s: int, good_s: int, rate_hz: float
) -> None:
    events, alarms = feed(flicker(bad_s, good_s), 300, flag=flag, rate_hz=rate_hz)
    assert phases(events, condition) == [Phase.START]
    assert len(events) == 1
    start = events[0]
    assert start.detection_time - T0 <= 90  # within a minute and a half of the first lost contact
    assert start.detection_time - start.onset_time == pytest.approx(10, abs=1e-6)  # min_duration_s
    assert "intermittently" in start.explanation.text
    assert start.value == 1 and start.threshold == 0.5  # the payload of every quality alarm
    # 300 s is a whole number of cycles: the last good spell starts at 300 - good_s and stays good.
    steady_from = T0 + 300 - good_s
    later, _ = feed(lambda t: False, 60, rate_hz=rate_hz, alarms=alarms, start=300)
    assert phases(later, condition) == [Phase.END] and len(later) == 1
    end = later[0]
    assert end.id == start.id
    assert end.end_time == pytest.approx(steady_from, abs=1e-6)
    assert emitted(end) == pytest.approx(steady_from + 10, abs=1e-6)  # clear_after_s, as ever


def test_exactly_half_is_caught_in_spite_of_the_readings_timing() -> None:
    events, _ = feed(flicker(5, 5), 300, jitter_s=0.2)
    assert phases(events, "sensor_off") == [Phase.START]


@pytest.mark.parametrize(
    ("bad_s", "good_s"), [(2, 3), (1, 9), (3, 7), (8, 30)], ids=["2of5", "1of10", "3of10", "8of38"]
)
def test_a_short_flicker_raises_nothing(bad_s: int, good_s: int) -> None:
    events, _ = feed(flicker(bad_s, good_s), 600)
    assert events == []


def test_a_steady_good_signal_raises_nothing() -> None:
    events, alarms = feed(lambda t: False, 600)
    assert events == [] and not alarms.watching()


def test_the_10_s_rule_is_unchanged() -> None:
    """15 s without contact: START after 10 s (its text as before), END 10 s after contact is back."""
    events, _ = feed(lambda t: 20 <= t < 35, 120)
    assert phases(events, "sensor_off") == [Phase.START, Phase.END]
    start, end = events
    assert start.onset_time == T0 + 20 and start.detection_time == T0 + 30
    assert start.explanation.text == "no sensor contact (electrode or strap off), for 10 s"
    assert end.end_time == T0 + 35 and emitted(end) == T0 + 45


def test_rare_blips_no_longer_hold_an_episode_open() -> None:
    """An episode (here 20 s of lost contact) then a blip every 8 s: it ended only after 10 s without
    one, i.e. never; once the minute holds at most a quarter bad, the blips are no verdict."""
    lost = 20.0

    def flagged(t: float) -> bool:
        return t < lost or (t - lost) % 8 < 1 - 1e-9

    events, alarms = feed(flagged, 240)
    assert phases(events, "sensor_off") == [Phase.START, Phase.END]
    assert emitted(events[1]) - T0 < 120
    # and a sustained loss after that is alarmed again (the cooldown is 30 s)
    more, _ = feed(lambda t: True, 40, alarms=alarms, start=240)
    assert phases(more, "sensor_off") == [Phase.START]


def test_a_silence_is_not_bad_quality() -> None:
    """A flagged reading stands for at most HOLD_S: a strap that goes silent after losing contact and
    comes back good is not counted bad for the whole silence."""
    share = BadShare()
    share.note(T0, True)
    share.note(T0 + 50, False)
    assert share.bad_s(T0 + 50) == HOLD_S


def test_bad_share_against_a_reference() -> None:
    """`BadShare.bad_s` against the definition: bad from a flagged reading to the next reading (at most
    HOLD_S), summed over the window, on random sequences with random spacing."""
    rng = np.random.default_rng(3)
    for _ in range(50):
        times = T0 + np.cumsum(rng.choice([0.3, 1.0, 2.5, 12.0], size=200, p=[0.3, 0.5, 0.15, 0.05]))
        flagged = rng.random(200) < rng.uniform(0.1, 0.9)
        share = BadShare()
        for i, (t, bad) in enumerate(zip(times.tolist(), flagged.tolist(), strict=True)):
            share.note(t, bad)
            # a stream is bad over [t_j, min(t_j+1, t_j' + HOLD_S)) for a flagged reading j, where
            # j' is the last flagged reading of the stretch: computed per reading here
            expected = 0.0
            for j in range(i + 1):
                if not flagged[j]:
                    continue
                until = times[j + 1] if j < i else t
                until = min(until, times[j] + HOLD_S)
                expected += max(0.0, until - max(times[j], t - WINDOW_S))
            assert share.bad_s(t) == pytest.approx(expected, abs=1e-6), i
