"""A 127.0.0.1 port that refuses connections, for tests of what a client does when nothing listens."""

from __future__ import annotations

import socket


class RefusingPort:
    """A port held bound without listening: connecting to it is refused until `release()`."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])

    def release(self) -> int:
        """Free the port (for a server the test starts on it later); returns the port."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        return self.port
