"""Secret files (the pseudonym key, the outbox key, the broker password, the TLS client key): the keys
the agent makes are created 0600 on first use, and every secret file is refused when group or others
can read it, so a secret is never used after it may have leaked on the gateway.

A key made while its file cannot be written for want of space (a full disk at the first start), or on a
read-only file system (a failing SD card), serves from memory and is written, the same bytes, once the
disk takes them (`agent.privacy.SiteKey`, the outbox's `_save_keys`): what was sealed or pseudonymised
with it then still opens, or maps the same, after a restart. Nothing is sealed with an outbox key before
its file holds it."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from agent.errors import ConfigError
from agent.read_only import on_read_only_fs


def create_private(path: Path, data: bytes, setting: str) -> bool:
    """Write `data` durably to a new 0600 file at `path`; False when the file already exists.
    A write that fails (a full disk) removes the file again, so no empty key is left to block the next
    start; the `ConfigError` then has the `OSError` as its cause."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    except OSError as exc:
        raise ConfigError(setting, f"cannot create {path}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink()
        raise ConfigError(setting, f"cannot write {path}: {exc.strerror}") from exc
    return True


def cannot_write_now(exc: ConfigError) -> bool:
    """Whether `create_private` failed for want of space (ENOSPC) or on a read-only file system
    (EROFS, a failing SD card): the key may serve from memory."""
    return isinstance(exc.__cause__, OSError) and exc.__cause__.errno in (errno.ENOSPC, errno.EROFS)


def create_problem(path: Path) -> str | None:
    """Why `create_private` could not create `path` now, or None; looks only (for `preflight`).
    `create_private` makes no folder: the file's folder must already be one this process writes in."""
    folder = path.parent
    try:
        is_folder = stat.S_ISDIR(folder.stat().st_mode)
    except OSError as exc:
        return f"cannot create {path}: its folder {folder}: {exc.strerror}"
    if not is_folder:
        return f"cannot create {path}: {folder} is not a directory"
    if not os.access(folder, os.W_OK | os.X_OK):
        if on_read_only_fs(folder):  # a failing card: the key serves from memory (see the docstring above)
            return None
        return f"cannot create {path}: {folder} is not writable"
    return None


def private_file_problem(path: Path) -> str | None:
    """Why an existing secret file must not be used (readable by others, unreadable), or None."""
    try:
        path.stat()
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    return loose_mode_problem(path)


def loose_mode_problem(path: Path) -> str | None:
    """Why secret file `path` must not be used: group or others have access to it. None when they do
    not, or when it cannot be looked at (its reader says why)."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return None
    if mode & 0o077:
        return f"{path} is readable by group or others (mode {mode:o}); chmod 600 it"
    return None


def read_private(path: Path, setting: str) -> bytes:
    """The bytes of an existing secret file; `ConfigError` naming `setting` when it must not be used."""
    problem = private_file_problem(path)
    if problem is None:
        try:
            return path.read_bytes()
        except OSError as exc:
            problem = f"cannot read {path}: {exc.strerror}"
    raise ConfigError(setting, problem)
