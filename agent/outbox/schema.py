"""The outbox file's schema: one table of messages, its indexes, a meta table, a migration.

Strategy: one row per message. `seq` is the row's place in the file (the tie-break of the drain order,
and what damaged rows are named by: a damaged `id` may not even be text), `id` the message's. The
indexes serve `take` (`outbox_drain`: state, rank, created, seq) and the eviction of the oldest
heartbeats (`outbox_evict`: kind, seq). `size` is what the row counts against the bound, `sealed` whether
its payload is encrypted at rest. `outbox_meta` holds the notes (`agent.outbox.notes`) and the
'cleartext' flag (`agent.outbox.encryption`). ``PRAGMA user_version`` is the schema version: a version
1 file is migrated when opened, a newer one refused (`Outbox.__init__`).
"""

from __future__ import annotations

SCHEMA_VERSION = 2  # 2: the "sealed" column and the "undecryptable" state
# The operator's action after fixing the broker side (`Outbox.retry_refused`, `edge-agent retry-refused`).
RETRY_REFUSED = "UPDATE outbox SET state='pending', reason_code=NULL WHERE state='refused'"

_COLUMNS = "id, topic, payload, kind, rank, created, expiry_s, attempts, state, reason_code"
_SELECT = f"seq, {_COLUMNS}, sealed"
_V1_COLUMNS = f"seq, {_COLUMNS}, size"
_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('alarm', 'technical', 'heartbeat')),
    rank INTEGER NOT NULL,
    created REAL NOT NULL,
    expiry_s INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'inflight', 'refused', 'undecryptable')),
    reason_code INTEGER,
    size INTEGER NOT NULL,
    sealed INTEGER NOT NULL DEFAULT 0 CHECK (sealed IN (0, 1))
);
"""
_INDEXES = """
CREATE INDEX IF NOT EXISTS outbox_drain ON outbox (state, rank, created, seq);
CREATE INDEX IF NOT EXISTS outbox_evict ON outbox (kind, seq);
"""
# name 'cleartext': the file was written without a key since it was last scrubbed, so free pages
# may still hold plaintext payloads of delivered rows.
_META = "CREATE TABLE IF NOT EXISTS outbox_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
# Version 1 had no "sealed" column and a CHECK without 'undecryptable': SQLite cannot alter a CHECK,
# so the table is rebuilt (rows, seq order and sizes kept) in one transaction.
_MIGRATE_V1 = f"""
BEGIN IMMEDIATE;
DROP INDEX IF EXISTS outbox_drain;
DROP INDEX IF EXISTS outbox_evict;
{_TABLE.format(name="outbox_v2")};
INSERT INTO outbox_v2 ({_V1_COLUMNS}) SELECT {_V1_COLUMNS} FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_v2 RENAME TO outbox;
{_INDEXES}
{_META}
INSERT OR REPLACE INTO outbox_meta VALUES ('cleartext', '1');
PRAGMA user_version={SCHEMA_VERSION};
COMMIT;
"""
_LIVE = "state IN ('pending', 'inflight')"  # rows still on their way to the broker
STORED_BYTES = "SELECT COALESCE(SUM(size), 0) FROM outbox"  # what is counted against `max_bytes`
# Those and, of them, the alarm rows' bytes (what "outbox_filling" watches), in one pass over the rows.
STORED_AND_ALARM_BYTES = (
    "SELECT COALESCE(SUM(size), 0), COALESCE(SUM(CASE WHEN kind != 'heartbeat' THEN size END), 0) FROM outbox"
)
