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


class RrValidity:
    """The bad stretches of one device's RR intervals over the last `bad_share.WINDOW_S`."""

    __slots__ = ("_share", "last_bad")

    def __init__(self) -> None:
        self._share = BadShare()
        self.last_bad = -math.inf  # monotonic time of the latest notification with mostly impossible RR

    def note(self, monotonic: float, valid: int, invalid: int) -> None:
        """One notification's RR intervals: `valid` kept, `invalid` dropped."""
        if valid + invalid == 0:
            return
        bad = invalid >= valid
        self._share.note(monotonic, bad)
        if bad:
            self.last_bad = monotonic

    def bad_s(self, now: float) -> float:
        """Seconds of the last minute (up to monotonic `now`) the RR intervals were mostly impossible."""
        return self._share.bad_s(now)


# A bad notification this recent keeps the measure live: the alarm ends 10 s after the last one, as a
# signal-quality alarm ends after 10 s of good readings.
RECENT_S = 10.0


def judged(bad_s: float, last_bad: float, now: float, active: bool) -> tuple[float, float]:
    """(value, limit) of the `rr_invalid` alarm at monotonic `now`: the bad share of the last minute
    (0 once no bad notification came for `RECENT_S`), against `ON_SHARE` to start and `OFF_SHARE` to
    hold an `active` episode (hysteresis, as the quality alarms' intermittent rule: a 5 s on / 5 s off
    pattern starts it and keeps it; rare bad notifications neither start nor hold it)."""
    value = bad_s / WINDOW_S if now - last_bad <= RECENT_S else 0.0
    return value, OFF_SHARE if active else ON_SHARE
