"""The durable outbox: the only road from the agent to the uplink (SQLite, WAL, one file).

Strategy: one class, `Outbox`, its parts in modules of one concept each (each module's docstring says
what it guarantees):
- `items`: what is queued and handed back (`OutboxItem`, `Kind`, `State`, `PutResult`, `OutboxStats`),
  and the errors.
- `schema`: the table, its indexes, the meta table, the migration of an older file.
- `rows`: reading a row back leniently; damaged rows.
- `transactions`: what is durable when (fsync for alarms only); deletions and in-flight marks ride
  on the next commit; one thread, one lock.
- `encryption`: payloads sealed at rest, plaintext scrubbed, rows that do not open set aside.
- `notes`: the caller's records, committed with a batch of puts.
- `writing`: puts and batched puts, the bound in bytes, the eviction of heartbeats.
- `room`: the room on the disk itself: a reserve kept for alarms, and the warning on a `max_bytes` the
  disk cannot hold.
- `draining`: `take` in drain order, rows in flight, acknowledgements and batched deletes, refusals.
- `expiring`: heartbeats past their expiry dropped (by puts and `take`) and counted in the file.
- `episode_clock`: every event of an episode in one clock (the onset its first one is told with).
- `restamping`: the alarms this outbox queued before a step of the wall clock, moved by the step.
- `wal_tail`: committed transactions a torn end of the WAL loses at the open, found and told.
- `store`: the `Outbox` itself: opening the file, replacing a damaged one, counts, closing.

The parts are mixins of one class: `Outbox(_Writing, _Draining, _Restamping)`,
`_Writing(_Notes, _Expiring, _EpisodeClock)`, `_Draining(_Expiring, _Encryption)`,
`_Restamping(_EpisodeClock)`, `_EpisodeClock(_Encryption)`, all on `_Transactions`, which declares the
state `Outbox.__init__` sets.

The tunables are read in the module that defines them (`draining.DELETE_AT`, `store.PAGE_SIZE`, ...):
a test changes them there; the names re-exported here are copies, and setting them changes nothing.
"""

from agent.outbox.draining import DELETE_AFTER_S, DELETE_AT
from agent.outbox.expiring import EXPIRED_SCAN_S
from agent.outbox.items import (
    HEARTBEAT_RANK,
    ROW_OVERHEAD,
    Kind,
    OutboxDamagedError,
    OutboxError,
    OutboxItem,
    OutboxStats,
    PutResult,
    State,
)
from agent.outbox.schema import RETRY_REFUSED, SCHEMA_VERSION
from agent.outbox.store import PAGE_SIZE, Outbox

__all__ = [
    "DELETE_AFTER_S",
    "DELETE_AT",
    "EXPIRED_SCAN_S",
    "HEARTBEAT_RANK",
    "PAGE_SIZE",
    "RETRY_REFUSED",
    "ROW_OVERHEAD",
    "SCHEMA_VERSION",
    "Kind",
    "Outbox",
    "OutboxDamagedError",
    "OutboxError",
    "OutboxItem",
    "OutboxStats",
    "PutResult",
    "State",
]
