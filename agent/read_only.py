"""A read-only file system under the agent's files: what a failing SD card becomes, told apart from a
full one and from a permissions problem.

The kernel remounts an SD card's file system read-only when it finds it damaged (ext4's
``errors=remount-ro``), so a card at the end of its life turns read-only after a power cut. The agent
then starts and monitors as on a full disk (docs/robustness.md, "The disk fills up"): it reads what is
queued and sends it, holds new alarms in memory and sends them directly, and saves no state. What
differs is the remedy in its log lines: no space to free, a card to check and replace. `os.access` says
"not writable" on such a file system as it does for a folder of another user's, so whether the file
system itself is read-only is asked of the kernel (`statvfs`'s ``ST_RDONLY``), not guessed from errno.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

FREE_SPACE = "free space on its disk"
REPAIR_CARD = "its file system is read-only (EROFS): check the card (dmesg), repair (fsck) or replace it"


def on_read_only_fs(path: Path) -> bool:
    """Whether `path`, or its nearest existing ancestor when it is absent, is on a file system mounted
    read-only."""
    for place in (path, *path.parents):
        try:
            flags = os.statvfs(place).f_flag
        except OSError:
            continue  # absent, or not looked at: the folder above says
        return bool(flags & os.ST_RDONLY)
    return False


def is_read_only_error(exc: BaseException | None) -> bool:
    """An `OSError` of a read-only file system (EROFS)."""
    return isinstance(exc, OSError) and exc.errno == errno.EROFS


def remedy(path: Path) -> str:
    """What to do about a file at `path` that cannot be written: repair the card when its file system is
    read-only, else free space."""
    return REPAIR_CARD if on_read_only_fs(path) else FREE_SPACE


def disk_remedy(folder: Path) -> str:
    """`remedy` naming the disk of `folder`: "free space on the disk of …", or its read-only note."""
    if on_read_only_fs(folder):
        return f"the disk of {folder}: {REPAIR_CARD}"
    return f"free space on the disk of {folder}"
