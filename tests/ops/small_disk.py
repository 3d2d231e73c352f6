"""A real small disk for tests of a full one: a tmpfs of a few MiB, filled by another file.

A full file system is not something a process limit (RLIMIT_FSIZE, EFBIG) stands in for everywhere: it
refuses the writes that a size limit lets through, such as SQLite's WAL growing for a DELETE. Mounting
needs root. Without it, the test is run again in a child `pytest` inside a user and mount namespace
(`unshare -Urm`: root there, so it mounts its own tmpfs), and the test here passes or fails with it;
where unprivileged user namespaces are off too, it is skipped, saying so.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SIZE = "4m"
VIA_NAMESPACE = "SMALL_DISK_VIA_USER_NAMESPACE"  # "1": take the non-root road as root too (to test it)


def mount_small_disk(request: pytest.FixtureRequest, where: Path, size: str = SIZE) -> Iterator[Path]:
    """`where` as a tmpfs of `size` for the duration; without root, the test runs in a child in a user
    namespace instead (see the module's docstring)."""
    if os.geteuid() != 0 or os.environ.get(VIA_NAMESPACE) == "1":
        run_in_user_namespace(request)
        return
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


def run_in_user_namespace(request: pytest.FixtureRequest) -> None:
    """Run this test in a child pytest under ``unshare -Urm``; pass or fail with it (never returns)."""
    unshare = shutil.which("unshare")
    if unshare is None or not _unshare_works():
        pytest.skip("a real mount (tmpfs, bind) needs root, or unprivileged user namespaces (unshare -Urm)")
    pytest_args = ["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", request.node.nodeid]
    child = subprocess.run(
        [unshare, "-Urm", sys.executable, *pytest_args],
        cwd=request.config.rootpath,
        env={k: v for k, v in os.environ.items() if k != VIA_NAMESPACE},  # root there: it mounts
        capture_output=True,
        text=True,
    )
    if child.returncode != 0:
        pytest.fail(f"in a user namespace (unshare -Urm):\n{child.stdout[-6000:]}{child.stderr[-2000:]}")
    if not re.search(r"^1 passed\b", child.stdout, re.MULTILINE):  # exit 0 is a skip too
        said = re.search(r"^SKIPPED \[\d+\] [^\n]*?:\d+: (.*)$", child.stdout, re.MULTILINE)
        pytest.skip(
            f"skipped in a child pytest in a user namespace: {said[1] if said else child.stdout[-500:]}"
        )
    pytest.skip("passed in a child pytest in a user namespace (unshare -Urm), where it could mount")


def _unshare_works() -> bool:
    """Whether this process may make a user and mount namespace (`unshare -Urm`)."""
    unshare = shutil.which("unshare")
    return (
        unshare is not None and subprocess.run([unshare, "-Urm", "true"], capture_output=True).returncode == 0
    )
