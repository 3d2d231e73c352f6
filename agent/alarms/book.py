"""`AlarmBook`: the alarm episodes of one rule over many streams, stepped once per hop.

Per-stream machine state lives in numpy arrays indexed by a row per `StreamRef`, so one `update` computes
the inputs of `agent.alarms.machine` for all streams at once and steps the transition table vectorised;
Python only runs for the few streams whose step produced an event. Episode identity (UUIDv7 id, next seq,
priority), the machine state and what the alarm hierarchy holds (due marks, hits held back) survive
restarts through `state()` / `load_state()`, so an alarm that was active before a restart ends later under
the same id, and a held start or a count of hits not alarmed is not forgotten.

The cooldown holds nothing back: an episode whose onset falls within `cooldown_s` of the previous END of the
same rule on the same stream (a recurrence) starts like any other, its events carry the previous episode's
id (`recurrence_of`), and it ends only after max(clear_after_s, cooldown_s) of clear signal. A condition
that comes back is alarmed after its minimum duration (a 40 s SpO2 of 84 % that the cooldown used to hide,
ward review of 2026-12-01), while a signal flapping at a limit gets one recurrence that stays active through
the flapping: at most one START per cooldown, as before, but no silence. An END by a changed rule (below)
was no recovery and starts no cooldown.

An episode restored under a changed judge (`verdict_digest`: the detector's configuration and model,
the rule's hysteresis; a reload or restart raised a limit) may end at the new rule's first verdicts
while the value has not moved: such an END read as a recovery (crash/outage review, finding 3). Until
the changed rule finds the condition (an abnormal hop) the episode is marked, and an END it gets meanwhile
says so: `end_cause` "rule_changed" and a clause in its text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.alarms import explain
from agent.alarms.machine import TIME_SLACK_S, Action, AlarmState, Inputs, clear_level, step
from agent.config.schema import AlarmRuleConfig
from agent.detectors.base import BoolArray, FloatArray, IntArray, ScoreBlock
from agent.errors import ConfigError
from agent.events import AlarmEvent, AlarmKind, EndCause, Explanation, Phase, Priority
from agent.ids import uuid7


def _finite(values: FloatArray, nan: float = 0.0) -> FloatArray:
    """`np.nan_to_num(values, nan=nan)`, whose Python costs ~5 µs even when every value is finite (the
    usual hop): called only when one is not. Returns `values` itself when all are finite."""
    if np.isfinite(values).all():
        return values
    out: FloatArray = np.nan_to_num(values, nan=nan)
    return out


MAX_CONFIRM_M = 62  # the N-of-M history is a bit mask in an int64
ROWS_BETWEEN = 200  # rows of a saved state converted between calls of `between` (~0.5 ms)
# The states and actions as plain ints for the per-hop array code: on Python 3.11 every `AlarmState.X`
# goes through `EnumType.__getattr__` (4 % of the ECG agent's time in `update`, profile of 2026-11-30).
_NORMAL, _PENDING, _ACTIVE, _CLEARING = (int(s) for s in AlarmState)
_NONE, _START, _ESCALATE, _END = (int(a) for a in Action)
_MINUS_INF_FIELDS = ("cooldown_until", "peak_score", "last_hop")  # "never" rather than "none" (NaN)
# Judged clear time (`AlarmBook._hop_spans`): added to the saved rows on 2026-11-30, optional on load.
_JUDGED_TIME_FIELDS = ("clear_judged", "last_hop", "hop_interval")


def _nothing() -> None:
    pass


@dataclass(frozen=True, slots=True)
class StreamRef:
    device_pseudonym: str
    stream: str


@dataclass(slots=True)
class _Episode:
    """Identity of one confirmed episode (mutable: seq and priority move on)."""

    id: str
    next_seq: int
    priority: Priority
    unjudged_s: float = 0.0  # seconds of it with no agent running (restored across stops)
    # A recurrence (onset within the cooldown after the previous END): that episode's id, "" if it was not
    # kept; None for an episode that is no recurrence.
    recurrence_of: str | None = None


def raised(priority: Priority) -> Priority:
    return {Priority.LOW: Priority.MEDIUM, Priority.MEDIUM: Priority.HIGH}.get(priority, Priority.HIGH)


class AlarmBook:
    _FLOAT_FIELDS = (
        "onset",
        "detection",
        "clear_since",
        "clear_judged",
        "last_hop",
        "hop_interval",
        "cooldown_until",
        "peak_score",
        "peak_observed",
        "threshold",
    )

    def __init__(
        self,
        rule: AlarmRuleConfig,
        gateway: str,
        config_hash: str,
        channels: tuple[str, ...],
        model_hash: str = "",
        quantity: str = "",
        superseding: tuple[str, ...] | None = None,
        verdict_digest: str = "",
    ) -> None:
        where = f"alarms.{rule.condition}"
        if not 1 <= rule.confirm_n <= rule.confirm_m <= MAX_CONFIRM_M:
            raise ConfigError(
                f"{where}.confirm_n",
                f"need 1 <= confirm_n <= confirm_m <= {MAX_CONFIRM_M}, "
                f"got {rule.confirm_n} of {rule.confirm_m}",
            )
        for key in ("min_duration_s", "clear_after_s", "hysteresis", "cooldown_s"):
            if not getattr(rule, key) >= 0:
                raise ConfigError(f"{where}.{key}", f"expected a number >= 0, got {getattr(rule, key)!r}")
        if rule.escalate_after_s is not None and not rule.escalate_after_s > 0:
            problem = f"expected a positive number, got {rule.escalate_after_s}"
            raise ConfigError(f"{where}.escalate_after_s", problem)
        self.rule = rule
        self.gateway = gateway
        self.config_hash = config_hash
        self.model_hash = model_hash
        self.channels = channels
        self.quantity = quantity  # what `observed` measures, for the sentence: the detector's `quantity`
        # What decides this rule's verdicts (saved with its state; "" for none): an episode restored under
        # another one is marked until the rule finds its condition (module docstring).
        self.verdict_digest = verdict_digest
        self._rule_changed: set[int] = set()  # rows of such marked episodes
        # The conditions above this rule in the alarm hierarchy, named when its START tells what they
        # held back: its `superseded_by` and theirs, closed over its stream's rules where the books are
        # built (`agent.config.alarm_hierarchy.superseding_conditions`); default its own only.
        self._superseding = rule.superseded_by if superseding is None else superseding
        self._rows: dict[StreamRef, int] = {}
        self._refs: list[StreamRef] = []
        self._episodes: dict[int, _Episode] = {}
        self._state = np.zeros(0, dtype=np.int64)
        self._history = np.zeros(0, dtype=np.int64)
        self._can_escalate = np.zeros(0, dtype=bool)
        self._peak_limit = np.zeros(0)
        self._peak_channel = np.zeros(0, dtype=np.int64)
        # Whether each row's open episode (pending or confirmed) is a recurrence: its onset fell within the
        # cooldown after the previous END. It then clears after max(clear_after_s, cooldown_s).
        self._recurrent = np.zeros(0, dtype=bool)
        # The id of each row's last ended episode, named by a recurrence's events; saved while its
        # cooldown runs (`_latest`: the latest hop time seen, the book's notion of now for that).
        self._last_id: dict[int, str] = {}
        self._latest = -math.inf
        # The alarm hierarchy's counterpart: hits of this rule not alarmed because a rule above it had an
        # episode under way (those of a pending episode it abandoned, and those while it was active), told
        # in the next START; and the hits of the pending episode under way, counted for that (both saved).
        self._superseded_hits = np.zeros(0, dtype=np.int64)
        self._pending_hits = np.zeros(0, dtype=np.int64)
        # Pending episodes whose start the hierarchy held back (their own conditions met): they wait for
        # the rule above, start when it falls back to NORMAL, are abandoned when it starts (saved).
        self._due = np.zeros(0, dtype=bool)
        # Time of each stream's last hop with a verdict, kept while something is open (not saved: after a
        # restart an open episode counts as unjudged until its next verdict). See `unjudged_priority`
        # and `judged_states` (the alarm hierarchy).
        self._verdict_at = np.zeros(0)
        self._f: dict[str, FloatArray] = {name: np.zeros(0) for name in self._FLOAT_FIELDS}

    @property
    def superseding(self) -> tuple[str, ...]:
        """The conditions above this rule in the alarm hierarchy (transitively), as given at construction."""
        return self._superseding

    # -- rows ------------------------------------------------------------------------------------------

    def row_of(self, stream: StreamRef) -> int:
        """The stream's row (created on first sight): callers that score the same streams over and
        over keep it and pass `rows=` to `update`, which then skips a dictionary lookup per stream."""
        return int(self._row_indices([stream])[0])

    def rows_of(self, streams: Sequence[StreamRef]) -> IntArray:
        """`row_of` of each stream, in one call."""
        return self._row_indices(streams)

    def states_at(self, rows: IntArray) -> IntArray:
        """The machine state (an `AlarmState` value) of each of `rows`."""
        states: IntArray = self._state[rows]
        return states

    def _row_indices(self, streams: Sequence[StreamRef]) -> IntArray:
        rows = np.empty(len(streams), dtype=np.int64)
        for i, ref in enumerate(streams):
            row = self._rows.get(ref)
            if row is None:
                row = self._add_row(ref)
            rows[i] = row
        return rows

    def _add_row(self, ref: StreamRef) -> int:
        row = len(self._refs)
        self._rows[ref] = row
        self._refs.append(ref)
        if row >= self._state.size:  # grow by doubling so adding streams stays cheap
            size = max(8, 2 * self._state.size)
            grow = size - self._state.size
            self._state = np.concatenate([self._state, np.zeros(grow, dtype=np.int64)])
            self._history = np.concatenate([self._history, np.zeros(grow, dtype=np.int64)])
            self._can_escalate = np.concatenate([self._can_escalate, np.zeros(grow, dtype=bool)])
            self._peak_limit = np.concatenate([self._peak_limit, np.full(grow, np.nan)])
            self._peak_channel = np.concatenate([self._peak_channel, np.zeros(grow, dtype=np.int64)])
            self._recurrent = np.concatenate([self._recurrent, np.zeros(grow, dtype=bool)])
            self._superseded_hits = np.concatenate([self._superseded_hits, np.zeros(grow, dtype=np.int64)])
            self._pending_hits = np.concatenate([self._pending_hits, np.zeros(grow, dtype=np.int64)])
            self._due = np.concatenate([self._due, np.zeros(grow, dtype=bool)])
            self._verdict_at = np.concatenate([self._verdict_at, np.full(grow, -math.inf)])
            for name, arr in self._f.items():
                fill = -math.inf if name in _MINUS_INF_FIELDS else np.nan
                self._f[name] = np.concatenate([arr, np.full(grow, fill)])
        return row

    # -- stepping --------------------------------------------------------------------------------------

    def update(
        self,
        streams: Sequence[StreamRef],
        scores: ScoreBlock,
        times: FloatArray,
        quality_ok: BoolArray,
        quality_text: Sequence[str],
        rows: IntArray | None = None,
        superseded: BoolArray | None = None,
        held: BoolArray | None = None,
    ) -> list[AlarmEvent]:
        """Advance every listed stream by one hop; the events to send, in stream order. `rows`, if
        given, are the streams' `row_of` values. The alarm hierarchy (rules of the rule's
        `superseded_by`, see `agent.pipeline.stream`): `held` marks the streams where one is PENDING:
        there the hop counts as usual but no episode may start (it stays PENDING, its onset and hits
        kept); `superseded` those where one is ACTIVE or CLEARING: there the hop counts as a miss and an
        episode not yet started is abandoned with its N-of-M history; one already started goes on."""
        n = len(streams)
        if not (scores.scores.shape == times.shape == quality_ok.shape == (n,) and len(quality_text) == n):
            raise ValueError(f"alarm {self.rule.condition}: {n} streams but score/time/quality sizes differ")
        rule = self.rule
        rows = self._row_indices(streams) if rows is None else rows
        f = self._f
        states = self._state[rows]
        t = np.asarray(times, dtype=np.float64)
        sc = scores.scores
        # A hop without a verdict (no score, or for a physiological rule a poor-quality hop; technical
        # rules ignore quality) says nothing about the condition: it can neither start nor confirm an
        # episode, nor end or abandon one, and it is left out of the N-of-M history. A strap that loses
        # contact during a tachycardia must not end it as if the patient had recovered.
        technical = rule.kind is AlarmKind.TECHNICAL
        known = np.isfinite(sc) if technical else np.isfinite(sc) & np.asarray(quality_ok, dtype=bool)
        hit = scores.exceeded & known
        if superseded is not None and superseded.any():
            # The higher alarm has started: this rule's pending episode and its evidence were its
            # (abandoned, N-of-M history emptied, so its hits do not start this rule the moment the
            # higher one ends), and a hit while it lasts is a miss, counted as held back. A miss rather
            # than no verdict: none would keep an onset for after the higher alarm, maybe an hour later.
            abandoned = superseded & (states == _PENDING)
            if abandoned.any():
                gone = rows[abandoned]
                states = np.where(abandoned, _NORMAL, states)
                self._state[gone] = _NORMAL
                self._history[gone] = 0
                np.add.at(self._superseded_hits, gone, self._pending_hits[gone])
                self._pending_hits[gone] = 0
            unalarmed = hit & superseded & (states == _NORMAL)
            np.add.at(self._superseded_hits, rows[unalarmed], 1)
            hit = hit & ~superseded

        mask = (1 << rule.confirm_m) - 1
        before = self._history[rows]
        history = np.where(known, ((before << 1) | hit.astype(np.int64)) & mask, before)
        self._history[rows] = history
        if t.size:
            self._latest = max(self._latest, float(t.max()))
        if not hit.any() and not states.any():
            # All NORMAL and no hit (the usual hop): every transition out of NORMAL needs a hit, so
            # nothing moves; only the threshold is kept, skipping the table and the peak tracking.
            f["threshold"][rows] = scores.thresholds
            return []
        count = np.bitwise_count(history)
        self._verdict_at[rows[known]] = t[known]

        pending = states == _PENDING
        onset = np.where(pending, f["onset"][rows], t)
        clearing = states == _CLEARING
        clear_since = np.where(clearing, f["clear_since"][rows], t)
        with np.errstate(invalid="ignore"):
            above = sc > clear_level(scores.thresholds, rule.hysteresis)
        # Clear time is judged time: the spans of the clear hops since the first one, not the wall
        # time since it. A gap in the data or hops without a verdict add nothing (review F1: a 35 s
        # unplugged link ended a vibration_high after 3 s of data, and its 3600 s cooldown hid the return).
        spans = self._hop_spans(rows, t)
        clear_judged = _finite(np.where(clearing, f["clear_judged"][rows], 0.0))
        clear_judged += np.where(clearing & known & ~above, spans, 0.0)
        escalate_after = math.inf if rule.escalate_after_s is None else rule.escalate_after_s
        # A recurrence's clear delay is the cooldown: a signal flapping at the limit keeps it open.
        clear_after = np.where(
            self._recurrent[rows], max(rule.clear_after_s, rule.cooldown_s), rule.clear_after_s
        )
        inputs = Inputs(
            hit=hit,
            confirmed=count >= rule.confirm_n,
            matured=t - onset >= rule.min_duration_s - TIME_SLACK_S,
            quiet=count == 0,
            clear=known & ~above,
            abnormal=known & above,
            cleared=clear_judged >= clear_after - TIME_SLACK_S,
            escalate_due=self._can_escalate[rows]
            & (t - f["detection"][rows] >= escalate_after - TIME_SLACK_S),
        )
        if self._rule_changed:  # the changed rule found the condition: its verdicts are its own now
            self._rule_changed.difference_update(rows[inputs.abnormal].tolist())
        new_states, actions = step(states, inputs)
        released: BoolArray | None = None
        if rule.superseded_by or held is not None:
            new_states, actions, released = self._hold(rows, states, new_states, actions, held)
            # the hits of each pending episode, told if the hierarchy abandons it
            waiting = new_states == _PENDING
            self._pending_hits[rows] = np.where(waiting, self._pending_hits[rows] + hit, 0)

        began = (states == _NORMAL) & (new_states != _NORMAL)
        f["onset"][rows[began]] = t[began]
        self._recurrent[rows[began]] = t[began] < f["cooldown_until"][rows[began]] - TIME_SLACK_S
        f["peak_score"][rows[began]] = -math.inf
        to_clearing = (states == _ACTIVE) & (new_states == _CLEARING)
        f["clear_since"][rows[to_clearing]] = t[to_clearing]
        f["clear_since"][rows[clearing & (new_states == _ACTIVE)]] = np.nan
        f["clear_judged"][rows] = np.where(new_states == _CLEARING, clear_judged, np.nan)
        live = (new_states != _NORMAL) | (actions == _END)
        self._track_peak(rows, live, scores)
        f["threshold"][rows] = scores.thresholds
        ending = actions == _END
        end_times = np.where(ending, clear_since, np.nan)
        if ending.any():
            # An END by a changed rule was no recovery: a condition it finds again is no recurrence.
            changed = np.isin(rows, list(self._rule_changed)) if self._rule_changed else np.zeros_like(ending)
            cooling = ending & ~changed
            f["cooldown_until"][rows[cooling]] = end_times[cooling] + rule.cooldown_s
            f["cooldown_until"][rows[ending & changed]] = -math.inf
        self._state[rows] = new_states

        events: list[AlarmEvent] = []
        for i in np.flatnonzero(actions != _NONE).tolist():
            action = Action(int(actions[i]))
            late = released is not None and bool(released[i])
            events.append(self._event(int(rows[i]), action, scores, i, float(t[i]), quality_text[i], late))
        return events

    def _hop_spans(self, rows: IntArray, t: FloatArray) -> FloatArray:
        """The seconds of data each stream's hop at `t` judged: the time since its previous hop, but at
        most twice its typical hop interval, so a link gap, a restart or a detector refilling its window
        after a gap (no hops at all, then one) counts as about one hop, not as the whole silence. The
        typical interval is the mean of the last one and the span just counted: it follows a jittery
        source (hops of 0.5 and 1.5 s count in full) but a gap hardly moves it, and a source whose
        interval grows for good loses a few hops' worth once. Kept only outside the all-NORMAL fast path
        of `update`: a stale interval there is replaced before a clearing counts it."""
        typical = self._f["hop_interval"][rows]
        elapsed = t - self._f["last_hop"][rows]
        with np.errstate(invalid="ignore"):
            # the method `np.clip` calls, without its dispatch (half the cost at these sizes)
            spans: FloatArray = np.where(np.isfinite(typical), elapsed.clip(0.0, 2.0 * typical), 0.0)
            moved = np.isfinite(elapsed) & (elapsed > 0)
        learnt = np.where(np.isfinite(typical), (typical + spans) / 2.0, elapsed)
        self._f["hop_interval"][rows] = np.where(moved, learnt, typical)
        self._f["last_hop"][rows] = t
        return spans

    def _hold(
        self,
        rows: IntArray,
        states: IntArray,
        new_states: IntArray,
        actions: IntArray,
        held: BoolArray | None,
    ) -> tuple[IntArray, IntArray, BoolArray]:
        """The alarm hierarchy's hold on this hop's transitions: a START while `held` (a rule above
        PENDING) is turned back into PENDING and the episode marked due; a due episode stays PENDING
        while held whatever its own hops say (its quiet hops do not abandon it), and starts at once on
        the first hop it is no longer held (the rule above fell back to NORMAL without starting: its
        conditions were met, so a condition that came and went while held is still alarmed, late).
        (new states, actions, which STARTs are such late releases.)"""
        due = self._due[rows] & (states == _PENDING)
        if held is None:
            held = np.zeros(len(rows), dtype=bool)
        blocked = held & (actions == _START)
        waiting = held & (blocked | due)
        new_states = np.where(waiting, _PENDING, new_states)
        actions = np.where(waiting, _NONE, actions)
        released = due & ~held
        new_states[released] = _ACTIVE
        actions[released] = _START
        self._due[rows] = waiting
        return new_states, actions, released

    def _track_peak(self, rows: IntArray, live: BoolArray, scores: ScoreBlock) -> None:
        f = self._f
        with np.errstate(invalid="ignore"):
            better = live & (scores.scores > f["peak_score"][rows])
        if not better.any():  # the usual hop of an episode under way: no new peak
            return
        r = rows[better]
        f["peak_score"][r] = scores.scores[better]
        f["peak_observed"][r] = scores.observed[better]
        self._peak_limit[r] = scores.limits[better]
        self._peak_channel[r] = np.argmax(_finite(scores.contributions[better], nan=0.0), axis=1)

    def shift_times(self, delta: float, streams: Sequence[StreamRef] | None = None) -> None:
        """The wall clock the times of `streams` (default all) were read from stepped by `delta` seconds
        (NTP, an admin): move their stored instants (onset, detection, clear start, cooldown end) with
        it, so minimum duration, clearing, cooldown and escalation count the seconds that really passed."""
        if streams is None:
            rows = np.arange(len(self._refs))
        else:
            rows = np.array([self._rows[s] for s in streams if s in self._rows], dtype=np.int64)
        for name in ("onset", "detection", "clear_since", "cooldown_until", "last_hop"):
            self._f[name][rows] += delta  # NaN and -inf (never set) stay as they are

    # -- events ----------------------------------------------------------------------------------------

    def _event(
        self, row: int, action: Action, scores: ScoreBlock, i: int, t: float, quality: str, late: bool = False
    ) -> AlarmEvent:
        rule = self.rule
        f = self._f
        onset = float(f["onset"][row])
        if action is Action.START:
            recurrence_of = self._last_id.get(row, "") if self._recurrent[row] else None
            episode = _Episode(str(uuid7()), 0, rule.priority, recurrence_of=recurrence_of)
            self._episodes[row] = episode
            f["detection"][row] = t
            self._can_escalate[row] = rule.escalate_after_s is not None and rule.priority is not Priority.HIGH
        episode = self._episodes[row]
        detection = float(f["detection"][row])
        channel = int(np.argmax(np.nan_to_num(scores.contributions[i], nan=0.0)))
        observed, limit = float(scores.observed[i]), float(scores.limits[i])
        score, threshold = float(scores.scores[i]), float(scores.thresholds[i])
        end_time: float | None = None
        if action is Action.ESCALATE:
            episode.priority = raised(episode.priority)
            self._can_escalate[row] = False
        if action is Action.END:
            end_time = float(f["clear_since"][row]) if math.isfinite(f["clear_since"][row]) else t
            # Data times that went back past the onset (a simulator restarted by a reload, a device
            # clock reset) must not give a back end an episode that ends before it began.
            end_time = max(end_time, onset)
        if action is not Action.START or late:
            # The episode's worst so far: an escalation may come on a hop inside the hysteresis band
            # ("hr 116 bpm below limit 120 bpm; raised to high" read as a contradiction).
            channel = int(self._peak_channel[row])
            observed, limit = float(f["peak_observed"][row]), float(self._peak_limit[row])
            score = float(f["peak_score"][row])
        phrase = explain.crossing(
            rule.detector, self.channels[channel], observed, limit, score, threshold, rule.unit, self.quantity
        )
        if action is Action.START:
            # Confirmed on its first hop (no minimum duration: a detector that measures the duration
            # itself, as spo2_desaturation does): no "for 0 s".
            text = f"{phrase} for {explain.seconds(t - onset)}" if t - onset >= 0.5 else phrase
            if late:  # held back by the hierarchy until the rule above fell back without starting
                above = " or ".join(self._superseding)
                text = (
                    f"peak {phrase}, onset {explain.seconds(t - onset)} ago; held while {above} was pending"
                )
            if episode.recurrence_of is not None:
                after = explain.seconds(max(0.0, onset - (float(f["cooldown_until"][row]) - rule.cooldown_s)))
                text += f"; recurred {after} after the previous episode ended (within cooldown_s)"
            if superseded := int(self._superseded_hits[row]):
                above = " or ".join(self._superseding)
                text += f"; {superseded} abnormal hop(s) during {above} not alarmed"
                self._superseded_hits[row] = 0
        elif action is Action.ESCALATE:
            active = explain.seconds(t - detection)
            text = f"peak {phrase}; active {active}, raised to {episode.priority.value}"
        else:
            assert end_time is not None
            text = f"peak {phrase}; ended after {explain.seconds(end_time - onset)}"
            if episode.recurrence_of is not None and rule.cooldown_s > rule.clear_after_s:
                cooldown = explain.seconds(rule.cooldown_s)
                text += f"; a recurrence: clear for {cooldown} (cooldown_s) before its end"
        if action is not Action.START and episode.unjudged_s > 0:
            text += explain.unjudged(episode.unjudged_s)
        end_cause = EndCause.CLEARED
        if action is Action.END and row in self._rule_changed:
            end_cause = EndCause.RULE_CHANGED
            text += explain.RULE_CHANGED
        measured = explain.has_measure(observed, limit)
        event = AlarmEvent(
            id=episode.id,
            seq=episode.next_seq,
            phase={Action.START: Phase.START, Action.ESCALATE: Phase.UPDATE, Action.END: Phase.END}[action],
            gateway=self.gateway,
            device=self._refs[row].device_pseudonym,
            stream=self._refs[row].stream,
            condition=rule.condition,
            priority=episode.priority,
            kind=rule.kind,
            onset_time=onset,
            detection_time=detection,
            value=observed if measured else score,
            threshold=limit if measured else threshold,
            unit=rule.unit,
            explanation=Explanation(
                detector=rule.detector,
                score=score,
                threshold=threshold,
                top_channels=explain.top_channels(self.channels, scores.contributions[i]),
                baseline=explain.baseline_map(self.channels, scores.baseline[i]),
                signal_quality=quality,
                text=text,
            ),
            end_time=end_time,
            config_hash=self.config_hash,
            model_hash=self.model_hash,
            unjudged_s=episode.unjudged_s,
            end_cause=end_cause,
            rule_changed=row in self._rule_changed,
            recurrence_of=episode.recurrence_of,
        )
        episode.next_seq += 1
        if action is Action.END:
            self._last_id[row] = episode.id
            del self._episodes[row]
            self._rule_changed.discard(row)
            f["clear_since"][row] = np.nan
            self._can_escalate[row] = False
        return event

    # -- queries and shutdown --------------------------------------------------------------------------

    def active_count(self) -> int:
        states = self._state[: len(self._refs)]
        return int(np.count_nonzero((states == AlarmState.ACTIVE) | (states == AlarmState.CLEARING)))

    def judged_states(self, rows: IntArray, since: FloatArray) -> IntArray:
        """The state of each of `rows`, NORMAL for one without a verdict since `since` (per row): what
        holds back or supersedes the rules below this one in an alarm hierarchy. A rule whose detector
        fails (or whose signal is lost) for longer must not silence the rules below it."""
        judged = self._verdict_at[rows] >= since - TIME_SLACK_S
        states: IntArray = np.where(judged, self._state[rows], AlarmState.NORMAL)
        return states

    def take_superseded_hits(self, row: int) -> int:
        """The row's hits held back by the alarm hierarchy since they were last told, now told (zeroed)."""
        held = int(self._superseded_hits[row])
        self._superseded_hits[row] = 0
        return held

    def state_of(self, stream: StreamRef) -> AlarmState:
        row = self._rows.get(stream)
        return AlarmState.NORMAL if row is None else AlarmState(int(self._state[row]))

    def unjudged_priority(self, stream: StreamRef, since: float) -> Priority | None:
        """The priority of `stream`'s confirmed open episode if it has had no verdict since `since`
        (e.g. a technical condition's onset; math.inf: any open episode), else None."""
        row = self._rows.get(stream)
        if row is None or row not in self._episodes or self._verdict_at[row] >= since:
            return None
        return self._episodes[row].priority

    def raise_priority(self, stream: StreamRef, priority: Priority) -> None:
        """Raise `stream`'s open episode to `priority` (never lower it): its later events carry it."""
        row = self._rows.get(stream)
        episode = None if row is None else self._episodes.get(row)
        if episode is not None and priority.rank < episode.priority.rank:
            episode.priority = priority

    def mark_rule_changed(self, stream: StreamRef) -> None:
        """Mark `stream`'s open episode as judged by a changed rule from now on, as a changed
        `verdict_digest` marks a restored book's: for a limit given per stream at each `update` (a
        device's `lost_after_s`), which the book's digest does not hold (`ThresholdAlarm`)."""
        row = self._rows.get(stream)
        if row is not None and row in self._episodes:
            self._rule_changed.add(row)

    def close_all(self, time: float, streams: Sequence[StreamRef] | None = None) -> list[AlarmEvent]:
        """End every confirmed episode (of `streams`, default all) at `time`, without cooldown.

        Not for shutdown (alarms stay active across restarts): for removed streams and tests.
        """
        targets = self._refs if streams is None else [s for s in streams if s in self._rows]
        events: list[AlarmEvent] = []
        for ref in targets:
            row = self._rows[ref]
            if row in self._episodes:
                self._f["clear_since"][row] = time
                n_ch = len(self.channels)
                last = ScoreBlock(
                    np.array([self._f["peak_score"][row]]),
                    np.array([self._f["threshold"][row]]),
                    np.zeros((1, n_ch)),
                    np.array([np.nan]),
                    np.array([np.nan]),
                    np.full((1, n_ch), np.nan),
                )
                events.append(self._event(row, Action.END, last, 0, time, "ok"))
            self._state[row] = AlarmState.NORMAL
            self._history[row] = 0
            self._pending_hits[row] = 0
            self._due[row] = False
        return events

    # -- persistence ---------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """JSON-able: every stream not in a fresh NORMAL state (or holding hits the alarm hierarchy kept
        from alarming, not told yet), with its episode id and next seq."""
        return self.snapshot().state()

    def snapshot(self) -> BookSnapshot:
        """The rows `state()` saves, copied in a few array operations: the heartbeat takes it on the
        event loop and turns it into JSON in a thread (`BookSnapshot.state`) while the book moves on."""
        n = len(self._refs)
        keep = (self._state[:n] != AlarmState.NORMAL) | np.isfinite(self._f["cooldown_until"][:n])
        keep |= self._superseded_hits[:n] > 0  # a NORMAL row may hold hits not told yet (the hierarchy)
        rows = np.flatnonzero(keep)
        # Looked up per open episode, not per saved row (9,000 against 22,000 in a storm).
        held = list(self._episodes.items())
        episode_rows = np.array([row for row, _ in held], dtype=np.int64)
        at = np.searchsorted(rows, episode_rows)
        kept = at < len(rows)  # an episode's row is kept (it is not NORMAL)
        kept[kept] = rows[at[kept]] == episode_rows[kept]
        episodes = {
            i: (e.id, e.next_seq, e.priority, e.unjudged_s, row in self._rule_changed, e.recurrence_of)
            for i, (row, e), ok in zip(at.tolist(), held, kept.tolist(), strict=True)
            if ok
        }
        # The last episode's id of the rows still in their cooldown (a recurrence names it).
        cooling = rows[self._f["cooldown_until"][rows] > self._latest].tolist() if self._last_id else []
        position = {row: i for i, row in enumerate(rows.tolist())} if cooling else {}
        last_ids = {position[row]: self._last_id[row] for row in cooling if row in self._last_id}
        return BookSnapshot(
            condition=self.rule.condition,
            verdict_digest=self.verdict_digest,
            refs=[self._refs[row] for row in rows.tolist()],
            episodes=episodes,
            states=self._state[rows],
            history=self._history[rows],
            can_escalate=self._can_escalate[rows],
            peak_limit=self._peak_limit[rows],
            peak_channel=self._peak_channel[rows],
            floats={name: self._f[name][rows] for name in self._FLOAT_FIELDS},
            superseded_hits=self._superseded_hits[rows],
            pending_hits=self._pending_hits[rows],
            due=self._due[rows],
            last_ids=last_ids,
        )

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore `state()`; ConfigError names the offending entry."""
        where = f"state.alarms.{self.rule.condition}"
        if state.get("condition") != self.rule.condition:
            raise ConfigError(f"{where}.condition", f"state is for {state.get('condition')!r}")
        # Saved under another judge (a state saved before digests were kept has none: not marked).
        saved_digest = state.get("verdict_digest")
        judge_changed = bool(self.verdict_digest and saved_digest) and saved_digest != self.verdict_digest
        for k, item in enumerate(state.get("streams", [])):
            try:
                row = self._row_indices([StreamRef(str(item["device"]), str(item["stream"]))])[0]
                self._state[row] = AlarmState[item["state"]]
                self._history[row] = int(item["history"])
                self._can_escalate[row] = bool(item["can_escalate"])
                self._peak_limit[row] = _unjson(item["peak_limit"], np.nan)
                self._peak_channel[row] = int(item["peak_channel"])
                for name in self._FLOAT_FIELDS:
                    fill = -math.inf if name in _MINUS_INF_FIELDS else np.nan
                    # The judged-time fields are newer than the others: a state without them (or a
                    # journal row) restarts a clearing episode's count, so its end comes later, never
                    # earlier, and its first two hops count nothing.
                    value = item.get(name) if name in _JUDGED_TIME_FIELDS else item[name]
                    self._f[name][row] = _unjson(value, fill)
                # The alarm hierarchy's marks, written only when set: a state saved before they were
                # (or a state journal row) has none, which is nothing held.
                self._superseded_hits[row] = int(item.get("superseded_hits", 0))
                self._pending_hits[row] = int(item.get("pending_hits", 0))
                self._due[row] = bool(item.get("due", False))
                last_id = item.get("last_episode")  # written while the cooldown runs (since 2026-12-01)
                if isinstance(last_id, str):
                    self._last_id[row] = last_id
                episode = item.get("episode")
                recurrence_of = None if episode is None else episode.get("recurrence_of")
                if episode is not None:
                    self._episodes[row] = _Episode(
                        str(episode["id"]),
                        int(episode["next_seq"]),
                        Priority(episode["priority"]),
                        float(episode.get("unjudged_s", 0.0)),
                        None if recurrence_of is None else str(recurrence_of),
                    )
                    if judge_changed or episode.get("rule_changed") is True:
                        self._rule_changed.add(row)
                # A confirmed episode says whether it recurred; a pending one by its onset in the cooldown.
                pending = self._state[row] == AlarmState.PENDING
                onset, cooldown_until = self._f["onset"][row], self._f["cooldown_until"][row]
                self._recurrent[row] = recurrence_of is not None or (
                    bool(pending) and bool(onset < cooldown_until - TIME_SLACK_S)
                )
            except (KeyError, ValueError, TypeError) as exc:
                raise ConfigError(f"{where}.streams[{k}]", f"unreadable alarm state: {exc!r}") from exc


