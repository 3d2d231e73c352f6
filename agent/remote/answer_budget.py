"""How many refusals a gateway answers: a flood of refused commands costs a bounded amount.

Strategy: every answer is a QoS 1 PUBLISH. Refusals of commands whose signature never verified
(anything refused before the envelope opened, and `busy`, decided before it) share a small budget:
`UNAUTHENTICATED` (1 a second, 10 at once); refusals of authenticated commands (`stale`, `replayed`,
`not_allowed`, `refused`, ...) a larger one, `AUTHENTICATED` (5 a second, 20 at once). A refusal over
its budget is not answered: it is counted (`unanswered`, in `edge-agent status`), and told in one
warning at most every `REMIND_S`. The budget decides answers only: every refusal is logged, and the
log's rate limit (`agent.log_rate`, by command and code) holds back a flood's lines and sums them up.
Answers of commands that ran are never held back, here or on the wire (`MqttUplink.respond`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from agent.token_bucket import TokenBucket

log = logging.getLogger(__name__)

UNAUTHENTICATED = (1.0, 10)  # (answers per second, at once) for refusals before the signature verified
AUTHENTICATED = (5.0, 20)  # for refusals of commands whose signature verified
REMIND_S = 60.0  # refusals held back are told at most this often


class AnswerBudget:
    """`allows(authenticated=...)` on the loop thread: True to answer the refusal."""

    def __init__(
        self,
        *,
        unauthenticated: tuple[float, int] = UNAUTHENTICATED,
        authenticated: tuple[float, int] = AUTHENTICATED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._unauthenticated = TokenBucket(*unauthenticated, clock)
        self._authenticated = TokenBucket(*authenticated, clock)
        self._clock = clock
        self.unanswered = 0  # refusals held back since the start of the session
        self._told_at = -float("inf")  # clock time of the last warning

    def allows(self, *, authenticated: bool) -> bool:
        bucket = self._authenticated if authenticated else self._unauthenticated
        if bucket.take():
            return True
        self.unanswered += 1
        now = self._clock()
        if now - self._told_at >= REMIND_S:
            self._told_at = now
            log.warning(
                "remote: refused commands arrive faster than the answer budget; refusals over it are "
                "not answered, only logged and counted (%d so far; told at most every %.0f s)",
                self.unanswered,
                REMIND_S,
            )
        return False
