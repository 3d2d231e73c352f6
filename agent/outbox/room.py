"""Room on the disk itself: alarms must outlive heartbeats against the file system, not only the bound.

`max_bytes` bounds what the outbox counts; the card it lives on may hold less (a small partition, or
journald and a forgotten recording filling it). Before, heartbeats filled such a disk in an outage and
every alarm after that was held in memory only, lost at a power cut, while hundreds of heartbeats sat
safely on disk; and a full file system cannot even make room by deleting (SQLite's WAL must grow).

So while the outbox's file system has less than `RESERVE_BYTES` free (`os.statvfs`, what the agent's
user may use), heartbeats take no new room: each new one replaces the oldest stored heartbeats, or is
refused when none are left, and each alarm takes the room of old heartbeats first. The reserve is left
to the alarms (and to the WAL, which grows to about 1 MiB between checkpoints at 1 KiB pages).
`sizing_warning` says at start and in `check-config` when `max_bytes` is more than the disk has.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from agent.config.schema import OutboxConfig
from agent.outbox.schema import STORED_BYTES

RESERVE_BYTES = 4 * 1024 * 1024
MIB = 1024 * 1024


def free_bytes(folder: Path) -> int | None:
    """Bytes the agent's user may still write on `folder`'s file system; None when it cannot be told."""
    try:
        info = os.statvfs(folder)
    except OSError:
        return None
    return info.f_bavail * info.f_frsize


def disk_low(folder: Path) -> bool:
    """Whether the file system under `folder` is down to its reserve for alarms."""
    free = free_bytes(folder)
    return free is not None and free < RESERVE_BYTES


def stored_bytes(path: Path) -> int:
    """What the outbox file at `path` counts against `max_bytes` (`Outbox.size_bytes`), read without
    writing anything (`check-config`, with or without a running agent: no WAL files are made, which a
    root `check-config` would leave the agent's user unable to open); 0 when there is none."""
    if not path.exists():
        return 0
    live = path.with_name(path.name + "-shm").exists()  # a running agent's WAL: read it too
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?{'mode=ro' if live else 'immutable=1'}", uri=True)
        try:
            return int(db.execute(STORED_BYTES).fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def sizing_warning(config: OutboxConfig, stored: int | None = None) -> str | None:
    """A line when `max_bytes` less what is stored (`stored`, the outbox's count; by default read from
    the file: `stored_bytes`) is more than the free space of the outbox's disk less the reserve:
    heartbeats then stop being stored before the bound, by the disk; None when not. The start and
    `check-config` count the same bytes, so they agree about the same disk."""
    folder = next((p for p in (config.path.parent, *config.path.parents) if p.exists()), None)
    free = None if folder is None else free_bytes(folder)
    if free is None:
        return None
    if stored is None:
        stored = stored_bytes(config.path)
    room = free - RESERVE_BYTES
    if config.max_bytes - stored <= room:
        return None
    return (
        f"outbox.max_bytes ({config.max_bytes / MIB:.1f} MiB) is more than the disk of {folder} has free "
        f"({free / MIB:.1f} MiB) less the last {RESERVE_BYTES // MIB} MiB, kept for alarm events: heartbeats "
        "stop being stored, in an outage, once the disk is down to that reserve, before the bound; lower "
        "outbox.max_bytes below the free space, or free space (docs/configuration.md, outbox)"
    )
