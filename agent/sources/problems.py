"""When a source tells the log that its device cannot be reached: once per cause, not once per retry.

A source retries a missing device forever with backoff (up to 30 s apart), so a line per attempt
would repeat the same words for hours. `LinkTrouble` counts the failed attempts of one outage and
says when a failure is worth a log line: the first of the outage, one with a different cause, or a
reminder after `REMIND_S` of the same. `recovered()` ends the outage and gives the words to add to
the "connected" line (how many attempts failed). The sources write the lines themselves, naming the
config key and what to do, because only they know the transport.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable

REMIND_S = 600.0  # the same cause is logged again this often while it lasts


class Tell(enum.Enum):
    NEW = "new"  # first failure of the outage, or another cause than the last one told
    REMINDER = "reminder"  # the same cause, REMIND_S after it was last told
    QUIET = "quiet"  # the same cause, told recently: count it, log nothing above DEBUG


class LinkTrouble:
    """The failed attempts of one device's current outage and the cause last told to the log."""

    def __init__(self, remind_s: float = REMIND_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.remind_s = remind_s
        self._clock = clock
        self.failures = 0  # failed attempts since the last success
        self._cause: str | None = None
        self._told_at = -math.inf

    def failed(self, cause: str) -> Tell:
        """Count one failed attempt with `cause` (the words that will be logged) and say whether to."""
        self.failures += 1
        now = self._clock()
        if cause != self._cause:
            self._cause, self._told_at = cause, now
            return Tell.NEW
        if now - self._told_at >= self.remind_s:
            self._told_at = now
            return Tell.REMINDER
        return Tell.QUIET

    def recovered(self) -> str:
        """End the outage: " (after N failed attempt(s))" for the connected line, or "" if none."""
        failures, self.failures, self._cause, self._told_at = self.failures, 0, None, -math.inf
        return f" (after {failures} failed attempt(s))" if failures else ""
