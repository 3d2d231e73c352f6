"""No core dump of the running agent: its memory holds the configured device and patient ids.

A privacy review (m1) crashed `edge-agent run` under `ulimit -c unlimited` and found a 98 MB core
holding every `DeviceConfig` (device and patient ids) 14 times. `forbid_core_dumps` closes both
roads a crash takes to disk: the core size limit, set to 0 (soft and hard: nothing in the process can
raise it again), which a core file and systemd-coredump obey, and the process's "dumpable" flag
(prctl PR_SET_DUMPABLE 0), which stops the kernel from dumping it at all unless the system's
`fs.suid_dumpable` allows it, and keeps other processes of the agent's user from tracing it or reading
its memory. The unit sets `LimitCORE=0` as well. To look into a live agent, use py-spy or gdb as root.
"""

from __future__ import annotations

import ctypes
import logging
import resource
import sys

log = logging.getLogger("agent")
PR_SET_DUMPABLE = 4  # <linux/prctl.h>


def forbid_core_dumps() -> None:
    """Set this process's core size limit to 0 and, on Linux, clear its dumpable flag; a failure is
    logged (the agent still runs: a crash would then write what the system allows)."""
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError) as exc:
        log.warning("core dumps: cannot set the core size limit to 0 (%s)", exc)
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        log.warning("core dumps: prctl(PR_SET_DUMPABLE, 0) failed (errno %d)", ctypes.get_errno())
