"""The bounded hand-off of received commands from paho's network thread to the asyncio loop.

Strategy: every command costs the loop a task, a thread hop and an answer. Handed over one
`call_soon_threadsafe` each, a flood of unsigned `{}` (10,000/s; write access to the command topic is
all it takes) piled up in the loop's queue: 650 MB in 16 s, heartbeats stopped, an alarm 22 s late,
and the loop's wake-up pipe so full that SIGTERM was lost (Python writes signals to the same pipe).
Here paho's thread puts a command in a short queue and wakes the loop only when the queue was empty
(one wake-up per batch, not per message; one that could not be handed over, with no loop running, is
given back by `wake_lost`, so the next command asks again). A command is dropped, counted and unanswered when
- more than `rate_per_s` arrive a second (`burst` at once): far above what operators send, far
  below what costs the loop; or
- `max_waiting` already wait for the loop, or the waiting ones hold `max_waiting_bytes` (a payload
  larger than that, a model bundle, waits only alone), so the queue holds at most one bundle.
The counts are the uplink's `commands_dropped`, in `edge-agent status`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from agent.token_bucket import TokenBucket
from agent.uplink.paho_bridge import Command

MAX_WAITING = 8  # commands waiting for the loop
MAX_WAITING_BYTES = 1024 * 1024  # their payloads together (one larger payload may wait alone)
RATE_PER_S = 20.0  # commands handed to the loop per second, on average
BURST = 40  # and at once


class CommandGate:
    """`offer` in paho's thread (True: wake the loop to `take`), `take` on the loop thread."""

    def __init__(
        self,
        *,
        max_waiting: int = MAX_WAITING,
        max_waiting_bytes: int = MAX_WAITING_BYTES,
        rate_per_s: float = RATE_PER_S,
        burst: int = BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_waiting = max_waiting
        self.max_waiting_bytes = max_waiting_bytes
        self._bucket = TokenBucket(rate_per_s, burst, clock)
        self._lock = threading.Lock()
        self._waiting: list[Command] = []
        self._bytes = 0
        self._woken = False  # a wake-up is on its way to the loop
        self.dropped = 0  # read by the loop for status: an int, written under the lock

    def offer(self, command: Command) -> bool:
        """Queue `command` or drop it; True when the loop must be woken to `take` (paho thread)."""
        size = len(command.payload)
        with self._lock:
            full = len(self._waiting) >= self.max_waiting or (
                self._waiting and self._bytes + size > self.max_waiting_bytes
            )
            if full or not self._bucket.take():
                self.dropped += 1
                return False
            self._waiting.append(command)
            self._bytes += size
            if self._woken:
                return False
            self._woken = True
            return True

    def wake_lost(self) -> None:
        """The wake-up `offer` asked for never reached the loop (paho's thread): the next offer asks
        again, and `take` still gets everything waiting."""
        with self._lock:
            self._woken = False

    def take(self) -> list[Command]:
        """Every waiting command, oldest first (loop thread)."""
        with self._lock:
            waiting, self._waiting, self._bytes, self._woken = self._waiting, [], 0, False
        return waiting

    @property
    def waiting(self) -> int:
        return len(self._waiting)
