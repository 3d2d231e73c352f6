"""What the outbox queues and hands back: items, their kinds and states, put results, stats, errors.

Strategy: frozen values, no I/O. An item's `rank` is its drain order (the alarm priorities 0 HIGH .. 2
LOW, then heartbeats at `HEARTBEAT_RANK`), its `size` what it counts against the outbox's bound (topic +
payload + `ROW_OVERHEAD`), and its `id` what receivers drop duplicates by, across restarts and replays.
An `OutboxError` names the outbox file; an `OutboxDamagedError` is the one `Outbox.open_or_replace`
answers by moving the file aside.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from agent.errors import AgentError

ROW_OVERHEAD = 64  # bytes counted per row on top of topic + payload: ids, ranks, times
HEARTBEAT_RANK = 3  # after every alarm priority (0 HIGH .. 2 LOW)


class Kind(enum.StrEnum):
    ALARM = "alarm"  # physiological alarm events
    TECHNICAL = "technical"  # technical alarm events (about the monitoring itself)
    HEARTBEAT = "heartbeat"


class State(enum.StrEnum):
    PENDING = "pending"
    INFLIGHT = "inflight"
    REFUSED = "refused"
    # Set aside, never sent: a sealed payload that does not open with the configured key, or a row whose
    # cells are damaged (not UTF-8, wrong type). One state for both: a new one needs a table rebuild
    # (SQLite cannot alter a CHECK) for a label; the log tells the two apart.
    UNDECRYPTABLE = "undecryptable"


class OutboxError(AgentError):
    """The outbox file cannot be opened or used; `path` names it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"outbox {path}: {reason}")
        self.path = path
        self.reason = reason


class OutboxDamagedError(OutboxError):
    """The file's bytes are damaged (failed integrity check, not a database, unreadable schema), as
    opposed to a file the agent may not open or a disk that is full."""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One message waiting for (or refused by) the broker. `id` survives restarts and replays."""

    id: str
    topic: str
    payload: bytes
    kind: Kind
    rank: int  # drain order: 0..2 alarm priorities, 3 heartbeats
    created: float  # Unix seconds of the put
    expiry_s: int | None = None  # MQTT MessageExpiryInterval from `created`; None = never expires
    attempts: int = 0
    state: State = State.PENDING
    reason_code: int | None = None  # the refusing PUBACK reason code

    @property
    def size(self) -> int:
        return len(self.topic.encode()) + len(self.payload) + ROW_OVERHEAD

    def remaining_expiry(self, now: float) -> int | None:
        """Whole seconds left before the message is worthless (>= 1 while alive), None if it never expires."""
        if self.expiry_s is None:
            return None
        # At most `expiry_s`: after the wall clock stepped back, `created` is in the future.
        return max(1, min(self.expiry_s, int(self.created + self.expiry_s - now)))


@dataclass(frozen=True, slots=True)
class PutResult:
    stored: bool  # False only for a heartbeat refused because alarms fill the outbox
    evicted: int  # heartbeats evicted to make room
    fill: float  # fill fraction after the put (may exceed 1.0: alarms are kept past the bound)
    warn: bool  # fill >= warn_fraction now
    crossed_warn: bool  # this put moved the fill from below to at/above warn_fraction


@dataclass(frozen=True, slots=True)
class OutboxStats:
    depth: int  # pending + in flight
    refused: int
    size_bytes: int
    evicted: int  # heartbeats evicted since open
    expired: int  # heartbeats dropped past their expiry since open
    rejected: int  # heartbeats not stored because only alarms filled the outbox, since open
    undecryptable: int = 0  # rows set aside because they do not decrypt or are damaged (in the file now)
