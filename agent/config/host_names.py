"""Whether a broker host from `mqtt.url` can be looked up at all.

The socket layer encodes a host name with Python's `idna` codec before asking DNS; a name it cannot
encode (an empty label from a typed double dot, a label over 63 characters) raises `UnicodeError`,
not the `OSError` paho retries on, so it must be refused with the configuration, never met at the
first connection. The same codec decides here, so the check refuses exactly what the connection
would fail on; white space and control characters are refused too (DNS can never answer them, and a
NUL makes the look-up raise `ValueError`). IP addresses (IPv6 too) pass unchanged.
"""

from __future__ import annotations

import ipaddress
import re

_NOT_IN_A_NAME = re.compile(r"[\x00-\x20\x7f]")


def host_name_problem(host: str) -> str | None:
    """Why `host` cannot be a broker's host name, in words for `mqtt.url`; None when it can."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if _NOT_IN_A_NAME.search(host):
        return f"the host {host!r} contains white space or a control character"
    try:
        host.encode("idna")
    except UnicodeError as exc:
        why = str(exc)
        if "empty or too long" in why:
            why = "a label (the text between dots) is empty or longer than 63 characters"
        return f"the host {host!r} is not a valid host name: {why}"
    return None
