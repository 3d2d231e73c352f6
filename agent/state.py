"""Small durable gateway state: the session counter and JSON state files, written atomically.

The session counter increments on every start; the birth message, the Will and heartbeats carry
it, so the central side can tell a restart (new session) from a reconnect (same session).

The state folder holds patient values (open episodes' peaks in `pipeline.json`, the heartbeat's
device health): it is the agent's user's only. `ensure_state_dir` makes it 0700, also when it
already exists with a wider mode (an admin's `mkdir -p` under umask 022) and the agent owns it;
one it does not own is warned about by key. Each state file is written 0600, whatever the umask.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

from agent.errors import ConfigError
from agent.read_only import disk_remedy, on_read_only_fs

log = logging.getLogger("agent.state")
PRIVATE_FOLDER = 0o700
PRIVATE_FILE = 0o600


def folder_problem(path: Path) -> str | None:
    """Why `path` cannot be, or be made (`mkdir -p`), a folder this process writes in; None when it can.

    Looks only: the folder itself when it exists, else its nearest existing ancestor. The start-up
    (`ensure_state_dir`) and `preflight` both ask this, so they refuse the same folders. An existing,
    readable folder on a read-only file system (a failing SD card) is no problem here: the start goes
    past it as past a full disk (`read_only_warning` says so).
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
            if on_read_only_fs(folder):
                if folder != path:
                    return f"cannot create {path}: {folder} is on a read-only file system"
                if not os.access(folder, os.R_OK | os.X_OK):
                    return f"{path} is on a read-only file system and not readable by this user"
                return None
            if folder == path:
                return f"{path} is not writable"
            return f"cannot create {path}: {os.strerror(errno.EACCES)} ({folder} is not writable)"
        return None
    return None


def read_only_warning(path: Path) -> str | None:
    """What a start with the existing folder `path` on a read-only file system does without writing,
    or None when its file system takes writes."""
    if not on_read_only_fs(path):
        return None
    return (
        f"{path} is on a read-only file system (EROFS): the agent monitors and sends what its outbox "
        "holds, keeps new alarm events in memory and sends them directly, and saves no state (session "
        "counter, pipeline.json, keys) until the card is repaired or replaced"
    )


def _is_link(path: Path) -> bool:
    try:
        return stat.S_ISLNK(path.lstat().st_mode)
    except OSError:
        return False


def ensure_state_dir(path: Path) -> Path:
    """`path` made (0700) when absent, and made 0700 when others may enter it; `ConfigError` naming
    `gateway.state_dir` when it cannot be a folder this process writes in. An existing folder on a
    read-only file system is used as it is, said once."""
    problem = folder_problem(path)
    if problem is None and (read_only := read_only_warning(path)) is not None:
        log.warning("gateway.state_dir %s", read_only)
        return path
    if problem is None:
        try:
            path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER)
        except OSError as exc:
            problem = f"cannot create {path}: {exc.strerror}"
        else:
            problem = folder_problem(path)
    if problem is not None:
        raise ConfigError("gateway.state_dir", problem)
    _make_private(path)
    return path


def _make_private(path: Path) -> None:
    """Take group and others' access to the state folder away, or say why it stays open."""
    info = path.stat()
    mode = stat.S_IMODE(info.st_mode)
    if not mode & 0o077:
        return
    if info.st_uid == os.geteuid():
        try:
            path.chmod(mode & ~0o077 | PRIVATE_FOLDER)
        except OSError as exc:
            log.warning(
                "gateway.state_dir %s is mode %o and cannot be made 0700: %s", path, mode, exc.strerror
            )
        else:
            log.warning("gateway.state_dir %s was mode %o, open to group or others: made 0700", path, mode)
        return
    log.warning(
        "gateway.state_dir %s is mode %o and owned by another user (uid %d): group or others may read "
        "the agent's state (patient values); chown it to the agent's user or chmod 700 it",
        path,
        mode,
        info.st_uid,
    )


def write_atomic(path: Path, data: bytes) -> None:
    """Write, fsync, then rename: a crash leaves the old file or the new one, never half of one. The
    file is 0600 whatever the umask (and whatever mode an older file had: it is replaced)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    try:
        with os.fdopen(fd, "wb") as f:  # first: it closes `fd` whatever fails after
            os.fchmod(f.fileno(), PRIVATE_FILE)  # a leftover temporary file keeps its mode through O_CREAT
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except OSError:
        with contextlib.suppress(OSError):  # a full disk leaves no empty temporary file behind
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def next_session(state_dir: Path) -> int:
    """Increment and return the persistent session counter (1 on the first start).

    Sessions must differ from the last one, which the last heartbeat (`last-heartbeat.json`) also
    names: a damaged or missing counter goes on from there, with a log line, rather than repeat it.
    A counter that cannot be written (a full disk) does not stop the start: this session still gets
    its number, the log says so, and the next start may repeat it."""
    path = state_dir / "session"
    last = _last_heartbeat_session(state_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        text = None
    except (OSError, UnicodeDecodeError):
        text = "?"
    try:
        current = int(text.strip()) if text is not None else 0
    except ValueError:
        current = 0
        log.warning(
            "the session counter %s is damaged (%d byte(s)): counting on from session %d, the last "
            "heartbeat's",
            path,
            len(text or ""),
            last,
        )
    if text is None and last:
        log.warning(
            "the session counter %s is missing: counting on from session %d, the last heartbeat's", path, last
        )
    session = max(current, last) + 1
    try:
        write_atomic(path, f"{session}\n".encode())
    except OSError as exc:
        log.error(
            "cannot save the session counter %s (%s): this is session %d, and a start before the disk "
            "takes writes again may repeat it; %s",
            path,
            exc.strerror,
            session,
            disk_remedy(state_dir),
        )
    return session


def _last_heartbeat_session(state_dir: Path) -> int:
    """The session the last saved heartbeat names (`agent.status.LAST_HEARTBEAT`), or 0."""
    beat = read_json(state_dir / "last-heartbeat.json")
    session = beat.get("session") if beat is not None else None
    return session if isinstance(session, int) and not isinstance(session, bool) and session > 0 else 0


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):  # absent, unreadable, not UTF-8, not JSON
        return None
    return value if isinstance(value, dict) else None


def write_json(path: Path, value: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(value, indent=1, sort_keys=True).encode())
