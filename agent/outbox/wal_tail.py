"""The end of the outbox's WAL: committed transactions SQLite will discard at the open, found beforehand.

Strategy: SQLite replays a WAL file up to its last valid commit frame (the frame's salts match the
WAL header's and the running checksum holds) and silently drops the rest. After a crash (kill -9) the
rest is at most a transaction that was never committed; but a card that loses written data (cheap SD
cards lose even fsync'd writes at a power cut) can damage or cut the end of the WAL, and committed
events go with it: an episode whose START was delivered then never gets its END (offline review M2).

Before the outbox is opened, `read_wal_tail` reads the WAL as SQLite will (the file format of
https://sqlite.org/fileformat2.html#the_write_ahead_log) and finds two signs of lost commits:
- a commit frame of the current WAL (its salts) after the last valid commit: a transaction written
  in full whose bytes are damaged;
- the WAL index (`-shm`, https://sqlite.org/walformat.html) the last process left: when its header is
  sound and of the same WAL, its `mxFrame` is how many frames that process had committed; more than
  SQLite will replay means the end of the WAL was lost (cut, or never reached the card).
Neither sign appears after a kill (the page cache keeps every write). After a power cut they can
also mean commits made with ``synchronous=NORMAL`` (heartbeats, deletions: `transactions`), which a
power cut may lose by design, caught half written; which transactions were lost cannot be told, so
the warning says what may be lost. A WAL cut on a card that lost the `-shm` too leaves no sign: that
loss is not told. Reading costs one pass over the WAL, a frame at a time, at the open, and only when
a WAL was left (a crash: a clean close folds the WAL into the file and deletes it).
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

WAL_HEADER = 32
FRAME_HEADER = 24
_MAGIC = (0x377F0682, 0x377F0683)  # checksums of little-endian words, of big-endian words
_INDEX_HEADER = 48  # one copy of the wal-index header; the -shm starts with two
_INDEX_VERSION = 3007000


@dataclass(frozen=True, slots=True)
class WalTail:
    """What the WAL left by the last process holds: `frames` complete frames, of which SQLite replays
    `replayed`; `lost_commits` commit frames of this WAL after those (written in full, damaged since);
    `indexed` the frames the last process's WAL index said were committed (None: no sound index of
    this WAL)."""

    frames: int
    replayed: int
    lost_commits: int
    indexed: int | None

    @property
    def lost(self) -> bool:
        """Whether committed transactions will be discarded."""
        return self.lost_commits > 0 or (self.indexed is not None and self.indexed > self.replayed)

    @property
    def lost_transactions(self) -> int:
        """Committed transactions, at least, that will be discarded (a cut end hides how many)."""
        cut = self.indexed is not None and self.indexed > self.replayed
        return max(self.lost_commits, int(cut))

    @property
    def lost_frames(self) -> int:
        """Frames, at least, of committed transactions that will be discarded (pages, not events)."""
        last_written = max(self.indexed or 0, self.replayed + self.lost_commits)
        return max(0, last_written - self.replayed)


def read_wal_tail(db_path: Path) -> WalTail | None:
    """The WAL of `db_path` as SQLite will replay it; None when there is none to replay (no file,
    nothing past the header) or it cannot be read. Read a frame at a time: a WAL keeps the size it
    once grew to (an alarm storm's transaction, a long outage's backlog), and this runs at the start of
    a gateway that may have little memory to spare."""
    wal = db_path.with_name(db_path.name + "-wal")
    try:
        with wal.open("rb") as file:
            return _read(file, wal.stat().st_size, db_path)
    except OSError:
        return None


def _read(file: BinaryIO, size: int, db_path: Path) -> WalTail | None:
    header = file.read(WAL_HEADER)
    if len(header) < WAL_HEADER:
        return None
    magic, _version, page_size, _checkpoint, salt1, salt2, c1, c2 = struct.unpack(">8I", header)
    if magic not in _MAGIC or page_size < 512 or page_size & (page_size - 1):
        return None  # not a WAL SQLite would read: nothing it replays, nothing told here
    order = ">" if magic & 1 else "<"
    frame_size = FRAME_HEADER + page_size
    frames = (size - WAL_HEADER) // frame_size
    if frames == 0:
        return None
    indexed = _indexed_frames(db_path, salt1, salt2)
    s = _checksum(header[:24], order, 0, 0)
    if s != (c1, c2):  # a damaged header: SQLite ignores the whole WAL
        return WalTail(frames, 0, _commits(file, 0, frames, frame_size, salt1, salt2), indexed)
    replayed = 0
    for n in range(frames):
        frame = file.read(frame_size)
        if len(frame) < frame_size:
            break  # the file shrank while read
        _page, commit, f_salt1, f_salt2, f_c1, f_c2 = struct.unpack(">6I", frame[:FRAME_HEADER])
        if (f_salt1, f_salt2) != (salt1, salt2):
            break
        s = _checksum(frame[:8], order, *s)
        s = _checksum(frame[FRAME_HEADER:], order, *s)
        if s != (f_c1, f_c2):
            break
        if commit:
            replayed = n + 1
    lost = _commits(file, replayed, frames, frame_size, salt1, salt2)
    return WalTail(frames, replayed, lost, indexed)


def _commits(file: BinaryIO, first: int, frames: int, frame_size: int, salt1: int, salt2: int) -> int:
    """Commit frames of this WAL (its salts) among frames `first`.. (their headers only)."""
    count = 0
    for n in range(first, frames):
        file.seek(WAL_HEADER + n * frame_size)
        head = file.read(16)
        if len(head) < 16:
            break
        _page, commit, f_salt1, f_salt2 = struct.unpack(">4I", head)
        count += bool(commit) and (f_salt1, f_salt2) == (salt1, salt2)
    return count


def _indexed_frames(db_path: Path, salt1: int, salt2: int) -> int | None:
    """`mxFrame` of the WAL index left by the last process, when its header is sound (both copies
    alike, initialised, its checksum right) and of this WAL (its salts); else None."""
    try:
        with db_path.with_name(db_path.name + "-shm").open("rb") as shm:
            head = shm.read(2 * _INDEX_HEADER)
    except OSError:
        return None
    if len(head) < 2 * _INDEX_HEADER or head[:_INDEX_HEADER] != head[_INDEX_HEADER:]:
        return None
    native = "<" if sys.byteorder == "little" else ">"
    version, _unused, _change, initialised, _big, _page = struct.unpack(f"{native}3I2BH", head[:16])
    (mx_frame,) = struct.unpack(f"{native}I", head[16:20])
    checksum = struct.unpack(f"{native}2I", head[40:48])
    if version != _INDEX_VERSION or not initialised or _checksum(head[:40], native, 0, 0) != checksum:
        return None
    salts = struct.unpack(">2I", head[32:40])  # copied from the WAL header as bytes: its byte order
    return int(mx_frame) if salts == (salt1, salt2) else None


def _checksum(block: bytes, order: str, s1: int, s2: int) -> tuple[int, int]:
    """SQLite's running WAL checksum over `block` (a multiple of 8 bytes), from (s1, s2)."""
    words = struct.unpack(f"{order}{len(block) // 4}I", block)
    for i in range(0, len(words), 2):
        s1 = (s1 + words[i] + s2) & 0xFFFFFFFF
        s2 = (s2 + words[i + 1] + s1) & 0xFFFFFFFF
    return s1, s2
