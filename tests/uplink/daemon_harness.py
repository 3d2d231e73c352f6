"""Test helpers for durability tests of the real daemon: run `python -m agent.cli run` as a child
process, crash it or stop it, read its outbox file read-only, and sort what a subscriber received.

The outbox is opened with SQLite's read-only URI (`mode=ro`): the test looks at exactly what a crash
left on disk, and never changes it (an outbox row id is ``{episode id}:{seq}`` for alarms, the same
key a receiver builds from an alarm payload).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uplink_probe import Received

from agent import state_journal
from agent.state import read_json

ALARM_KINDS = ("alarm", "technical")


@dataclass(frozen=True)
class OutboxRow:
    id: str
    kind: str
    state: str
    payload: bytes

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass(frozen=True)
class OutboxSnapshot:
    integrity: str  # "ok" when sound; also "ok" for a file not created yet (a crash during start-up)
    rows: tuple[OutboxRow, ...]
    exists: bool = True

    def ids(self, kinds: Iterable[str] = ALARM_KINDS) -> set[str]:
        wanted = set(kinds)
        return {r.id for r in self.rows if r.kind in wanted}

    def of_kind(self, *kinds: str) -> list[OutboxRow]:
        return [r for r in self.rows if r.kind in kinds]


def read_outbox(path: Path) -> OutboxSnapshot:
    """The outbox file as it is on disk, opened read-only: integrity verdict and every row."""
    if not path.exists():
        return OutboxSnapshot("ok", (), exists=False)
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        integrity = "; ".join(str(r[0]) for r in db.execute("PRAGMA integrity_check"))
        tables = {str(r[0]) for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        query = "SELECT id, kind, state, payload FROM outbox ORDER BY seq"
        rows = (
            tuple(  # no table yet: killed between creating the file and its schema
                OutboxRow(str(i), str(k), str(s), bytes(p)) for i, k, s, p in db.execute(query)
            )
            if "outbox" in tables
            else ()
        )
    finally:
        db.close()
    return OutboxSnapshot(integrity, rows)


class DaemonProcess:
    """`python -m agent.cli run --config <file>` in `workdir`, its output appended to `agent.log`."""

    def __init__(self, config: Path, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.log_path = workdir / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        assert not self.alive, "the agent is already running"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.starts += 1

    def check_alive(self) -> None:
        """Fail at once, with the agent's last log lines, if it has exited (e.g. a refused config)."""
        if not self.alive:
            raise AssertionError(f"the agent is not running:\n{self.log_tail()}")

    def kill(self) -> int | None:
        """SIGKILL: no handler runs, nothing is flushed. Returns the exit code (None if already gone)."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        return None

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM (the clean stop) and the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)


def alarm_key(payload: dict[str, Any]) -> str:
    """The receiver's dedup key for an alarm event: the same as the outbox row id."""
    return f"{payload['id']}:{payload['seq']}"


def of_leaf(messages: Iterable[Received], leaf: str) -> list[Received]:
    return [m for m in messages if m.topic.rsplit("/", 1)[-1] == leaf]


def alarm_copies(messages: Iterable[Received]) -> dict[str, list[bytes]]:
    """Every received alarm payload, grouped by dedup key (redeliveries make a group longer than 1)."""
    copies: dict[str, list[bytes]] = {}
    for message in of_leaf(messages, "alarm"):
        copies.setdefault(alarm_key(message.json()), []).append(message.payload)
    return copies


IDENTITY = ("id", "seq", "phase", "gateway", "device", "stream", "condition", "kind")


def identity_clashes(copies: dict[str, list[bytes]]) -> list[str]:
    """Keys whose copies are not the same transition of the same episode (dedup by id would lose one)."""
    clashes = []
    for key, payloads in copies.items():
        identities = {tuple(json.loads(p)[f] for f in IDENTITY) for p in payloads}
        if len(identities) > 1:
            clashes.append(f"{key}: {sorted(identities)}")
    return clashes


def started_not_ended(messages: Iterable[Received]) -> set[str]:
    """Episode ids whose start the receiver got but whose end it did not (yet)."""
    events = [json.loads(p[0]) for p in alarm_copies(messages).values()]
    started = {str(e["id"]) for e in events if e["phase"] == "start"}
    return started - {str(e["id"]) for e in events if e["phase"] == "end"}


def active_episodes(state_dir: Path, outbox_path: Path) -> set[str]:
    """Episode ids a restarted agent would load as still running: `pipeline.json` with the episode
    notes of the outbox (committed with the events since the last full save) laid over it. Notes are
    read as stored: for an outbox without encryption at rest (sealed notes are not opened here)."""
    db = sqlite3.connect(f"{outbox_path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        prefix = f"note:{state_journal.NOTE}:"
        rows = db.execute(
            "SELECT name, value FROM outbox_meta WHERE substr(name, 1, ?) = ? ORDER BY name",
            (len(prefix), prefix),
        ).fetchall()
    finally:
        db.close()
    saved = read_json(state_dir / state_journal.STATE_FILE) or {}
    return {
        str(stream["episode"]["id"])
        for book in state_journal.saved_alarms(
            saved, [(int(n[len(prefix) :]), str(v)) for n, v in rows]
        ).values()
        for stream in book.get("streams", [])
        if stream.get("episode")
    }


def pairing_problems(messages: Iterable[Received]) -> list[str]:
    """What a receiver would find inconsistent in the episodes it got (after dropping duplicates by id):
    an end or update of an episode whose start never arrived, or one episode with two different starts."""
    phases: dict[str, Counter[str]] = {}
    for key, payloads in alarm_copies(messages).items():
        event = json.loads(payloads[0])
        phases.setdefault(str(event["id"]), Counter())[str(event["phase"])] += 1
        assert key.startswith(str(event["id"]))
    problems = []
    for episode, seen in phases.items():
        if seen["start"] == 0:
            problems.append(f"episode {episode}: {dict(seen)} without its start")
        if seen["start"] > 1 or seen["end"] > 1:
            problems.append(f"episode {episode}: {dict(seen)}")
    return problems
