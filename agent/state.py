"""Small durable gateway state: the session counter and JSON state files, written atomically.

The session counter increments on every start; the birth message, the Will and heartbeats carry
it, so the central side can tell a restart (new session) from a reconnect (same session).
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

from agent.errors import ConfigError


def folder_problem(path: Path) -> str | None:
    """Why `path` cannot be, or be made (`mkdir -p`), a folder this process writes in; None when it can.

    Looks only: the folder itself when it exists, else its nearest existing ancestor. The start-up
    (`ensure_state_dir`) and `preflight` both ask this, so they refuse the same folders.
    """
    for folder in (path, *path.parents):
        try:
            mode = folder.stat().st_mode
        except OSError:  # absent, or a stat refused: look further up
            if _is_link(folder):  # a dangling link: mkdir would fail on it
                return f"cannot create {path}: {folder} is a broken symbolic link"
            continue
        if not stat.S_ISDIR(mode):
            if folder == path:
                return f"{path} is not a directory"
            return f"cannot create {path}: {os.strerror(errno.ENOTDIR)}"
        if not os.access(folder, os.W_OK | os.X_OK):
            if folder == path:
                return f"{path} is not writable"
            return f"cannot create {path}: {os.strerror(errno.EACCES)} ({folder} is not writable)"
        return None
    return None


def _is_link(path: Path) -> bool:
    try:
        return stat.S_ISLNK(path.lstat().st_mode)
    except OSError:
        return False


def ensure_state_dir(path: Path) -> Path:
    problem = folder_problem(path)
    if problem is None:
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            problem = f"cannot create {path}: {exc.strerror}"
        else:
            problem = folder_problem(path)
    if problem is not None:
        raise ConfigError("gateway.state_dir", problem)
    return path


def write_atomic(path: Path, data: bytes) -> None:
    """Write, fsync, then rename: a crash leaves the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def next_session(state_dir: Path) -> int:
    """Increment and return the persistent session counter (1 on the first start)."""
    path = state_dir / "session"
    try:
        current = int(path.read_text().strip() or 0)
    except FileNotFoundError:
        current = 0
    except ValueError:
        current = 0  # a damaged counter restarts; sessions only need to differ from the last one
    session = current + 1
    write_atomic(path, f"{session}\n".encode())
    return session


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def write_json(path: Path, value: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(value, indent=1, sort_keys=True).encode())
