"""Two clients with one MQTT client id: the broker keeps only the newest, so they take turns.

Two gateways started from a copied configuration share `gateway.id`, the default client id. Each
connection makes the broker close the other's (MQTT v5 §3.1.4: the server disconnects the existing
client), both reconnect at once, and the link flaps for as long as both run: 57 reconnects in 51 s in
the new-user review (M1), with nothing in the agent's log but `disconnected ... 0x80 Unspecified error`
and no reason in its status; only mosquitto's own log said "Client gw-ward5 already connected".

What the client sees: a broker that says so sends DISCONNECT 0x8E "Session taken over" (v5); mosquitto
2.0 just closes the socket, which paho reports as 0x80 "Unspecified error", right after a CONNACK that
accepted the connection (checked with mosquitto 2.0.11: tests/uplink/test_uplink_takeover.py). So: 0x8E
is the cause itself; `IN_A_ROW` connections in a row closed with 0x80 within `SHORT_S` of being accepted
make it the likely cause. A connection that lasts `STABLE_S` ends the suspicion.
"""

from __future__ import annotations

import time
from collections.abc import Callable

SESSION_TAKEN_OVER = 0x8E  # DISCONNECT reason: another connection with this client id
CLOSED = 0x80  # what paho reports for a connection the broker closed without a DISCONNECT packet
SHORT_S = 10.0  # a connection closed this soon after its CONNACK counts as a takeover's
IN_A_ROW = 3  # short closes in a row that make the suspicion (one or two: a broker restart, a glitch)
STABLE_S = 60.0  # a connection lasting this long ends the suspicion


class TakeoverWatch:
    """Counts the connections the broker ended right after accepting them; `dropped` returns the
    sentence to log once when the pattern appears, `suspected` keeps it for the status."""

    def __init__(self, client_id: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.client_id = client_id
        self._clock = clock
        self._since: float | None = None  # when the current connection was accepted
        self._short = 0  # short closes in a row
        self.suspected: str | None = None

    def connected(self) -> None:
        self._since = self._clock()

    def dropped(self, reason: int) -> str | None:
        """A connection ended with DISCONNECT `reason`: the likely cause when this drop newly shows a
        takeover, else None (also while it goes on: it is told once)."""
        lasted = None if self._since is None else self._clock() - self._since
        self._since = None
        if reason == SESSION_TAKEN_OVER:
            cause = (
                f"the broker ended the connection with 0x8e Session taken over: another client connected "
                f"with the same client id {self.client_id!r}"
            )
        elif reason == CLOSED and lasted is not None and lasted < SHORT_S:
            self._short += 1
            if self._short < IN_A_ROW:
                return None
            cause = (
                f"the broker closed {self._short} connections in a row within {SHORT_S:g} s of accepting "
                f"them: most likely another client uses the same client id {self.client_id!r} and each "
                f"connection ends the other's (the broker's log says \"Client {self.client_id} already "
                f'connected")'
            )
        else:
            self._short = 0
            if lasted is not None and lasted >= STABLE_S:
                self.suspected = None
            return None
        told = self.suspected is not None
        self.suspected = (
            f"{cause}: is gateway.id copied from another gateway's configuration? Each gateway needs its "
            f"own (the client id is mqtt.client_id, by default gateway.id)"
        )
        return None if told else self.suspected

    def current(self) -> str | None:
        """The suspicion, unless the connection up now has lasted `STABLE_S` (for the status)."""
        if self._since is not None and self._clock() - self._since >= STABLE_S:
            self.suspected = None
            self._short = 0
        return self.suspected
