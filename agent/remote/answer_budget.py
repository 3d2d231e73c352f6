"""How many refusals a gateway answers: a flood of refused commands costs a bounded amount.

Strategy: every answer is a QoS 1 PUBLISH and a log line. Refusals of commands whose signature never
verified (anything refused before the envelope opened, and `busy`, decided before it) share a small
budget: `UNAUTHENTICATED` (1 a second, 10 at once); refusals of authenticated commands (`stale`,
`replayed`, `not_allowed`, `refused`, ...) a larger one, `AUTHENTICATED` (5 a second, 20 at once).
Answers of commands that ran are never held back. A refusal over its budget is neither answered nor
logged on its own: it is counted (`unanswered`, in `edge-agent status`), the first of an interval is
told in one warning, and the interval's count in one line at its end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

from agent.token_bucket import TokenBucket

log = logging.getLogger(__name__)

UNAUTHENTICATED = (1.0, 10)  # (answers per second, at once) for refusals before the signature verified
AUTHENTICATED = (5.0, 20)  # for refusals of commands whose signature verified
INTERVAL_S = 60.0  # held-back refusals are summed up in one line per interval


class AnswerBudget:
    """`allows(code, authenticated)` on the loop thread: True to answer (and log) the refusal."""

    def __init__(
        self,
        *,
        unauthenticated: tuple[float, int] = UNAUTHENTICATED,
        authenticated: tuple[float, int] = AUTHENTICATED,
        interval_s: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._unauthenticated = TokenBucket(*unauthenticated, clock)
        self._authenticated = TokenBucket(*authenticated, clock)
        self.interval_s = interval_s
        self.unanswered = 0  # refusals held back since the start of the session
        self._held: Counter[str] = Counter()  # this interval's, by code
        self._summary: asyncio.TimerHandle | None = None
        self._closed = False

    def allows(self, code: str, *, authenticated: bool) -> bool:
        bucket = self._authenticated if authenticated else self._unauthenticated
        if bucket.take():
            return True
        self.unanswered += 1
        if self._closed:
            return False
        if not self._held:
            log.warning(
                "remote: refused commands arrive faster than the answer budget; further refusals are "
                "not answered, only counted (a summary follows in %.0f s)",
                self.interval_s,
            )
            self._summary = asyncio.get_running_loop().call_later(self.interval_s, self.tell)
        self._held[code] += 1
        return False

    def tell(self) -> None:
        """Log the interval's held-back refusals (at its end, or when the session ends)."""
        if self._summary is not None:
            self._summary.cancel()
            self._summary = None
        if self._held:
            codes = ", ".join(f"{code} {n}" for code, n in self._held.most_common())
            log.warning(
                "remote: %d refused command(s) not answered (over the answer budget): %s",
                sum(self._held.values()),
                codes,
            )
            self._held.clear()

    def close(self) -> None:
        """The session ends: tell what is held back; refusals from now on are only counted."""
        self.tell()
        self._closed = True
