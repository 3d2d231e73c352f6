"""The alarm state machine as a transition table, stepped for many streams at once.

Per (rule, stream) the state is NORMAL, PENDING, ACTIVE or CLEARING. Each hop the inputs below are computed
as boolean arrays over streams, then the rows of `TABLE` are tried in order: a stream takes the first row
whose `source` is its state and whose guards are all true, moves to `target` and performs `action`
(START, ESCALATE and END become events in `agent.alarms.book`). A stream that matches no row stays put.

Inputs, for one hop at time t:
- known: the hop has a verdict: a score, and for physiological rules OK signal quality. A hop that is not
  known is none of hit, clear or abnormal and is left out of the N-of-M history, so a lost signal holds
  every episode where it is (the technical rules report the signal) instead of ending it
- hit: known and score > threshold
- confirmed: at least N of the last M known hops were hits (N-of-M confirmation)
- matured: t - onset >= min_duration (onset is the first hit of the pending episode, or t itself)
- quiet: none of the last M known hops was a hit (a pending episode is abandoned)
- clear: known and score <= clear level, where clear level is threshold * (1 - hysteresis), or
  threshold - hysteresis as an absolute margin when the threshold is 0
- abnormal: known and not clear
- cleared: the judged clear time since clear_since (the first clear hop, or t itself) >= the episode's clear
  delay: the clear hops' own spans, so hops without a verdict and gaps in the data add nothing
  (`AlarmBook._hop_spans`). The delay is clear_after, or max(clear_after, cooldown) for a recurrence: an
  episode whose onset fell within cooldown of the previous END of the same rule on the same stream
- escalate_due: escalation configured, not yet done, priority below HIGH, t - detection >= escalate_after
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

TIME_SLACK_S = 1e-6  # durations compare with this slack: 10 hops of 1 s are 10 s despite float rounding


class AlarmState(enum.IntEnum):
    NORMAL = 0
    PENDING = 1
    ACTIVE = 2
    CLEARING = 3


class Action(enum.IntEnum):
    NONE = 0
    START = 1  # the episode is confirmed: START event
    ESCALATE = 2  # priority raised one level: UPDATE event
    END = 3  # the episode is over: END event, cooldown begins (not after an END by a changed rule)


@dataclass(frozen=True, slots=True)
class Transition:
    source: AlarmState
    guards: tuple[str, ...]  # names of `Inputs` fields that must all be true
    target: AlarmState
    action: Action


S = AlarmState
TABLE: tuple[Transition, ...] = (
    # No minimum duration and N-of-M already met by this hit: confirm at once. No cooldown guard here: a
    # recurrence is alarmed like any episode (a cooldown that held it back hid a 40 s SpO2 84 %, ward
    # review 2026-12-01); the cooldown lengthens the recurrence's clear delay instead (`cleared`).
    Transition(S.NORMAL, ("hit", "confirmed", "matured"), S.ACTIVE, Action.START),
    Transition(S.NORMAL, ("hit",), S.PENDING, Action.NONE),
    Transition(S.PENDING, ("hit", "confirmed", "matured"), S.ACTIVE, Action.START),
    Transition(S.PENDING, ("quiet",), S.NORMAL, Action.NONE),
    # No clear delay: end at the first clear hop.
    Transition(S.ACTIVE, ("clear", "cleared"), S.NORMAL, Action.END),
    Transition(S.ACTIVE, ("clear",), S.CLEARING, Action.NONE),
    Transition(S.ACTIVE, ("escalate_due",), S.ACTIVE, Action.ESCALATE),
    Transition(S.CLEARING, ("abnormal",), S.ACTIVE, Action.NONE),
    Transition(S.CLEARING, ("clear", "cleared"), S.NORMAL, Action.END),
)


@dataclass(frozen=True, slots=True)
class Inputs:
    hit: BoolArray
    confirmed: BoolArray
    matured: BoolArray
    quiet: BoolArray
    clear: BoolArray
    abnormal: BoolArray
    cleared: BoolArray
    escalate_due: BoolArray


GUARDS: tuple[str, ...] = tuple(f.name for f in fields(Inputs))  # bit i + 2 of a step code (state: bits 0-1)
_STATE_BITS = 2


def _first_match(state: int, code: int) -> tuple[int, int]:
    """(target, action) of the first row of `TABLE` that matches `state` with the guards set in `code`'s
    guard bits; (state, NONE) when none does: the rule `step` applies, one combination at a time."""
    true = {name for bit, name in enumerate(GUARDS) if code >> (bit + _STATE_BITS) & 1}
    for row in TABLE:
        if row.source == state and all(guard in true for guard in row.guards):
            return int(row.target), int(row.action)
    return state, int(Action.NONE)


def _lookup() -> npt.NDArray[np.int64]:
    """(next state, action) of every step code: 4 states x 2^8 guard combinations, 1,024 rows."""
    codes = range(1 << (_STATE_BITS + len(GUARDS)))
    return np.array([_first_match(code & ((1 << _STATE_BITS) - 1), code) for code in codes], dtype=np.int64)


# `TABLE` evaluated once for every code, so `step` is a few array operations and one look-up instead of
# a masked assignment per row (it was 9 % of the ECG agent's time, profile of 2026-11-30).
_NEXT, _ACTION = _lookup().T.copy()


# Each guard's bit in a step code: with the state's 0..3 below them the bits are disjoint, so a sum is an OR.
_GUARD_WEIGHTS = np.array([1 << (bit + _STATE_BITS) for bit in range(len(GUARDS))], dtype=np.int64)


def step(states: IntArray, inputs: Inputs) -> tuple[IntArray, IntArray]:
    """(next states, actions) for every stream; the first matching row of `TABLE` wins."""
    # The guards as one (guards, streams) array of 0/1 weighted in one product: a shift and an OR per guard
    # were 36 array calls, most of `step`'s time at the few streams a flush steps in a technical book.
    guards = np.array([getattr(inputs, guard) for guard in GUARDS], dtype=np.int64).reshape(len(GUARDS), -1)
    code = states.astype(np.int64) + _GUARD_WEIGHTS @ guards
    return _NEXT[code], _ACTION[code]


def clear_level(thresholds: npt.NDArray[np.float64], hysteresis: float) -> npt.NDArray[np.float64]:
    """The score a hop must be at or below to count as clear (see the module docstring)."""
    return np.where(thresholds == 0.0, -hysteresis, thresholds - hysteresis * np.abs(thresholds))


def table_markdown() -> str:
    """The transition table as a Markdown table (kept in docs/detectors.md; a test checks they agree)."""
    lines = ["| from | when | to | action |", "|---|---|---|---|"]
    for row in TABLE:
        guards = " and ".join(row.guards)
        lines.append(f"| {row.source.name} | {guards} | {row.target.name} | {row.action.name} |")
    return "\n".join(lines)
