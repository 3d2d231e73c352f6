"""Saved alarm episodes that agree with the outbox after a crash (kill -9, power cut), at no extra fsync.

The full pipeline state (`pipeline.json`: detector baselines and every stream's alarm machine) is
saved with each heartbeat; at tens of thousands of streams it is far too big to write per pipeline
turn. But a crash between an event's outbox commit and that save brings the agent back with episodes
older than what it sent: an episode whose start was sent is forgotten and never ends, or one that
ended ends again under the same `{id}:{seq}` with other content.

So every turn that commits events also records the episode rows those events imply (id, next seq,
active or ended, onset and detection times, peak), derived from the events alone, so the cost is per event,
not per stream. The record is appended as a numbered note in the SAME outbox transaction as the events:
after any crash the note and the events are both there or both missing. Each turn writes only its own
rows (rewriting every row changed since the last save cost ~10 ms per turn at 1,000 rows in an alarm
storm).

A full save records the number of the last note its state includes (`journal` in `pipeline.json`);
once the save is durable, the notes up to that number are dropped. The save is built on the event loop
and written in a thread, so turns go on committing notes meanwhile: those are numbered above the mark and
stay, and a save that fails leaves every note in place. Notes that outlive their save (a crash before
the drop) are at or below the mark and ignored. At start-up the rows of the notes above the mark are
laid, oldest first, over the alarm state of `pipeline.json` before it is loaded, and the outbox numbers
later notes above the mark (even if it was replaced and starts empty); then a full save follows. With no
saved state (none yet, or an unreadable file set aside) every note is laid over an empty one, so the
episodes they record still end under their own ids.

An END of a rule above others in the alarm hierarchy (`superseded_by`) also tells, and zeroes, the hits
of the rules below it on its stream that it kept from alarming (`superseded_hits` in their rows); its note
names those rows (`told`), so a crash before the next full save does not bring the count back to be told
again.

When the outbox is encrypted at rest, it seals the note like the payloads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from agent.config.alarm_hierarchy import superseding_conditions
from agent.config.schema import AlarmRuleConfig, DetectorConfig
from agent.events import AlarmEvent, EndCause, Phase, Priority
from agent.pipeline.technical import BUILTIN_PREFIX, TECHNICAL_COOLDOWN_S

NOTE = "episodes"  # the outbox notes' name
STATE_FILE = "pipeline.json"
JOURNAL = "journal"  # key in pipeline.json: the number of the last note the saved state includes
SAVED_AT = "saved_at"  # key in pipeline.json: the wall time its state was taken


def notes_included(saved: Mapping[str, Any]) -> int:
    """The number of the last note `saved` (a `pipeline.json`) includes; -1 when it has none."""
    mark = saved.get(JOURNAL)
    return mark if isinstance(mark, int) and not isinstance(mark, bool) else -1


class EpisodeJournal:
    """The episode rows implied by each turn's events, as outbox notes."""

    def __init__(self, rules: Sequence[AlarmRuleConfig], detectors: Sequence[DetectorConfig] = ()) -> None:
        # Per pipeline alarm book ("detector/condition"): its cooldown and whether it escalates.
        self.rules = {
            f"{r.detector}/{r.condition}": (r.cooldown_s, r.escalate_after_s is not None) for r in rules
        }
        # Per book, the books below it in the alarm hierarchy on its stream, whose held-back hits its END
        # tells (`StreamPipeline._tell_held_back`); `detectors` name the streams (none given: no hierarchy).
        self.below: dict[str, list[str]] = {}
        stream_of = {d.id: d.stream for d in detectors}
        if detectors and any(r.superseded_by for r in rules):
            for lower, above in zip(rules, superseding_conditions(rules, detectors), strict=True):
                for higher in rules:
                    same_stream = stream_of[higher.detector] == stream_of[lower.detector]
                    if same_stream and higher.condition in above:
                        key = f"{higher.detector}/{higher.condition}"
                        self.below.setdefault(key, []).append(f"{lower.detector}/{lower.condition}")

    def note(self, events: Sequence[AlarmEvent]) -> tuple[str, str]:
        """The outbox note to commit with `events`: the rows they change, in order, and the rows whose
        held-back hits an END told (`told`)."""
        rows = []
        told = []
        for event in events:
            key = f"{event.explanation.detector}/{event.condition}"
            rows.append({"key": key, **self._row(key, event)})
            if event.phase is Phase.END:
                told += [
                    {"key": k, "device": event.device, "stream": event.stream}
                    for k in self.below.get(key, [])
                ]
        return NOTE, json.dumps({"rows": rows, "told": told} if told else {"rows": rows})

    def _row(self, key: str, event: AlarmEvent) -> dict[str, Any]:
        """The row `AlarmBook.load_state` takes, as the event leaves it."""
        builtin = (TECHNICAL_COOLDOWN_S if key.startswith(BUILTIN_PREFIX) else 0.0, False)
        cooldown_s, escalates = self.rules.get(key, builtin)
        ended = event.phase is Phase.END
        cools = ended and event.end_cause is not EndCause.RULE_CHANGED
        row: dict[str, Any] = {
            "condition": event.condition,
            "device": event.device,
            "stream": event.stream,
            "state": "NORMAL" if ended else "ACTIVE",
            "history": 0,
            "can_escalate": escalates and event.phase is Phase.START and event.priority is not Priority.HIGH,
            "peak_limit": event.threshold,
            "peak_channel": 0,
            "onset": event.onset_time,
            "detection": event.detection_time,
            "clear_since": None,
            # An END by a changed rule was no recovery: no cooldown (`AlarmBook.update`).
            "cooldown_until": (event.end_time or event.detection_time) + cooldown_s if cools else None,
            "peak_score": event.explanation.score,
            "peak_observed": event.value,
            "threshold": event.explanation.threshold,
        }
        if not ended:
            row["episode"] = {
                "id": event.id,
                "next_seq": event.seq + 1,
                "priority": event.priority.value,
                "unjudged_s": event.unjudged_s,
            }
            if event.rule_changed:  # as `AlarmBook.state` writes it: an escalation must not drop it
                row["episode"]["rule_changed"] = True
            if event.recurrence_of is not None:  # a recurrence clears after its cooldown, after a crash too
                row["episode"]["recurrence_of"] = event.recurrence_of
        elif cools:
            row["last_episode"] = event.id  # named by a recurrence within the cooldown
        return row


