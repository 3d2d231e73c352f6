"""Give the heap back to the system after a large command (a model bundle of up to 16 MB).

Strategy: checking a bundle holds several copies of it at once (the payload paho read, the envelope's
text, the signed string and its UTF-8 bytes). glibc serves such blocks from mmap at first, but raises its
mmap threshold to the size of each one freed (up to 32 MB), so the next ones come from the heap, where
the freed space stays mapped: after four 16 MB refusals the agent's RSS stayed 60-130 MB above its
baseline for good, against the unit's MemoryMax=256M. `malloc_trim(0)` returns the free pages at the
heap's end and inside it. Elsewhere than glibc (musl, macOS) it is a no-op.

The C library is opened by its glibc name on the first trim, not at import: `ctypes.util.find_library`
runs `ldconfig -p` in a subprocess, which every agent start paid even with remote commands off.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

GLIBC = "libc.so.6"  # glibc's soname on every Linux architecture it ships for


@functools.cache
def _malloc_trim() -> Callable[[], object] | None:
    try:
        trim = ctypes.CDLL(GLIBC).malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim with
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


def trim_heap() -> None:
    """Return freed heap memory to the system, where the C library can (a few ms; call off the hot path)."""
    trim = _malloc_trim()
    if trim is not None:
        trim()
