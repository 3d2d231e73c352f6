"""A real small disk for tests of a full one: a tmpfs of a few MiB, filled by another file.

A full file system is not something a process limit (RLIMIT_FSIZE, EFBIG) stands in for everywhere: it
also refuses the writes that only reuse room, such as SQLite's WAL growing for a DELETE. Mounting needs
root, so without it the tests that use `small_disk` are skipped (they say so).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

SIZE = "4m"


def mount_small_disk(where: Path, size: str = SIZE) -> Iterator[Path]:
    """`where` as a tmpfs of `size` for the duration (root only: skipped otherwise)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a small real disk (tmpfs) needs root to mount")
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path, name: str = "filler", *, leave: int = 0) -> Path:
    """Write `disk/name` until the file system says ENOSPC (another program filling the card), or until
    only `leave` bytes are free."""
    path = disk / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        if leave:
            os.write(fd, b"\0" * max(0, free_bytes(disk) - leave))
            return path
        for chunk in (1 << 16, 1 << 12, 1 << 9, 1):
            block = b"\0" * chunk
            while True:
                try:
                    os.write(fd, block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    return path


def free_bytes(disk: Path) -> int:
    info = os.statvfs(disk)
    return info.f_bavail * info.f_frsize
