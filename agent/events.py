"""Events the gateway sends upstream: alarm episodes and heartbeats, with their versioned JSON payloads.

Each alarm episode has one id (UUIDv7) shared by its start, update and end events, so the receiver
can group them and drop redelivered duplicates by ``(id, phase, seq)``. The payload schema is documented
in docs/payloads.md; bump `ALARM_SCHEMA` / `HEARTBEAT_SCHEMA` on any incompatible change. A new optional
field is not one: receivers ignore fields they do not know.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ALARM_SCHEMA = "edge-agent/alarm/1"
HEARTBEAT_SCHEMA = "edge-agent/heartbeat/1"


class Priority(enum.StrEnum):
    """IEC 60601-1-8 alarm priorities; the outbox drains higher priorities first."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for HIGH: lower ranks drain first."""
        return {"high": 0, "medium": 1, "low": 2}[self.value]


class AlarmKind(enum.StrEnum):
    PHYSIOLOGICAL = "physiological"  # about the patient or the machine being watched
    TECHNICAL = "technical"  # about the monitoring itself: sensor off, signal lost, outbox filling


class Phase(enum.StrEnum):
    START = "start"
    UPDATE = "update"  # escalation or a new peak while active
    END = "end"


class EndCause(enum.StrEnum):
    """Why an `end` came: what a back end needs to tell a recovery from a changed configuration."""

    CLEARED = "cleared"  # the rule's own verdicts found the condition gone (every usual end)
    # The rule changed (a reload or a restart) while the episode was open, and the changed rule never
    # found the condition before ending it: the end may say more of the new limits than of the patient.
    RULE_CHANGED = "rule_changed"
    NOT_CONFIGURED = "not_configured"  # no rule, device or stream left to judge it: no verdict at all


# The range `datetime` can write. A time outside it (a device clock gone wild) is written as the nearest
# end, never raised: a heartbeat's `last_seen` of year -314861 stopped the daemon (review of 2026-11-30).
_EARLIEST_S = datetime(1, 1, 2, tzinfo=UTC).timestamp()
_LATEST_S = datetime(9999, 12, 30, tzinfo=UTC).timestamp()


def iso_time(unix_s: float) -> str:
    """RFC 3339 UTC with milliseconds, the form every timestamp in a payload takes. NaN is the epoch, a
    time past `datetime`'s range the nearest end of it: it never raises."""
    clamped = min(max(unix_s, _EARLIEST_S), _LATEST_S) if unix_s == unix_s else 0.0
    return datetime.fromtimestamp(clamped, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why an alarm fired, in terms a clinician or an engineer can check."""

    detector: str
    score: float
    threshold: float
    top_channels: tuple[tuple[str, float], ...] = ()
    baseline: Mapping[str, float] = field(default_factory=dict)
    signal_quality: str = "ok"
    text: str = ""  # one readable sentence, e.g. "hr 142 bpm above limit 120 bpm for 12 s"

    def to_payload(self) -> dict[str, Any]:
        return {
            "detector": self.detector,
            "score": _round(self.score),
            "threshold": _round(self.threshold),
            "top_channels": [{"channel": c, "contribution": _round(v)} for c, v in self.top_channels],
            "baseline": {k: _round(v) for k, v in self.baseline.items()},
            "signal_quality": self.signal_quality,
            "text": self.text,
        }


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One transition of one alarm episode."""

    id: str  # UUIDv7 of the episode
    seq: int  # 0 for start, counting up through updates to end
    phase: Phase
    gateway: str
    device: str  # pseudonym, never the configured device id or a patient id
    stream: str  # stream name within the device (e.g. "vitals"), not the device-qualified id
    condition: str  # e.g. "tachycardia", "sensor_off", "outbox_filling"
    priority: Priority
    kind: AlarmKind
    onset_time: float  # Unix seconds the condition began (first abnormal sample)
    detection_time: float  # Unix seconds the agent confirmed it
    value: float  # the measured value (or score) that crossed
    threshold: float
    unit: str
    explanation: Explanation
    end_time: float | None = None
    config_hash: str = ""
    model_hash: str = ""
    # Seconds of the episode during which no agent ran (stops and crashes it was restored across):
    # nothing judged the condition then. Added within alarm/1; 0 for most episodes.
    unjudged_s: float = 0.0
    end_cause: EndCause = EndCause.CLEARED  # in the payload of an END only (null otherwise)
    # The episode is marked "rule changed, condition not found since" (agent.alarms.book): not in the
    # payload (an END says it by `end_cause`); the state journal's row keeps the mark through a crash.
    rule_changed: bool = False
    # Whether the kernel said the gateway's wall clock was synchronised (NTP) when the event was
    # committed (agent.clock_sync); None: unknown. Added within alarm/1.
    clock_synced: bool | None = None
    # The id of the previous episode of the same rule on the same stream, when this one's onset fell
    # within the rule's cooldown after that one's END (a recurrence: `agent.alarms.book`); on every event
    # of the episode. None otherwise, or when that id was not kept. Added within alarm/1.
    recurrence_of: str | None = None

    def __post_init__(self) -> None:
        if self.seq < 0:
            raise ValueError("seq must be >= 0")
        if (self.phase is Phase.END) != (self.end_time is not None):
            raise ValueError("end_time is set exactly on END events")

    def to_payload(self) -> dict[str, Any]:
        return {
            "schema": ALARM_SCHEMA,
            "id": self.id,
            "seq": self.seq,
            "phase": self.phase.value,
            "gateway": self.gateway,
            "device": self.device,
            "stream": self.stream,
            "condition": self.condition,
            "priority": self.priority.value,
            "kind": self.kind.value,
            "onset_time": iso_time(self.onset_time),
            "detection_time": iso_time(self.detection_time),
            "end_time": None if self.end_time is None else iso_time(self.end_time),
            "value": _round(self.value),
            "threshold": _round(self.threshold),
            "unit": self.unit,
            "explanation": self.explanation.to_payload(),
            "config_hash": self.config_hash,
            "model_hash": self.model_hash,
            "unjudged_s": _round(self.unjudged_s),
            "end_cause": self.end_cause.value if self.phase is Phase.END else None,
            "clock_synced": self.clock_synced,
            "recurrence_of": self.recurrence_of or None,  # "": a recurrence whose predecessor was not kept
        }

    def to_json(self) -> bytes:
        return encode(self.to_payload())


@dataclass(frozen=True, slots=True)
class DeviceHealth:
    device: str  # pseudonym
    last_seen: float | None  # Unix seconds of the last reading, None if never
    rate_hz: float  # readings per second over the last heartbeat interval
    gaps: int  # data gaps detected since start
    bad_frames: int  # undecodable frames/bytes counted by the decoder since start
    connected: bool
    # Optional fields, added within heartbeat/1 (receivers ignore fields they do not know):
    reconnects: int = 0  # links re-established after a loss, since start
    desaturation_index_per_h: float | None = None  # ODI; only with a spo2_desaturation detector
    beats_per_min: float | None = None  # intervals found in its ECG per minute; only with [devices.beats]
    # The source's error counters by kind since start (agent.sources.counters.SourceStats.errors),
    # non-zero kinds only: {} for a device without trouble.
    errors: Mapping[str, int] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "device": self.device,
            "last_seen": None if self.last_seen is None else iso_time(self.last_seen),
            "rate_hz": _round(self.rate_hz),
            "gaps": self.gaps,
            "bad_frames": self.bad_frames,
            "connected": self.connected,
            "reconnects": self.reconnects,
            "errors": dict(self.errors),
        }
        if self.desaturation_index_per_h is not None:
            payload["desaturation_index_per_h"] = _round(self.desaturation_index_per_h)
        if self.beats_per_min is not None:
            payload["beats_per_min"] = _round(self.beats_per_min)
        return payload


