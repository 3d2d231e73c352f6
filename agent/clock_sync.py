"""Clock sync: whether the kernel says the gateway's wall clock is synchronised, for the payloads.

Strategy: a gateway without a real-time clock runs on the time it booted with until NTP first syncs,
perhaps days later (docs/robustness.md, "The gateway clock jumps"); what it stamps meanwhile is off by
an amount nobody on the gateway can know. The kernel knows whether anything has disciplined the clock:
adjtimex(2) with `modes` 0 only reads its state, and returns TIME_ERROR while STA_UNSYNC is set (no NTP
client has synchronised it since boot, or it lost sync). The answer goes into every alarm event and
heartbeat as `clock_synced`, so the back end knows which times to distrust (docs/payloads.md). One
system call, about a microsecond. Where adjtimex cannot be called (not Linux, no C library) or fails,
the answer is None: unknown.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable

TIME_ERROR = 5  # adjtimex's return while the clock is not synchronised (<sys/timex.h>)
# Zeroed room for a `struct timex` (208 bytes on x86-64, less on 32-bit ABIs): `modes` 0 asks nothing
# to be set, so the call only reads.
_TIMEX_BYTES = 512


def _adjtimex() -> Callable[[ctypes.Array[ctypes.c_char]], int] | None:
    """libc's adjtimex, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        call = libc.adjtimex
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_char_p]
    call.restype = ctypes.c_int
    return call


_ADJTIMEX = _adjtimex()  # looked up once: the library does not change while the agent runs


def clock_synced() -> bool | None:
    """True when the kernel says the wall clock is synchronised, False when it says it is not (boot
    time kept since, fake-hwclock's, or 1970), None when it cannot be asked."""
    return clock_state_synced(_ADJTIMEX)


def clock_state_synced(adjtimex: Callable[[ctypes.Array[ctypes.c_char]], int] | None) -> bool | None:
    """`clock_synced` with the given adjtimex (None: there is none)."""
    if adjtimex is None:
        return None
    state = adjtimex(ctypes.create_string_buffer(_TIMEX_BYTES))
    if state < 0:  # refused (a seccomp filter, say): unknown
        return None
    return state != TIME_ERROR
