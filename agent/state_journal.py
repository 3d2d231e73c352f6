"""Saved alarm episodes that agree with the outbox after a crash (kill -9, power cut).

The events of one pipeline turn are committed to the outbox in one SQLite transaction; the episodes
(ids, next seq, machine state) live in `pipeline.json`. Two separate writes leave a window whatever
their order: saving after the commit, a crash in between restarts from episodes one turn old (an
episode whose start was already sent is forgotten and never ends; one that ended ends again under the
same id); saving before it, the saved episodes run ahead of what was sent (an end without its start).

So a turn writes its new state first as `pipeline.pending.json`, naming the turn's outbox ids, then
commits the events, then renames the pending file over `pipeline.json`. At start-up a pending file
left by a crash is taken when its events are in the outbox (the commit happened; none of them can
have been delivered and deleted yet, because the rename follows the commit with no await between) and
dropped when they are not (the crash came before the commit). Writes are atomic and fsynced.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent.state import read_json, write_json

STATE_FILE = "pipeline.json"
PENDING_FILE = "pipeline.pending.json"
IDS_KEY = "journal_outbox_ids"  # in the pending file (and, harmlessly, the state it becomes)


def write_pending(state_dir: Path, state: dict[str, Any], outbox_ids: Sequence[str]) -> None:
    """Step 1, before the commit: the state the turn leads to and the ids the commit will hold."""
    write_json(state_dir / PENDING_FILE, {**state, IDS_KEY: list(outbox_ids)})


def promote_pending(state_dir: Path) -> None:
    """Step 3, right after the commit: the pending state becomes the saved state (atomic rename)."""
    (state_dir / PENDING_FILE).replace(state_dir / STATE_FILE)
    dir_fd = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def discard_pending(state_dir: Path) -> None:
    """A full save supersedes a pending file a failed rename may have left."""
    with contextlib.suppress(FileNotFoundError):
        (state_dir / PENDING_FILE).unlink()


def recover(state_dir: Path, in_outbox: Callable[[str], bool]) -> bool:
    """At start-up: take a crash's pending state if its commit happened, drop it otherwise.

    Returns True when the pending state was taken.
    """
    path = state_dir / PENDING_FILE
    if not path.exists():
        return False
    pending = read_json(path)
    ids = pending.get(IDS_KEY) if pending is not None else None
    if isinstance(ids, list) and any(in_outbox(str(i)) for i in ids):
        promote_pending(state_dir)
        return True
    discard_pending(state_dir)
    return False
