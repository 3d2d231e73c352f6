"""The status socket's server side: a client that hangs up before its answer is written (`edge-agent
status` giving up on a busy agent, a probe that connects and closes) is no error. The review's 50
connect-then-close clients gave 50 full tracebacks "Unhandled exception in client_connected_cb ...
ConnectionResetError" at ERROR (review link F5). A real unix socket and the real server."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from agent.status import FoundStatus, StatusServer, read_status

HANGUPS = 50


def snapshot() -> dict[str, Any]:
    return {"uplink": {"connected": True}, "filler": "x" * 4096}


def test_clients_that_hang_up_at_once_log_no_error_and_the_next_client_is_answered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> FoundStatus | None:
        server = StatusServer(tmp_path, snapshot)
        await server.start()
        try:
            for _ in range(HANGUPS):
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                    client.connect(str(server.path))  # and closed at once, unread
            await asyncio.sleep(0.5)  # the server writes to each and meets its hang-up
            return await asyncio.to_thread(read_status, tmp_path)
        finally:
            await server.close()

    with caplog.at_level(logging.DEBUG):
        answer = asyncio.run(main())
    assert answer is not None and answer.source == "live" and answer.status["uplink"] == {"connected": True}
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == [], [f"{r.name}: {r.getMessage()}" for r in loud][:3]
