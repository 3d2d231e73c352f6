"""An agent restarted (or reloaded) while its serial device stays powered must get the device's HELLO.

The gateway's SEND_HELLO frames all carried sequence number 0 and time 0, and a device applying the
spec's duplicate rule (the project's own emulator) dropped the second agent's request as a repeat of
the first one's: no HELLO ever came, all DATA was dropped as waiting_hello (review of 2026-11-30,
finding 2). Real pseudo-terminals, the real emulator left running between two `SerialSource`s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from src_pty import PtyDevice, serial_device, take

from agent.sources.backoff import BackoffPolicy
from agent.sources.serial import SerialSource
from firmware_bridge import NEED_DATA, FrameDecoder
from firmware_bridge.frame_messages import Command, CommandCode

FAST = BackoffPolicy(initial_s=0.05, max_s=0.5)


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[PtyDevice]:
    dev = PtyDevice(tmp_path / "usb-Acme_Monitor_0001-if00-port0")
    yield dev
    dev.unplug()


def test_a_restarted_agent_gets_hello_from_a_device_left_running(pty: PtyDevice) -> None:
    pty.plug()
    emulator = pty.start(speed=1.0)

    async def session(deadline_s: float) -> int:
        async with SerialSource(serial_device(pty.link), backoff=FAST) as source:
            await take(source, 3, deadline_s)
            return source.stats.errors["waiting_hello"]

    asyncio.run(session(10.0))
    answered = emulator.counters.commands
    # The second agent: the device kept running, it only answers SEND_HELLO (its boot HELLO is long gone).
    asyncio.run(session(10.0))
    assert emulator.counters.commands > answered  # its request was taken, not dropped as a duplicate
    assert emulator._commands.stats.duplicates == 0


def test_the_gateway_numbers_its_frames_per_port() -> None:
    """Each frame the source writes takes the next sequence number and a later time."""
    written: list[bytes] = []

    class Port:
        def fileno(self) -> int:
            return -1

        def read(self, size: int = 1) -> bytes:
            return b""

        def write(self, data: bytes, /) -> int:
            written.append(data)
            return len(data)

        def close(self) -> None:
            pass

    source = SerialSource(serial_device(Path("/dev/null")), open_port=lambda _: Port())
    source._port = Port()
    for _ in range(3):
        source._request_hello(force=True)
    decoder = FrameDecoder()
    decoder.feed(b"".join(written))
    frames = []
    while (frame := decoder.next_frame()) is not NEED_DATA:
        frames.append(frame)
    assert [f.message for f in frames] == [Command(CommandCode.SEND_HELLO)] * 3
    assert [(f.seq - frames[0].seq) % 65536 for f in frames] == [0, 1, 2]
    assert frames[0].device_time_us > 0
    assert frames[0].device_time_us <= frames[1].device_time_us <= frames[2].device_time_us
    assert decoder.stats.duplicates == 0
