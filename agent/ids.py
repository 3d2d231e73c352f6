"""UUIDv7 identifiers (RFC 9562): time-ordered, so outbox rows and receivers sort by creation time.

Python 3.11 has no `uuid.uuid7`; this is the RFC's layout with a 48-bit millisecond timestamp,
a 12-bit counter for ids made in the same millisecond, and 62 random bits.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7(unix_ms: int | None = None) -> uuid.UUID:
    """A new UUIDv7; monotonic within this process even when the clock stands still."""
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
        if ms <= _last_ms:
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                _last_ms += 1
                _counter = 0
            ms = _last_ms
        else:
            _last_ms = ms
            _counter = int.from_bytes(os.urandom(2), "big") & 0x3FF  # leave room to count up
        rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
        value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | _counter << 64 | 0b10 << 62 | rand
    return uuid.UUID(int=value)


def uuid7_time_ms(value: uuid.UUID) -> int:
    """The millisecond timestamp stored in a UUIDv7."""
    return value.int >> 80