@dataclass(frozen=True)
class BookSnapshot:
    """Copies of an `AlarmBook`'s saved rows (fancy indexing copies), independent of the live book."""

    condition: str
    verdict_digest: str  # `AlarmBook.verdict_digest`
    refs: list[StreamRef]
    # position in `refs` -> id, next seq, priority, unjudged seconds, marked (rule changed, not found since),
    # recurrence of (`_Episode.recurrence_of`)
    episodes: dict[int, tuple[str, int, Priority, float, bool, str | None]]
    states: IntArray
    history: IntArray
    can_escalate: BoolArray
    peak_limit: FloatArray
    peak_channel: IntArray
    floats: dict[str, FloatArray]
    # the alarm hierarchy's (`AlarmBook._superseded_hits`, `_pending_hits`, `_due`): zero on most rows
    superseded_hits: IntArray
    pending_hits: IntArray
    due: BoolArray
    last_ids: dict[int, str]  # position in `refs` -> its last ended episode's id, while its cooldown runs

    def state(self, between: Callable[[], None] = _nothing) -> dict[str, Any]:
        """The JSON-able rows of `AlarmBook.state`, calling `between()` after every `ROWS_BETWEEN` rows
        (the state saver's thread gives way to the event loop there). Fields are converted a column at a
        time: a per-row pass with numpy scalars took 2.8 s at 30,000 vitals streams (8 books)."""
        names = [s.name for s in AlarmState]
        columns: dict[str, list[Any]] = {
            "state": [names[code] for code in self.states.tolist()],
            "history": self.history.tolist(),
            "can_escalate": self.can_escalate.tolist(),
            "peak_limit": [_json(v) for v in self.peak_limit.tolist()],
            "peak_channel": self.peak_channel.tolist(),
        }
        for name, values in self.floats.items():
            columns[name] = [_json(v) for v in values.tolist()]
        # Only the rows that hold something get the hierarchy's keys (a few, beside thousands of rows).
        marked = np.flatnonzero((self.superseded_hits > 0) | (self.pending_hits > 0) | self.due)
        hierarchy = {
            i: {"superseded_hits": s, "pending_hits": p, "due": d}
            for i, s, p, d in zip(
                marked.tolist(),
                self.superseded_hits[marked].tolist(),
                self.pending_hits[marked].tolist(),
                self.due[marked].tolist(),
                strict=True,
            )
        }
        items = []
        for i, ref in enumerate(self.refs):
            if i % ROWS_BETWEEN == ROWS_BETWEEN - 1:
                between()
            item: dict[str, Any] = {"device": ref.device_pseudonym, "stream": ref.stream}
            item.update({name: column[i] for name, column in columns.items()})
            item.update(hierarchy.get(i, {}))
            if i in self.last_ids:
                item["last_episode"] = self.last_ids[i]
            episode = self.episodes.get(i)
            if episode is not None:
                item["episode"] = {
                    "id": episode[0],
                    "next_seq": episode[1],
                    "priority": episode[2].value,
                    "unjudged_s": episode[3],
                }
                if episode[4]:  # written only when set, as the hierarchy's marks are
                    item["episode"]["rule_changed"] = True
                if episode[5] is not None:
                    item["episode"]["recurrence_of"] = episode[5]
            items.append(item)
        book: dict[str, Any] = {"condition": self.condition, "streams": items}
        if self.verdict_digest:
            book["verdict_digest"] = self.verdict_digest
        return book


def merged_state(
    snapshots: Mapping[str, Sequence[BookSnapshot]], between: Callable[[], None] = _nothing
) -> dict[str, Any]:
    """The saved alarm state: per key ("detector/condition"), the rows of all its books' snapshots
    (the signal-quality alarms keep one book per stream name under one key)."""
    merged: dict[str, Any] = {}
    for key, books in snapshots.items():
        merged[key] = {
            "condition": books[0].condition,
            "streams": [row for book in books for row in book.state(between)["streams"]],
        }
        if books[0].verdict_digest:  # one book per key wherever there is one (the rules' books)
            merged[key]["verdict_digest"] = books[0].verdict_digest
    return merged


def _json(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _unjson(value: Any, missing: float) -> float:
    return missing if value is None else float(value)
