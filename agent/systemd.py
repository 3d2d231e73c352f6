"""systemd integration without a dependency: READY/WATCHDOG/STOPPING over $NOTIFY_SOCKET.

The protocol is one datagram of "KEY=VALUE" lines to the unix socket named by NOTIFY_SOCKET (a
leading '@' means the abstract namespace). When the agent is not run by systemd the variable is
absent and every call is a no-op. The daemon sends WATCHDOG=1 only while its pipeline loop keeps
turning, so a stalled pipeline stops the pings and systemd restarts the service.
"""

from __future__ import annotations

import os
import socket


def notify(*lines: str) -> bool:
    """Send `lines` (e.g. "READY=1") to systemd; False when not under systemd or the send failed."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    target = "\0" + address[1:] if address.startswith("@") else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(target)
            sock.sendall("\n".join(lines).encode())
    except OSError:
        return False
    return True


def watchdog_period_s() -> float | None:
    """Half the watchdog timeout systemd set (WatchdogSec=), the recommended ping period; None if unset."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None