@dataclass(frozen=True, slots=True)
class Heartbeat:
    gateway: str
    time: float
    uptime_s: float
    session: int  # increments on every agent start; the birth and Will messages carry it too
    devices: tuple[DeviceHealth, ...]
    outbox_depth: int
    oldest_undelivered_age_s: float | None
    active_alarms: int
    models: Mapping[str, str] = field(default_factory=dict)  # model name -> version/sha256 prefix
    cpu_percent: float | None = None
    rss_bytes: int | None = None
    temperature_c: float | None = None
    # Optional, within heartbeat/1: detector id -> live calibration progress or result (only detectors
    # with a `calibration` table; see agent.pipeline.calibration.LiveCalibration.status)
    calibration: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    outbox_refused: int = 0  # events the broker refused, kept aside until `edge-agent retry-refused`
    # Within heartbeat/1: heartbeats the outbox evicted or refused for room (its bound, or a disk down to
    # the reserve kept for alarms), since its file was made: an outage's lost heartbeats, counted.
    outbox_heartbeats_dropped: int = 0
    # Within heartbeat/1: heartbeats the outbox dropped past `mqtt.heartbeat_expiry_s` (an outage: nothing
    # is taken, so puts drop them), since its file was made: a gateway that beat through an outage.
    outbox_heartbeats_expired: int = 0
    # Optional, within heartbeat/1, so an engineer can tell "machine off" or "still learning" from
    # "nothing wrong": "pseudonym/stream" -> a gated machine's state (`running_when`; a word and times,
    # never the gate channel's value), and detector id -> {of_s, learnt_s: {"pseudonym/stream": s}} of
    # the streams still learning their own baseline. Each is left out when empty.
    running: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    learning: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Within heartbeat/1: whether the kernel says the wall clock (and so `time`) is synchronised
    # (agent.clock_sync); None: unknown.
    clock_synced: bool | None = None

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "schema": HEARTBEAT_SCHEMA,
            "gateway": self.gateway,
            "time": iso_time(self.time),
            "uptime_s": round(self.uptime_s, 1),
            "session": self.session,
            "devices": [d.to_payload() for d in self.devices],
            "outbox_depth": self.outbox_depth,
            "oldest_undelivered_age_s": (
                None if self.oldest_undelivered_age_s is None else round(self.oldest_undelivered_age_s, 1)
            ),
            "outbox_refused": self.outbox_refused,
            "outbox_heartbeats_dropped": self.outbox_heartbeats_dropped,
            "outbox_heartbeats_expired": self.outbox_heartbeats_expired,
            "active_alarms": self.active_alarms,
            "models": dict(self.models),
            "cpu_percent": None if self.cpu_percent is None else round(self.cpu_percent, 1),
            "rss_bytes": self.rss_bytes,
            "temperature_c": None if self.temperature_c is None else round(self.temperature_c, 1),
            "clock_synced": self.clock_synced,
        }
        if self.calibration:
            payload["calibration"] = {key: dict(value) for key, value in self.calibration.items()}
        if self.running:
            payload["running"] = {key: dict(value) for key, value in self.running.items()}
        if self.learning:
            payload["learning"] = {
                key: {"of_s": value["of_s"], "learnt_s": dict(value["learnt_s"])}
                for key, value in self.learning.items()
            }
        return payload

    def to_json(self) -> bytes:
        return encode(self.to_payload())


def encode(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; NaN/inf are refused (they are not JSON)."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def _round(value: float) -> float | None:
    """Payload numbers: 4 significant decimals is plenty and keeps messages short; non-finite -> null."""
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return round(float(value), 4)
