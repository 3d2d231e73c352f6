"""Saved alarm episodes that agree with the outbox after a crash (kill -9, power cut), at no extra fsync.

The full pipeline state (`pipeline.json`: detector baselines and every stream's alarm machine) is
saved with each heartbeat; at tens of thousands of streams it is far too big to write per pipeline
turn. But a crash between an event's outbox commit and that save brings the agent back with episodes
older than what it sent: an episode whose start was sent is forgotten and never ends, or one that
ended ends again under the same `{id}:{seq}` with other content.

So every turn that commits events also records the episode rows those events imply (id, next seq,
active or ended, onset and detection times, peak), derived from the events alone, so the cost is per event,
not per stream. The record holds every row changed since the last full save, and it is written as a
note in the SAME outbox transaction as the events: after any crash the note and the events are both
there or both missing. A full save makes the note redundant, so it is dropped. At start-up the note's
rows are laid over the alarm state of `pipeline.json` before it is loaded. Then a full save follows,
so the next note starts empty without losing a row.

When the outbox is encrypted at rest, it seals the note like the payloads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from agent.config.schema import AlarmRuleConfig
from agent.events import AlarmEvent, Phase, Priority

NOTE = "episodes"  # the outbox note's name
STATE_FILE = "pipeline.json"


class EpisodeJournal:
    """The episode rows changed by events since the last full save of the pipeline state."""

    def __init__(self, rules: Sequence[AlarmRuleConfig]) -> None:
        # Per pipeline alarm book ("detector/condition"): its cooldown and whether it escalates.
        self.rules = {
            f"{r.detector}/{r.condition}": (r.cooldown_s, r.escalate_after_s is not None) for r in rules
        }
        self._rows: dict[tuple[str, str, str], dict[str, Any]] = {}

    def note(self, events: Sequence[AlarmEvent]) -> tuple[str, str]:
        """The outbox note to commit with `events`: every row changed since the last full save."""
        for event in events:
            key = f"{event.explanation.detector}/{event.condition}"
            self._rows[(key, event.device, event.stream)] = self._row(key, event)
        return NOTE, json.dumps([{"key": key, **row} for (key, _, _), row in self._rows.items()])

    def saved_in_full(self) -> None:
        """`pipeline.json` now holds every row: start over (the caller drops the outbox note)."""
        self._rows.clear()

    def _row(self, key: str, event: AlarmEvent) -> dict[str, Any]:
        """The row `AlarmBook.load_state` takes, as the event leaves it."""
        cooldown_s, escalates = self.rules.get(key, (0.0, False))
        ended = event.phase is Phase.END
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
            "cooldown_until": (event.end_time or event.detection_time) + cooldown_s if ended else None,
            "peak_score": event.explanation.score,
            "peak_observed": event.value,
            "threshold": event.explanation.threshold,
        }
        if not ended:
            row["episode"] = {"id": event.id, "next_seq": event.seq + 1, "priority": event.priority.value}
        return row


def saved_alarms(saved: Mapping[str, Any], note: str | None) -> dict[str, Any]:
    """The alarm state of `pipeline.json` (`saved`) with the rows of the outbox note laid over it."""
    alarms: dict[str, Any] = {k: dict(v) for k, v in (saved.get("alarms") or {}).items()}
    try:
        rows = json.loads(note) if note else []
    except ValueError:
        rows = []
    for row in rows if isinstance(rows, list) else []:
        row = dict(row)
        key, condition = str(row.pop("key")), str(row.pop("condition"))
        book = alarms.setdefault(key, {"condition": condition, "streams": []})
        where = (row["device"], row["stream"])
        book["streams"] = [s for s in book.get("streams", []) if (s.get("device"), s.get("stream")) != where]
        book["streams"].append(row)
    return alarms
