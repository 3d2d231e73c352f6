"""Keep the garbage collector's full passes off the alarm path.

CPython's generation-2 collection walks every tracked container object. With tens of thousands of streams
their long-lived state makes one such pass take tens of milliseconds (75-81 ms at 50,000 vitals streams on
the 2-core benchmark VM). Such passes come when the reading queue backs up, which is when latency matters
most, and every reading waiting meanwhile waits for the pass. The pacer runs one collection at a moment it
chooses, then moves the survivors into the permanent generation (`gc.freeze`), so the automatic
collections only walk objects created since. It does that again every `settle_every_s`, which costs a pass
over the recent survivors only (1-2 ms at 50,000 streams).

Frozen objects are never scanned, so a reference cycle among them that later becomes garbage would stay
until something unfreezes them; once every `full_every_s` the pacer unfreezes everything and runs one full
collection (one long pause an hour, instead of one every few seconds under load).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("agent.gc")

SETTLE_EVERY_S = 30.0
FULL_EVERY_S = 3600.0


class CollectorPacer:
    """Call `tick()` between pipeline turns; it collects and freezes when due and says how long it took."""

    def __init__(
        self,
        settle_every_s: float = SETTLE_EVERY_S,
        full_every_s: float = FULL_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settle_every_s = settle_every_s
        self.full_every_s = full_every_s
        self.clock = clock
        now = clock()
        self.next_settle = now + settle_every_s
        self.next_full = now + full_every_s
        self.last_pause_ms = 0.0
        self.max_pause_ms = 0.0  # the longest pass the pacer itself ran, for the heartbeat

    def tick(self) -> bool:
        """Run a settle or full pass if one is due; True if it ran one."""
        now = self.clock()
        if now >= self.next_full:
            self.full()
            return True
        if now >= self.next_settle:
            self.settle()
            return True
        return False

    def settle(self) -> None:
        """Collect what is not frozen yet, then freeze the survivors."""
        self._timed(full=False)

    def full(self) -> None:
        """Unfreeze everything and collect it all (reclaims cycles that died while frozen), then freeze."""
        self._timed(full=True)

    def _timed(self, *, full: bool) -> None:
        start = time.perf_counter()
        if full:
            gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.last_pause_ms = 1e3 * (time.perf_counter() - start)
        self.max_pause_ms = max(self.max_pause_ms, self.last_pause_ms)
        now = self.clock()
        self.next_settle = now + self.settle_every_s
        if full:
            self.next_full = now + self.full_every_s
        log.debug(
            "gc %s pass: %.1f ms, %d objects frozen",
            "full" if full else "settle",
            self.last_pause_ms,
            gc.get_freeze_count(),
        )
