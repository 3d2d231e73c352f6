"""Technical alarms about the monitoring itself: sensor off, poor signal, low battery, device lost.

They reuse the alarm state machine with fixed rules: the "score" is 1 while the condition holds
(or the seconds of silence, for a lost device), so minimum duration, clearing and cooldown behave
exactly as for physiological alarms.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

import numpy as np

from agent.alarms import AlarmBook, AlarmState, BookSnapshot, StreamRef, explain
from agent.config.schema import AlarmRuleConfig
from agent.detectors.base import IntArray, ScoreBlock
from agent.events import AlarmEvent, AlarmKind, EndCause, Phase, Priority
from agent.pipeline.bad_share import OFF_SHARE, ON_SHARE, WINDOW_S, BadShare, Copy
from agent.readings import Quality

# condition -> (flags that mean it, priority)
QUALITY_CONDITIONS: dict[str, tuple[Quality, Priority]] = {
    "sensor_off": (Quality.NO_CONTACT, Priority.MEDIUM),
    "signal_poor": (Quality.OUT_OF_RANGE | Quality.ARTIFACT | Quality.MOTION, Priority.LOW),
    "battery_low": (Quality.LOW_BATTERY, Priority.LOW),
    "device_fault": (Quality.DEVICE_FAULT, Priority.MEDIUM),
}

# What each condition means, for the alarm's one-line explanation: f(value, limit) -> phrase.
DESCRIPTIONS: dict[str, Callable[[float, float], str]] = {
    "sensor_off": lambda v, lim: "no sensor contact (electrode or strap off)",
    "signal_poor": lambda v, lim: "signal unusable: out of range, no value, artifact or motion",
    "battery_low": lambda v, lim: "device battery low",
    "device_fault": lambda v, lim: "the device reports a fault",
    "device_lost": lambda v, lim: f"no data from the device for {v:.0f} s (limit {lim:.0f} s)",
    "profile_silent": lambda v, lim: (
        f"the BLE profile sent nothing for {v:.0f} s while the device's other profiles did (limit"
        f" {lim:.0f} s): its channels are not monitored"
    ),
    "rr_invalid": lambda v, lim: (
        f"RR intervals impossible (outside 0.17-10 s: 0 or 65535 ticks) in {v:.0%} of the last 60 s (limit"
        f" {lim:.0%}), dropped: the RR-based rules (AF) get no beats while the heart rate goes on"
    ),
    "channel_missing": lambda v, lim: (
        "a detector reads a channel the device does not send: it cannot judge the stream"
    ),
    "outbox_filling": lambda v, lim: (
        f"alarm events waiting fill {v:.0%} of the outbox (warning level {lim:.0%}); the uplink is not"
        " draining, and past 100% they are kept beyond outbox.max_bytes"
    ),
    "publish_refused": lambda v, lim: f"{v:.0f} message(s) refused by the broker (ACL or size); kept aside",
    "outbox_damaged": lambda v, lim: (
        "the outbox file was damaged and was set aside at start; the messages waiting in it were not"
        " sent (the gateway log names the file, which sqlite3 .recover may salvage)"
    ),
    "detector_failing": lambda v, lim: (
        f"the detector raised an error {v:.0f} time(s) in the last second; its streams get no verdict"
        " from it (see the gateway log)"
    ),
    "model_fallback": lambda v, lim: (
        "the detector's model (current version) does not load; it runs on the previous version (the"
        " gateway log says why; activate a version that loads)"
    ),
    "uplink_failing": lambda v, lim: (
        "the gateway's MQTT network thread stopped on an error; restarted with backoff, events wait in"
        " the outbox meanwhile (the gateway log says why)"
    ),
    "outbox_unwritable": lambda v, lim: (
        "the outbox cannot be written (a full or read-only disk?): alarm events wait in memory until it"
        " can and are sent directly while the broker is connected; heartbeats likewise (see the gateway log)"
    ),
    "outbox_unreadable": lambda v, lim: (
        f"{v:.0f} outbox message(s) cannot be decrypted (wrong outbox key?) or are damaged in the file"
        " (see the gateway log); kept aside, not sent"
    ),
}

# The END of a silence alarm whose limit (the device's `lost_after_s`) a reload or restart changed to
# above the silence: nothing came, so "cleared: data again" would tell the back end a lie. f(silence,
# new limit) -> text (`ThresholdAlarm`; its `rule_changed` end cause).
CHANGED_LIMIT_ENDS: dict[str, Callable[[float, float], str]] = {
    "device_lost": lambda v, lim: (
        f"ended without data: lost_after_s changed to {lim:.0f} s (a reload or restart), and the device's"
        f" silence of {v:.0f} s is within it; device_lost starts again if the silence reaches it"
    ),
    "profile_silent": lambda v, lim: (
        f"ended without a notification: lost_after_s changed to {lim:.0f} s (a reload or restart), and the"
        f" BLE profile's silence of {v:.0f} s is within it; profile_silent starts again if it reaches it"
    ),
}


def describe(event: AlarmEvent) -> AlarmEvent:
    """The event with a readable explanation of the technical condition instead of score vs threshold."""
    what = DESCRIPTIONS[event.condition](event.value, event.threshold)
    held_s = event.detection_time - event.onset_time
    if event.phase is Phase.START:
        text = f"{what}, for {held_s:.0f} s" if held_s >= 1 else what
    elif event.phase is Phase.END and event.end_cause is EndCause.RULE_CHANGED:
        # The condition holds as before, under a limit a reload or restart changed: no "cleared". Told
        # with the ending check's value and limit (the explanation's), not the peak's (the old limit).
        lasted = (event.end_time or event.onset_time) - event.onset_time
        now, limit = event.explanation.score, event.explanation.threshold
        changed = CHANGED_LIMIT_ENDS.get(event.condition)
        if changed is not None:
            text = f"{changed(now, limit)}; alarm lasted {lasted:.0f} s"
        else:
            text = (
                f"ended without a recovery: {DESCRIPTIONS[event.condition](now, limit)}: the limit changed"
                f" (a reload or restart) and the condition is within it; alarm lasted {lasted:.0f} s"
            )
    elif event.phase is Phase.END and event.condition == "device_lost":
        # Two durations, each named: the longest silence measured and the alarm's own span (a reader
        # took "no data for 40 s; lasted 25 s" for a contradiction).
        text = (
            f"cleared: data again after a silence of {event.value:.0f} s (limit {event.threshold:.0f} s);"
            f" alarm lasted {(event.end_time or event.onset_time) - event.onset_time:.0f} s"
        )
    elif event.phase is Phase.END and event.condition == "outbox_filling":
        # The START's "not draining" is no longer true at the END: it drained (an operator read the
        # END's "the uplink is not draining" as the state now).
        lasted = (event.end_time or event.onset_time) - event.onset_time
        text = (
            f"cleared: the alarm events waiting are below the outbox's warning level ({event.threshold:.0%})"
            f" again, after a peak of"
            f" {event.value:.0%}; alarm lasted {lasted:.0f} s"
        )
    elif event.phase is Phase.END and event.condition == "rr_invalid":
        # "the RR rules get no beats" is no longer true at the END: valid intervals came back.
        lasted = (event.end_time or event.onset_time) - event.onset_time
        text = (
            f"cleared: valid RR intervals again, none impossible for 10 s (at worst {event.value:.0%} of"
            f" a minute impossible); alarm lasted {lasted:.0f} s"
        )
    elif event.phase is Phase.END:
        text = f"cleared: {what}; lasted {(event.end_time or event.onset_time) - event.onset_time:.0f} s"
    else:
        text = f"{what}; priority now {event.priority.value}"
    if event.phase is not Phase.START and event.unjudged_s > 0:
        text += explain.unjudged(event.unjudged_s)
    return dataclasses.replace(event, explanation=dataclasses.replace(event.explanation, text=text))


# Conditions that leave a stream's (or a device's) open physiological episodes without a verdict: they
# are held, neither confirmed nor ended, until the signal is back (agent.pipeline.quality).
BLINDING = frozenset(
    {
        "sensor_off",
        "signal_poor",
        "device_fault",
        "device_lost",
        "profile_silent",
        "rr_invalid",
        "channel_missing",
    }
)


def unusable(
    event: AlarmEvent,
    channels: Sequence[str],
    rules: Mapping[str, Sequence[tuple[str, Priority]]],
    moving: bool,
) -> AlarmEvent:
    """A signal_poor START naming the `channels` without a usable sample. MEDIUM, as sensor_off, when
    only values out of range (not the device's motion or artifact flag: `moving`) made them unusable and
    one of them is read by a physiological alarm rule of medium or high priority (`rules`: channel -> its
    rules' conditions and priorities; no higher than the highest of them, so a LOW rule's channel stays
    LOW): a strap sending HR 0 in contact has the same effect as one off the skin, its rules cannot judge the
    patient until someone sees to it, and it does not pass by itself. A LOW "signal unusable" for it left
    tachycardia and bradycardia unmonitored without a word (ward review 2026-12-01). Motion and
    artifact stay LOW: they come with a patient moving and pass when the patient rests, and a MEDIUM for
    each would be alarm fatigue; a channel no rule reads stays LOW too. (An open episode it blinds
    raises it further: `blinding`.)"""
    if event.phase is not Phase.START or event.condition != "signal_poor" or not channels:
        return event
    text = event.explanation.text.replace("signal unusable:", f"signal unusable on {', '.join(channels)}:", 1)
    blind = sorted({rule for channel in channels for rule in rules.get(channel, ())}, key=lambda r: r[0])
    priority = event.priority
    highest = min((p for _, p in blind), key=lambda p: p.rank, default=Priority.LOW)
    raised = max(Priority.MEDIUM, highest, key=lambda p: p.rank)  # at most MEDIUM, at most their highest
    if blind and not moving and raised.rank < priority.rank:
        priority = raised
        text += f"; not monitored meanwhile: {', '.join(condition for condition, _ in blind)}"
    return dataclasses.replace(
        event, priority=priority, explanation=dataclasses.replace(event.explanation, text=text)
    )


def blinding(event: AlarmEvent, hidden: Sequence[tuple[str, Priority]]) -> AlarmEvent:
    """A START of a BLINDING condition while physiological episodes are open (`hidden`: their conditions
    and priorities) takes the highest of their priorities and names them. A LOW "signal unusable" that
    stopped the judging of an active HIGH spo2_low read as a minor nuisance (clinical review, 2026-11-30);
    IEC 60601-1-8 asks a technical alarm's priority to match what it keeps from being monitored."""
    if event.phase is not Phase.START or event.condition not in BLINDING or not hidden:
        return event
    priority = min((p for _, p in hidden), key=lambda p: p.rank)
    if event.priority.rank < priority.rank:
        priority = event.priority
    names = ", ".join(f"{condition} ({p.value})" for condition, p in hidden)
    text = f"{event.explanation.text}; open and not judged meanwhile: {names}"
    return dataclasses.replace(
        event, priority=priority, explanation=dataclasses.replace(event.explanation, text=text)
    )


# The states as plain ints for the per-reading code: `AlarmState.X` goes through `EnumType.__getattr__`
# on Python 3.11 (see agent.alarms.book).
_NORMAL, _PENDING, _CLEARING = (int(s) for s in (AlarmState.NORMAL, AlarmState.PENDING, AlarmState.CLEARING))
MAX_CHANGES_KEPT = 10_000  # `take_engaged_changes` then says "any"
TECHNICAL_COOLDOWN_S = 30.0  # every built-in technical rule's cooldown
BUILTIN_PREFIX = "builtin."  # built-in rules' detector names: "builtin.<condition>"
# The signal-quality books' keys among the saved alarm state (`ThresholdAlarm.key`).
QUALITY_KEYS = frozenset(f"{BUILTIN_PREFIX}{c}/{c}" for c in QUALITY_CONDITIONS)


def technical_rule(
    condition: str, priority: Priority, min_duration_s: float, clear_after_s: float
) -> AlarmRuleConfig:
    return AlarmRuleConfig(
        condition=condition,
        detector=f"{BUILTIN_PREFIX}{condition}",
        priority=priority,
        kind=AlarmKind.TECHNICAL,
        min_duration_s=min_duration_s,
        clear_after_s=clear_after_s,
        cooldown_s=TECHNICAL_COOLDOWN_S,
    )


def noted_rounds(
    pending: Sequence[tuple[StreamRef, int, float]],
) -> list[list[tuple[StreamRef, int, float]]]:
    """Noted (stream, flags, time) in rounds where each stream appears once: its k-th reading goes to
    round k, so stepping the rounds in order takes each stream's readings in order."""
    rounds: list[list[tuple[StreamRef, int, float]]] = []
    seen: dict[StreamRef, int] = {}
    for item in pending:
        k = seen.get(item[0], 0)
        seen[item[0]] = k + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(item)
    return rounds


class QualityAlarms:
    """Signal-quality conditions of one stream name, fed with each reading's flags."""

    def __init__(
        self, gateway: str, config_hash: str, min_duration_s: float = 10.0, clear_after_s: float = 10.0
    ):
        self._alarms = {
            condition: (
                int(flags),  # a plain int: `int & Quality` would go through enum.Flag's Python code
                ThresholdAlarm(condition, priority, gateway, config_hash, min_duration_s, clear_after_s),
            )
            for condition, (flags, priority) in QUALITY_CONDITIONS.items()
        }
        # Per condition, the streams whose book is not NORMAL: a mirror of the books' states, kept by
        # `drain` for the streams it steps (a book changes no other) and by `load_state`.
        self._abnormal: dict[str, set[StreamRef]] = {condition: set() for condition in self._alarms}
        # Per condition, each stream's bad time of the last minute (the intermittent rule, `drain`), the
        # streams with a bad stretch under way (their next reading ends it, so it is noted), and those
        # whose pending episode the rule kept over good readings (their START says so). A tracker is
        # kept per stream that ever had the flag, as the book keeps a row. Saved with the books
        # (`shares_saved`, `load_shares`: a restart within the window goes on with the minute).
        self._shares: dict[str, dict[StreamRef, BadShare]] = {condition: {} for condition in self._alarms}
        self._open: dict[str, dict[StreamRef, BadShare]] = {condition: {} for condition in self._alarms}
        self._bridged: dict[str, set[StreamRef]] = {condition: set() for condition in self._alarms}
        # Streams with some condition not NORMAL or a bad stretch open: the union of the above.
        self._engaged: set[StreamRef] = set()
        # Streams whose engagement changed since `take_engaged_changes` (None: any may have), for a
        # caller that keeps its own copy of `_engaged` as a mask over its streams.
        self._changed: list[StreamRef] | None = []
        # Per stream, the signal_poor flags of its last reading that had one: whether the device said
        # motion or artifact, or only the quality gate found a value out of range (`unusable`).
        self._poor_flags: dict[StreamRef, int] = {}
        self._pending: list[tuple[StreamRef, int, float]] = []  # flags noted since the last drain
        self._noted: set[StreamRef] = set()  # streams in `_pending`

    def observe(self, ref: StreamRef, quality: int, time: float) -> None:
        """Note one reading's flags; the books are stepped by `drain()`, once per flush.

        An OK reading of a stream whose conditions are all NORMAL (with an empty hit history: the
        technical rules confirm on 1 of 1 hops) and that has no bad stretch under way steps nothing,
        so it is not even noted: that is almost every reading."""
        if quality or ref in self._engaged or ref in self._noted:
            self._pending.append((ref, quality, time))
            self._noted.add(ref)

    def watching(self) -> set[StreamRef]:
        """The streams whose OK readings `observe` notes too (some condition engaged or a bad stretch
        under way, or noted since the last drain), so a caller with many OK readings can skip the rest
        without asking."""
        return self._engaged | self._noted

    @property
    def engaged(self) -> AbstractSet[StreamRef]:
        """The streams with some condition not NORMAL or a bad stretch under way (`observe` notes their
        OK readings)."""
        return self._engaged

    @property
    def noted(self) -> AbstractSet[StreamRef]:
        """The streams noted since the last drain (`observe` notes their OK readings too)."""
        return self._noted

    def take_engaged_changes(self) -> list[StreamRef] | None:
        """The streams that entered or left `engaged` since the last call (in any order, maybe twice),
        or None when any may have (restored state, or too many to keep a list of)."""
        changed, self._changed = self._changed, []
        return changed

    def drain(self) -> list[AlarmEvent]:
        """Step the books with every noted reading, in rounds where each stream appears once (so each
        stream's readings are taken in order), one vectorised update per condition and round.

        A reading's verdict is its flag (1 or 0 against 0.5), but for the intermittent rule (module
        `bad_share`): a good reading is a hit while the condition's episode is PENDING and the stream
        was bad for at least `ON_SHARE` of the last minute, so one good second in ten no longer
        abandons it (it starts after `min_duration_s` as ever); and a flagged reading is no verdict
        while the episode is CLEARING and the stream was bad for at most `OFF_SHARE` of the last
        minute, so rare blips no longer hold it open (10 s of good readings end it as ever)."""
        if not self._pending:
            return []
        rounds = noted_rounds(self._pending)
        self._pending = []
        self._noted = set()
        events: list[AlarmEvent] = []
        for batch in rounds:
            touched: list[StreamRef] = []  # streams that entered or left some book's or tracker's set
            for condition, (flags, alarm) in self._alarms.items():
                # A book steps a stream with a reading that has its flags, or while it is not NORMAL.
                due = self._due(condition, flags, batch, touched)
                if not due:
                    continue
                refs = [ref for ref, _, _, _ in due]
                rows = alarm.rows_of(refs)
                before = alarm.states_at(rows)
                values = [
                    self._verdict(condition, ref, share, bad, time, state)
                    for (ref, bad, time, share), state in zip(due, before.tolist(), strict=True)
                ]
                times = [time for _, _, time, _ in due]
                stepped = alarm.check(refs, values, [0.5] * len(refs), times, rows=rows)
                events += self._told_intermittent(condition, stepped)
                after = alarm.states_at(rows)
                moved = np.flatnonzero((before == _NORMAL) != (after == _NORMAL))
                if moved.size:
                    abnormal, bridged = self._abnormal[condition], self._bridged[condition]
                    now_normal = after[moved] == _NORMAL
                    for i, normal in zip(moved.tolist(), now_normal.tolist(), strict=True):
                        ref = refs[i]
                        if normal:
                            abnormal.discard(ref)
                            bridged.discard(ref)
                        else:
                            abnormal.add(ref)
                        touched.append(ref)
            # Engagement changes only where a set did (a storm's streams stay engaged: nothing to do).
            engaged, changed = self._engaged, self._changed
            holders = [refs_of for refs_of in (*self._abnormal.values(), *self._open.values()) if refs_of]
            for ref in touched:
                now = False
                for refs_of in holders:
                    if ref in refs_of:
                        now = True
                        break
                if now is (ref in engaged):
                    continue
                if ref in engaged:
                    engaged.discard(ref)
                else:
                    engaged.add(ref)
                if changed is not None:
                    changed.append(ref)
            if changed is not None and len(changed) > MAX_CHANGES_KEPT:  # nobody has been asking
                self._changed = None
        return events

    def _due(
        self,
        condition: str,
        flags: int,
        batch: Sequence[tuple[StreamRef, int, float]],
        touched: list[StreamRef],
    ) -> list[tuple[StreamRef, bool, float, BadShare | None]]:
        """(stream, flagged, time, its open tracker or None) of the readings `condition`'s book steps in
        one round. Feeds the trackers, and adds to `touched` the streams whose bad stretch began or
        ended. (A set is tested for being empty before a look-up: hashing a `StreamRef` costs more
        than the rest of a reading's work here.)"""
        abnormal, opened, shares = self._abnormal[condition], self._open[condition], self._shares[condition]
        poor = self._poor_flags if condition == "signal_poor" else None
        due: list[tuple[StreamRef, bool, float, BadShare | None]] = []
        for ref, quality, time in batch:
            if quality & flags:
                if poor is not None:
                    poor[ref] = quality & flags
                share = shares.get(ref)
                if share is None:
                    share = shares[ref] = BadShare()
                if not share.open:
                    opened[ref] = share
                    touched.append(ref)
                share.note(time, True)
                due.append((ref, True, time, share))
                continue
            share = opened.get(ref) if opened else None
            if share is not None:
                share.note(time, False)
                if not share.open:
                    del opened[ref]
                    touched.append(ref)
            if abnormal and ref in abnormal:
                due.append((ref, False, time, share))
        return due

    def _verdict(
        self, condition: str, ref: StreamRef, share: BadShare | None, bad: bool, time: float, state: int
    ) -> float:
        """A reading's verdict, given the book's `state` of its stream before it (see `drain`)."""
        if bad:
            if state == _CLEARING and share is not None and share.bad_s(time) <= OFF_SHARE * WINDOW_S:
                return math.nan
            return 1.0
        if state != _PENDING:
            return 0.0
        share = share or self._shares[condition].get(ref)
        if share is not None and share.bad_s(time) >= ON_SHARE * WINDOW_S:
            self._bridged[condition].add(ref)
            return 1.0
        return 0.0

    def _told_intermittent(self, condition: str, events: list[AlarmEvent]) -> list[AlarmEvent]:
        """The STARTs of episodes the intermittent rule kept pending say so, with the share."""
        bridged = self._bridged[condition]
        if not bridged:
            return events
        told: list[AlarmEvent] = []
        for event in events:
            ref = StreamRef(event.device, event.stream)
            if event.phase is Phase.START and ref in bridged:
                bridged.discard(ref)
                bad_s = self._shares[condition][ref].bad_s(event.detection_time)
                what = DESCRIPTIONS[condition](event.value, event.threshold)
                text = f"{what}, intermittently: {bad_s:.0f} s of the last {WINDOW_S:.0f} s"
                event = dataclasses.replace(
                    event, explanation=dataclasses.replace(event.explanation, text=text)
                )
            told.append(event)
        return told

    def device_flagged(self, ref: StreamRef) -> bool:
        """Whether `ref`'s last signal_poor reading carried the device's own motion or artifact flag
        (else only a value out of range, or "no value", made it poor)."""
        return bool(self._poor_flags.get(ref, 0) & int(Quality.MOTION | Quality.ARTIFACT))

    def shift_times(self, ref: StreamRef, delta: float) -> None:
        """The clock of `ref`'s readings stepped by `delta` s: its timers and noted times move with it."""
        for _, alarm in self._alarms.values():
            alarm.shift_times(delta, [ref])
        for shares in self._shares.values():
            if ref in shares:
                shares[ref].shift(delta)
        self._pending = [(r, q, t + delta if r == ref else t) for r, q, t in self._pending]

    def raise_priority(self, condition: str, ref: StreamRef, priority: Priority) -> None:
        """Raise `ref`'s open `condition` episode to `priority` (see `blinding`)."""
        self._alarms[condition][1].raise_priority(ref, priority)

    def shares_copied(self) -> list[tuple[str, str, str, Copy]]:
        """Every tracker of the intermittent rule, copied: (condition, device pseudonym, stream,
        `BadShare.copied()`); `bad_share.saved_rows` makes them the rows `load_shares` takes back."""
        return [
            (condition, ref.device_pseudonym, ref.stream, share.copied())
            for condition, shares in self._shares.items()
            for ref, share in shares.items()
        ]

    def shares_count(self) -> int:
        """The trackers kept (each condition's of each stream that had its flag)."""
        return sum(len(shares) for shares in self._shares.values())

    def load_shares(self, rows: Iterable[Any], stream: str, devices: AbstractSet[str]) -> int:
        """Take back the `bad_share.saved_rows` rows of stream name `stream` and device pseudonyms `devices`
        (the streams whose books `load_state` restores); a stream with a bad stretch under way is
        engaged again, so its next reading ends it. Returns the rows that did not parse (left out)."""
        damaged = 0
        for row in rows:
            try:
                condition, device, name, open_since, last_bad, closed = row
                if name != stream or device not in devices or condition not in self._shares:
                    continue
                share = BadShare.restored(open_since, last_bad, closed)
            except (ValueError, TypeError):
                damaged += 1
                continue
            ref = StreamRef(device, name)
            self._shares[condition][ref] = share
            if share.open:
                self._open[condition][ref] = share
                self._engaged.add(ref)
        self._changed = None
        return damaged

    def active_count(self) -> int:
        return sum(alarm.active_count() for _, alarm in self._alarms.values())

    def state(self) -> dict[str, dict[str, Any]]:
        """Each condition's saved book, keyed like the pipeline's alarm books."""
        return {alarm.key: alarm.state() for _, alarm in self._alarms.values()}

    def snapshot(self) -> dict[str, BookSnapshot]:
        """`state()` before its conversion to JSON (see `AlarmBook.snapshot`)."""
        return {alarm.key: alarm.snapshot() for _, alarm in self._alarms.values()}

    def load_state(self, alarms: Mapping[str, Any], stream: str) -> None:
        """Restore this stream name's rows of `state()` (books of all stream names share a key), into
        fresh books (a restart)."""
        restored: set[StreamRef] = set()
        for _, alarm in self._alarms.values():
            if alarm.key in alarms:
                restored.update(alarm.load_state(alarms[alarm.key], stream))
        # An episode still open must be stepped by the stream's OK readings, or it would never end.
        for condition, (_, alarm) in self._alarms.items():
            self._abnormal[condition] = {
                ref for ref in restored if alarm.state_of(ref) is not AlarmState.NORMAL
            }
        self._engaged = set().union(*self._abnormal.values())
        self._changed = None


class ThresholdAlarm:
    """A gateway-side condition measured as a number against a limit: "device_lost" (seconds of
    silence vs lost_after_s), "outbox_filling" (fill fraction vs warn level), "publish_refused"."""

    def __init__(
        self,
        condition: str,
        priority: Priority,
        gateway: str,
        config_hash: str,
        min_duration_s: float = 0.0,
        clear_after_s: float = 0.0,
        *,
        configured_limit: bool = False,
    ) -> None:
        rule = technical_rule(condition, priority, min_duration_s, clear_after_s)
        self._book = AlarmBook(rule, gateway, config_hash, (condition,))
        # With a `configured_limit` (a device's `lost_after_s`, the outbox's `warn_fraction`): the open
        # episodes restored by `load_state`, with the limit they were last checked against, until their
        # first `check`. One whose limit changed meanwhile (a reload raised `lost_after_s`) is judged by
        # a changed rule, and an END it gets before that rule finds the condition is no recovery
        # ("cleared: data again" though no data came, new-user review of 2026-12-01).
        self._configured_limit = configured_limit
        self._restored_limits: dict[StreamRef, float] = {}

    def check(
        self,
        refs: Sequence[StreamRef],
        values: Sequence[float],
        limits: Sequence[float],
        now: float | Sequence[float],
        rows: IntArray | None = None,
    ) -> list[AlarmEvent]:
        """Step each stream with its value against its limit at `now` (one time, or one per stream);
        `rows`, if given, are the streams' `rows_of`."""
        n = len(refs)
        if n == 0:
            return []
        block = ScoreBlock(
            scores=np.asarray(values, dtype=np.float64),
            thresholds=np.asarray(limits, dtype=np.float64),
            contributions=np.ones((n, 1)),
            observed=np.asarray(values, dtype=np.float64),
            limits=np.asarray(limits, dtype=np.float64),
            baseline=np.full((n, 1), np.nan),
        )
        times = np.array(now, dtype=np.float64)
        if times.shape != (n,):  # one time for all (`broadcast_to` costs more than the rest of this)
            times = np.broadcast_to(times, (n,)).copy()
        if self._restored_limits:
            self._mark_changed_limits(refs, limits)
        # (An END by a changed limit starts no cooldown: the book knows it was no recovery.)
        events = self._book.update(list(refs), block, times, np.ones(n, dtype=bool), ["ok"] * n, rows=rows)
        return [describe(e) for e in events]

    def _mark_changed_limits(self, refs: Sequence[StreamRef], limits: Sequence[float]) -> None:
        for ref, limit in zip(refs, limits, strict=True):
            saved = self._restored_limits.pop(ref, None)
            if saved is not None and not math.isclose(saved, limit):
                self._book.mark_rule_changed(ref)

    def shift_times(self, delta: float, refs: Sequence[StreamRef] | None = None) -> None:
        """The wall clock stepped by `delta` s: the timers of `refs` (default all) move with it."""
        self._book.shift_times(delta, refs)

    def raise_priority(self, ref: StreamRef, priority: Priority) -> None:
        """Raise `ref`'s open episode to `priority` (see `blinding`)."""
        self._book.raise_priority(ref, priority)

    def active_count(self) -> int:
        return self._book.active_count()

    def state_of(self, ref: StreamRef) -> AlarmState:
        return self._book.state_of(ref)

    def rows_of(self, refs: Sequence[StreamRef]) -> IntArray:
        """The streams' rows in the book (created on first sight), for `states_at` and `check`."""
        return self._book.rows_of(refs)

    def states_at(self, rows: IntArray) -> IntArray:
        """The machine state (an `AlarmState` value) of each of `rows`."""
        return self._book.states_at(rows)

    @property
    def key(self) -> str:
        """The key of this alarm's state among the saved alarm books ("builtin.<condition>/<condition>")."""
        return f"{self._book.rule.detector}/{self._book.rule.condition}"

    def state(self) -> dict[str, Any]:
        return self._book.state()

    def snapshot(self) -> BookSnapshot:
        return self._book.snapshot()

    def load_state(self, state: Mapping[str, Any], stream: str | None = None) -> list[StreamRef]:
        """Restore `state()`, only the rows of stream name `stream` when given; the streams restored."""
        rows = [r for r in state.get("streams", []) if stream is None or r.get("stream") == stream]
        self._book.load_state({**state, "streams": rows})
        for row in rows if self._configured_limit else ():
            limit = row.get("threshold")  # the limit of the row's last check
            if isinstance(row.get("episode"), Mapping) and isinstance(limit, int | float):
                self._restored_limits[StreamRef(str(row["device"]), str(row["stream"]))] = float(limit)
        return [StreamRef(str(r["device"]), str(r["stream"])) for r in rows]
