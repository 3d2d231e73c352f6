"""Steps of the gateway's wall clock (docs/robustness.md, "The gateway clock jumps").

A gateway without a real-time clock boots at the last saved time or at 1970 and is stepped forward by
hours or years when NTP first syncs, possibly long after the agent started; an admin or NTP may also
step it back. Timestamps that leave the gateway stay wall clock (what the receiver expects), but the
timers kept in wall time (alarm minimum duration, clearing, cooldown; window gaps) must count the
seconds that really passed: a step is noticed as a change of `wall - monotonic`, and the stored
instants are moved by it.
"""

from __future__ import annotations

from typing import Any, overload

import numpy as np
import numpy.typing as npt

# A change of (wall - monotonic) larger than this is a clock step. NTP slews smaller offsets, so a step
# is usually far larger. Readings stamped on arrival stay within a few seconds of the gateway clock (a
# BLE frame spans under a second); a serial backlog keeps its real, past times (agent.sources.
# serial_clock), so a stream's offset jumping to the gateway's counts as a step only when the gateway's
# own offset stepped as well (`StreamPipeline.gateway_stepped_at`).
CLOCK_STEP_S = 10.0

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@overload
def stepped_to_gateway(offset: float, last: float, gateway: float) -> bool: ...
@overload
def stepped_to_gateway(offset: FloatArray, last: FloatArray, gateway: float) -> BoolArray: ...
def stepped_to_gateway(offset: Any, last: Any, gateway: float) -> Any:  # the overloads above
    """Whether a reading stamped with `offset` (its wall - monotonic) after one stamped with `last`
    shows a step of the gateway clock: the offset moved by more than CLOCK_STEP_S, to the gateway's
    own (`gateway`). Readings stamped in another clock (a replay, a recording) never match it. NaN (no
    earlier reading, no gateway clock yet) says no. Floats or arrays alike."""
    if isinstance(offset, float):  # one reading, on the per-reading path: stop at the usual "no"
        return abs(offset - last) > CLOCK_STEP_S and abs(offset - gateway) <= CLOCK_STEP_S
    return (abs(offset - last) > CLOCK_STEP_S) & (abs(offset - gateway) <= CLOCK_STEP_S)


class ClockSteps:
    """Notices steps of a wall clock, given (wall, monotonic) pairs read together now and then."""

    def __init__(self) -> None:
        self._offset: float | None = None

    def step(self, wall: float, monotonic: float) -> float:
        """Seconds the wall clock stepped since the previous pair (0.0 when it did not)."""
        offset = wall - monotonic
        last, self._offset = self._offset, offset
        if last is None or abs(offset - last) <= CLOCK_STEP_S:
            return 0.0
        return offset - last
