"""A token bucket: at most `rate_per_s` events a second on average, `burst` at once.

Used where a flood must cost a bounded amount: commands handed from paho's thread to the loop
(`agent.uplink.command_gate`) and refusal answers (`agent.remote.commands`). Not thread-safe: one
owner thread, or the caller's lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """`take()` is True while the budget lasts; the bucket refills continuously."""

    def __init__(self, rate_per_s: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_per_s)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
