"""Saved alarm episodes as a start or a reload restores them: what the gap did to them.

An episode open at a stop or a reload continues under its id while its rule (detector and condition),
its device and its stream are still configured.

- When the new configuration removed or renamed one of them, nothing will ever step that episode again:
  until 2026-11-30 it was dropped silently and a back end that had its START held it open for good. Now
  it gets an END as the state is restored (`retire`), saying why; its `end_time` is the restore (the
  condition was not judged after the last stop or reload), its `signal_quality` "unknown", its
  `end_cause` "not_configured", its `unjudged_s` what a still-configured episode's END would say (the
  saved sum, plus this stop's at a start: the daemon adds the downtime before it retires). The END is
  journaled like any event, so a crash before the next full save does not send it twice.
- Across a stop or crash (not a reload) an episode kept open spans time when no agent judged it; its
  later events said nothing of it. Now the seconds from the state's save (or the episode's detection,
  if later: the journal recorded it after the save) to the start are added to its `unjudged_s`
  (`add_downtime`), which its update and end carry.
- A start whose wall clock is behind the time the state was saved (a Pi without a real-time clock after
  a power cut: fake-hwclock's last save, or 1970 until NTP) would restore timers in its future: a rule's
  cooldown then silenced a real tachycardia for as long as the step (offline-clinic audit, finding 4).
  The saved instants move back with the clock (`shift_timers`), as a step during a run moves them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from agent.alarms import StreamRef, explain
from agent.events import AlarmEvent, AlarmKind, EndCause, Explanation, Phase, Priority
from agent.pipeline.technical import BUILTIN_PREFIX

# (key "detector/condition", stream) -> why the running configuration cannot step it, or None if it can.
Unsteppable = Callable[[str, StreamRef], str | None]


def retire(
    alarms: Mapping[str, Any],
    unsteppable: Unsteppable,
    gateway: str,
    config_hash: str,
    now: float,
) -> tuple[dict[str, Any], list[AlarmEvent]]:
    """Split saved alarm state (`Pipeline.alarm_state()` keys) into the rows the configuration can step,
    and an END for every open episode among the others (rows without an episode are dropped)."""
    kept: dict[str, Any] = {}
    ended: list[AlarmEvent] = []
    for key, book in alarms.items():
        if not isinstance(book, Mapping):
            kept[key] = book  # not ours to judge: the book's own load_state names the problem
            continue
        rows = []
        for row in book.get("streams", []):
            try:
                ref = StreamRef(str(row["device"]), str(row["stream"]))
            except (KeyError, TypeError):
                rows.append(row)
                continue
            reason = unsteppable(key, ref)
            if reason is None:
                rows.append(row)
            elif isinstance(row.get("episode"), Mapping):
                condition = str(book.get("condition", ""))
                try:
                    ended.append(_end(key, condition, ref, row, reason, gateway, config_hash, now))
                except (KeyError, ValueError, TypeError):  # an unreadable episode cannot be ended
                    continue
        kept[key] = {**book, "streams": rows}
    return kept, ended


def add_downtime(alarms: Mapping[str, Any], saved_at: float, now: float) -> dict[str, Any]:
    """`alarms` (saved at `saved_at`) with the time to `now` added to each open episode's `unjudged_s`,
    counted from its detection when that came after the save (an episode the journal recorded later)."""

    def add(row: Mapping[str, Any]) -> Mapping[str, Any]:
        episode = row.get("episode")
        if not isinstance(episode, Mapping):
            return row
        since = max(saved_at, _number(row.get("detection"), saved_at))
        unjudged = _number(episode.get("unjudged_s"), 0.0) + max(0.0, now - since)
        return {**row, "episode": {**episode, "unjudged_s": unjudged}}

    return _map_rows(alarms, add)


# a saved row's instants (AlarmBook)
TIMERS = ("onset", "detection", "clear_since", "cooldown_until", "last_hop")


def shift_timers(alarms: Mapping[str, Any], delta: float) -> dict[str, Any]:
    """`alarms` with every row's saved instants moved by `delta` seconds."""

    def shift(row: Mapping[str, Any]) -> Mapping[str, Any]:
        moved = {k: row[k] + delta for k in TIMERS if math.isfinite(_number(row.get(k), math.nan))}
        return {**row, **moved}

    return _map_rows(alarms, shift)


def _map_rows(
    alarms: Mapping[str, Any], change: Callable[[Mapping[str, Any]], Mapping[str, Any]]
) -> dict[str, Any]:
    """`alarms` with `change` applied to every readable row (anything else is left for load_state)."""
    out: dict[str, Any] = {}
    for key, book in alarms.items():
        if isinstance(book, Mapping) and isinstance(book.get("streams"), list):
            rows = [change(row) if isinstance(row, Mapping) else row for row in book["streams"]]
            out[key] = {**book, "streams": rows}
        else:
            out[key] = book
    return out


def _end(
    key: str,
    condition: str,
    ref: StreamRef,
    row: Mapping[str, Any],
    reason: str,
    gateway: str,
    config_hash: str,
    now: float,
) -> AlarmEvent:
    episode = row["episode"]
    detector = key.removesuffix(f"/{condition}")
    onset = _number(row.get("onset"), now)
    # The saved sum (and, at a start, this stop's: `add_downtime` runs first), as a verdict's END says it.
    unjudged_s = max(0.0, _number(episode.get("unjudged_s"), 0.0))
    text = f"ended without a verdict: {reason} (the configuration changed)"
    if unjudged_s > 0:
        text += explain.unjudged(unjudged_s)
    return AlarmEvent(
        id=str(episode["id"]),
        seq=int(episode["next_seq"]),
        phase=Phase.END,
        gateway=gateway,
        device=ref.device_pseudonym,
        stream=ref.stream,
        condition=condition,
        priority=Priority(episode["priority"]),
        kind=AlarmKind.TECHNICAL if detector.startswith(BUILTIN_PREFIX) else AlarmKind.PHYSIOLOGICAL,
        onset_time=onset,
        detection_time=_number(row.get("detection"), onset),
        value=_number(row.get("peak_observed"), math.nan),
        threshold=_number(row.get("peak_limit"), math.nan),
        unit="",  # the rule that knew it may be gone
        explanation=Explanation(
            detector=detector,
            score=_number(row.get("peak_score"), math.nan),
            threshold=_number(row.get("threshold"), math.nan),
            signal_quality="unknown",
            text=text,
        ),
        end_time=max(now, onset),
        config_hash=config_hash,
        unjudged_s=unjudged_s,
        end_cause=EndCause.NOT_CONFIGURED,
        recurrence_of=None if episode.get("recurrence_of") is None else str(episode["recurrence_of"]),
    )


def _number(value: Any, missing: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return missing
    return float(value)
