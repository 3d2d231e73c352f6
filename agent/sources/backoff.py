"""Reconnect backoff shared by every source: exponential growth, capped, with jitter.

Delays grow as ``initial_s * factor**n`` up to `max_s`, and each one is drawn uniformly from
``[(1 - jitter) * d, d]`` so that gateways (or devices on one gateway) that lost a link at the same
moment do not all hammer the adapter or the bus again in lockstep. A source calls `reset()` once a
connection has proved itself (data flowed), so a flapping device keeps backing off while one that
dropped after hours of good service is retried at once. A driver may know better than us how long to
wait (bleak-retry-connector knows that an out-of-slots adapter needs ~4 s): `next_delay(at_least=…)`
honours such a hint, still within `max_s`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    initial_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5  # fraction of the delay that is random: 0 = none, 1 = "full jitter"

    def __post_init__(self) -> None:
        if not (0 < self.initial_s <= self.max_s):
            raise ValueError(f"backoff needs 0 < initial_s <= max_s, got {self.initial_s}, {self.max_s}")
        if self.factor < 1 or not 0 <= self.jitter <= 1:
            raise ValueError(
                f"backoff needs factor >= 1 and 0 <= jitter <= 1, got {self.factor}, {self.jitter}"
            )


class Backoff:
    """The delay before each successive retry of one link; not thread-safe (one per source)."""

    def __init__(self, policy: BackoffPolicy | None = None, rng: random.Random | None = None) -> None:
        self.policy = policy or BackoffPolicy()
        self._rng = rng or random.Random()
        self.attempts = 0  # retries since the last reset

    def next_delay(self, at_least: float = 0.0) -> float:
        """Seconds to wait before the next attempt; grows with each call until `reset`."""
        p = self.policy
        ceiling = min(p.max_s, p.initial_s * p.factor ** min(self.attempts, 64))
        self.attempts += 1
        delay = ceiling * (1.0 - p.jitter * self._rng.random())
        return min(p.max_s, max(delay, at_least))

    def reset(self) -> None:
        self.attempts = 0
