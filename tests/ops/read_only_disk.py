"""A real read-only file system for tests of a failing SD card: a bind mount remounted read-only.

The kernel remounts a damaged card's ext4 read-only (``errors=remount-ro``); `mount -o remount,ro,bind`
gives the files under the mount the same EROFS on every write, with the files an earlier run left
there. Mounting needs root; without it the test runs in a child pytest in a user and mount namespace,
or is skipped, as `small_disk` does.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from small_disk import VIA_NAMESPACE, run_in_user_namespace


def bind_mount(request: pytest.FixtureRequest, source: Path, where: Path) -> Iterator[Path]:
    """`source` mounted at `where` (writable) for the duration; `set_read_only` turns it read-only."""
    if os.geteuid() != 0 or os.environ.get(VIA_NAMESPACE) == "1":
        run_in_user_namespace(request)
        return
    source.mkdir(parents=True, exist_ok=True)
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(source), str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def set_read_only(where: Path, read_only: bool = True) -> None:
    """Remount the bind mount at `where` read-only (or writable again)."""
    flag = "ro" if read_only else "rw"
    subprocess.run(["mount", "-o", f"remount,{flag},bind", str(where)], check=True)
