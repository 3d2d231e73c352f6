"""Give the heap back to the system after a large command (a model bundle of up to 16 MB).

Strategy: checking a bundle holds several copies of it at once (the payload paho read, the envelope's
text, the signed string and its UTF-8 bytes). glibc serves such blocks from mmap at first, but raises its
mmap threshold to the size of each one freed (up to 32 MB), so the next ones come from the heap, where
the freed space stays mapped: after four 16 MB refusals the agent's RSS stayed 60-130 MB above its
baseline for good, against the unit's MemoryMax=256M. `malloc_trim(0)` returns the free pages at the
heap's end and inside it. Elsewhere than glibc (musl, macOS) it is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[], object] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


_TRIM = _malloc_trim()


def trim_heap() -> None:
    """Return freed heap memory to the system, where the C library can (a few ms; call off the hot path)."""
    if _TRIM is not None:
        _TRIM()
