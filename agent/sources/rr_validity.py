"""How much of the last minute a BLE strap's RR intervals were impossible: the `rr_invalid` alarm's measure.

An RR interval outside `agent.readings.RR_RANGE_S` (0 ticks, 65535: a strap's "no value" or a counter
overflow) has no known length, so it is counted (`bad_rr`) and dropped (`agent.sources.ble_profiles`).
A strap that sends only such intervals leaves the RR stream empty while its HR looks fine: the AF and
other RR rules are blind and nothing told (review "ble", left over). Each Heart Rate notification that
carries RR intervals is one reading of this measure: bad when at least half of its intervals are
impossible (every other beat lost leaves an RR rule no pair of successive intervals to judge), good
otherwise. Notifications without RR intervals say nothing (a strap that never sends RR is not broken),
nor do those flagged "no sensor contact" (`sensor_off` tells, and blinds the same rules). The bad time
is measured as for the signal-quality alarms' intermittent rule (`agent.pipeline.bad_share.BadShare`:
time, not notifications, so a strap notifying per beat weighs as one notifying once a second), in the
source's monotonic clock; the daemon turns it into the alarm (`agent.session`).
"""

from __future__ import annotations

import math

from agent.pipeline.bad_share import OFF_SHARE, ON_SHARE, WINDOW_S, BadShare
from agent.sources.counters import RrSeen


class RrValidity:
    """The bad stretches of one device's RR intervals over the last `bad_share.WINDOW_S`."""

    __slots__ = ("_share", "first_rr", "last_bad", "last_rr")

    def __init__(self) -> None:
        self._share = BadShare()
        self.last_bad = -math.inf  # monotonic time of the latest notification with mostly impossible RR
        self.last_rr = -math.inf
        self.first_rr = math.nan

    def note(self, monotonic: float, valid: int, invalid: int) -> None:
        """One notification's RR intervals: `valid` kept, `invalid` dropped."""
        if valid + invalid == 0:
            return
        bad = invalid >= valid
        self._share.note(monotonic, bad)
        if bad:
            self.last_bad = monotonic
        if math.isnan(self.first_rr):
            self.first_rr = monotonic
        self.last_rr = monotonic

    def seen(self, now: float) -> RrSeen:
        """The measure at monotonic `now`."""
        first = -math.inf if math.isnan(self.first_rr) else self.first_rr
        return RrSeen(self._share.bad_s(now), self.last_bad, self.last_rr, first)


# A notification this recent keeps the measure live: the alarm ends after 10 s of valid intervals, as a
# signal-quality alarm ends after 10 s of good readings; with no RR intervals for that long it is not
# judged (held as it is: a silent strap is device_lost's or profile_silent's to tell).
RECENT_S = 10.0


def judged(seen: RrSeen, now: float, active: bool) -> tuple[float, float] | None:
    """(value, limit) of the `rr_invalid` alarm at monotonic `now`, or None when no RR intervals came
    for `RECENT_S` (not judged). The value is the bad share of the last minute while impossible intervals
    keep coming (0 after `RECENT_S` of valid ones), against `ON_SHARE` to start and `OFF_SHARE` to hold an
    `active` episode (hysteresis, as the quality alarms' intermittent rule: a 5 s on / 5 s off pattern
    starts it and keeps it; rare bad notifications neither start nor hold it). A measure younger than the
    window (the source restarted: a reconnect keeps it, an agent restart does not) holds an active episode
    on bad notifications alone: its share of a partial minute would end a restored episode at once."""
    if now - seen.last_rr > RECENT_S:
        return None
    if now - seen.last_bad > RECENT_S:
        return 0.0, OFF_SHARE if active else ON_SHARE
    if active:
        return (1.0 if now - seen.first_rr < WINDOW_S else seen.bad_s / WINDOW_S), OFF_SHARE
    return seen.bad_s / WINDOW_S, ON_SHARE
