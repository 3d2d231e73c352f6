"""One agent per state folder: an advisory lock held for the process's life.

Two agents on one state folder (a manual `edge-agent run` beside the systemd service) share the
outbox, `pipeline.json` and the MQTT client id: the broker hands the connection from one to the other
every second and each overwrites the other's state. So the first takes an exclusive `flock` on
`<state_dir>/agent.lock` (the kernel lets go when the process ends, however it ends) and a second is
refused, naming the folder and the first one's pid. On a read-only file system (a failing SD card)
the lock file is opened for reading, or the folder itself when the file is absent: `flock` needs no
write, and every agent on that folder takes the same road, so one is still refused.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from agent.errors import ConfigError

LOCK_NAME = "agent.lock"


class StateLock:
    """The lock on one state folder; `release` lets it go (also when the process ends)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        path = state_dir / LOCK_NAME
        fd = _open(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            except IsADirectoryError:  # the folder itself is the lock (see the module's docstring)
                holder = "?"
            os.close(fd)
            raise ConfigError(
                "gateway.state_dir",
                f"another edge-agent (pid {holder}) runs with {state_dir}: one agent per state folder "
                "(stop it, or give this one its own state_dir)",
            ) from None
        pid = f"{os.getpid()}\n".encode()
        with contextlib.suppress(OSError):  # the pid is only for whoever is refused: a full disk is no reason
            os.pwrite(fd, pid, 0)  # over the old one, in room the file already has
            os.ftruncate(fd, len(pid))
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def _open(path: Path) -> int:
    """The lock file, for writing the pid in it; on a read-only file system, for reading only."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        if exc.errno != errno.EROFS:
            raise
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
