"""When a link that cannot be made is worth a log line: once per cause, not once per retry.

The sources retry a missing device forever (up to 30 s apart) and the uplink its broker (up to 60 s
apart), so a line per attempt would repeat the same words for hours, and none at all leaves the
operator guessing. `LinkTrouble` counts the failed attempts of one outage and says when a failure is
worth a line: the first of the outage, one with another cause, or a reminder after `REMIND_S` of the
same. `recovered()` ends the outage and gives the words for the "connected" line (how many attempts
failed, over how long). The callers write the lines, naming the config key and what to do, because
only they know the transport.
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
        self.since: float | None = None  # clock time of the outage's first failure
        self._cause: str | None = None
        self._told_at = -math.inf

    @property
    def cause(self) -> str | None:
        """The cause of the last failure while the outage lasts, None once recovered."""
        return self._cause

    def failed(self, cause: str) -> Tell:
        """Count one failed attempt with `cause` (the words that will be logged) and say whether to."""
        self.failures += 1
        now = self._clock()
        if self.since is None:
            self.since = now
        if cause != self._cause:
            self._cause, self._told_at = cause, now
            return Tell.NEW
        if now - self._told_at >= self.remind_s:
            self._told_at = now
            return Tell.REMINDER
        return Tell.QUIET

    def recovered(self) -> str:
        """End the outage: " (after N failed attempt(s) over T s)" for the connected line, or ""."""
        failures, since = self.failures, self.since
        self.failures, self.since, self._cause, self._told_at = 0, None, None, -math.inf
        if not failures or since is None:
            return ""
        return f" (after {failures} failed attempt(s) over {self._clock() - since:.0f} s)"
