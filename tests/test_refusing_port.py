"""The test helper that replaced `free_port()` where a test needs a port nobody answers on: a port only
chosen free could be taken by a parallel test's broker before use (seen once: a listener answered and the
uplink test read a TLS hint instead of "nothing accepts connections")."""

from __future__ import annotations

import socket

import pytest
from ports import RefusingPort


def test_a_held_port_refuses_connections_and_cannot_be_taken_by_a_listener() -> None:
    held = RefusingPort()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", held.port), timeout=2).close()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other, pytest.raises(OSError):
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as brokers set it
        other.bind(("127.0.0.1", held.port))
    held.release()


def test_a_released_port_can_be_listened_on() -> None:
    port = RefusingPort().release()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