def saved_alarms(saved: Mapping[str, Any], notes: Sequence[tuple[int, str]]) -> dict[str, Any]:
    """The alarm state of `pipeline.json` (`saved`) with the rows of the outbox notes (number, text)
    written after it laid over it, oldest first (an unreadable note changes nothing)."""
    alarms: dict[str, Any] = {k: dict(v) for k, v in (saved.get("alarms") or {}).items()}
    legacy = saved.get(JOURNAL) if isinstance(saved.get(JOURNAL), str) else None
    included = notes_included(saved)
    for number, note in notes:
        try:
            record = json.loads(note)
            # saved before notes were numbered (legacy): the notes of its generation
            applies = record.get("generation") == legacy if legacy is not None else number > included
            rows = record["rows"] if applies else []
            told = record.get("told", []) if applies else []
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
        for row in rows if isinstance(rows, list) else []:
            row = dict(row)
            key, condition = str(row.pop("key")), str(row.pop("condition"))
            book = alarms.setdefault(key, {"condition": condition, "streams": []})
            where = (row["device"], row["stream"])
            streams = book.get("streams", [])
            book["streams"] = [s for s in streams if (s.get("device"), s.get("stream")) != where]
            book["streams"].append(row)
        for entry in told if isinstance(told, list) else []:
            _told(alarms, entry)
    return alarms


def _told(alarms: dict[str, Any], entry: Any) -> None:
    """The row `entry` names ({key, device, stream}) without its held-back hits: a higher END told them."""
    key = entry.get("key") if isinstance(entry, dict) else None
    if not isinstance(key, str) or not isinstance(alarms.get(key), dict):
        return
    book = alarms[key] = dict(alarms[key])
    where = (entry.get("device"), entry.get("stream"))
    book["streams"] = [
        {k: v for k, v in s.items() if k != "superseded_hits"}
        if isinstance(s, dict) and (s.get("device"), s.get("stream")) == where
        else s
        for s in book.get("streams", [])
    ]
