"""The serial source's error counters by kind, and the one line for DATA dropped for want of a HELLO,
over real pseudo-terminals."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cobs import cobs  # type: ignore[import-untyped]
from src_pty import CHANNELS, PtyDevice, serial_device, take

from agent.sources.backoff import BackoffPolicy
from agent.sources.serial import SerialSource
from agent.sources.serial_frames import WAITING_HELLO_TELL_S
from firmware_bridge import encode_frame
from firmware_bridge.frame_messages import DataBlock, Hello, SampleType

FAST = BackoffPolicy(initial_s=0.05, max_s=0.5)
HELLO = Hello("emu-1", (1, 0, 0), tuple(c.spec for c in CHANNELS))


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[PtyDevice]:
    dev = PtyDevice(tmp_path / "usb-Acme_Monitor_0001-if00-port0")
    yield dev
    dev.unplug()


async def connected(source: SerialSource) -> None:
    async with asyncio.timeout(10):
        while not source.stats.connected:
            await asyncio.sleep(0.01)


def data(seq: int) -> bytes:
    block = DataBlock(seq * 10**6, SampleType.INT16, (1, 2), np.array([[720, 975]]))
    return encode_frame(block, seq, seq * 10**6)


def test_data_without_hello_is_told_once_with_its_count_and_counted(
    pty: PtyDevice, caplog: pytest.LogCaptureFixture
) -> None:
    """A device that streams DATA and ignores SEND_HELLO (firmware that announces itself only at boot):
    every frame is dropped; the log says so once, after WAITING_HELLO_TELL_S, not at the first frame
    (a running device's DATA can precede its answer to the SEND_HELLO of the open)."""
    pty.plug()
    caplog.set_level(logging.DEBUG, logger="agent.sources.serial")

    async def main() -> None:
        source = SerialSource(serial_device(pty.link), backoff=FAST)
        async with source:
            pending = asyncio.ensure_future(anext(source))
            await connected(source)
            seq = 0
            started = time.monotonic()
            while time.monotonic() - started < WAITING_HELLO_TELL_S + 1.5:
                pty.write(data(seq))
                seq += 1
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.3)  # the last frame is read
            dropped = source.stats.errors["waiting_hello"]
            assert dropped == seq
            told = [r for r in caplog.records if "no HELLO" in r.getMessage()]
            assert len(told) == 1 and told[0].levelno == logging.WARNING
            assert "DATA frame(s) over 3 s and no HELLO: they are dropped (errors waiting_hello)" in (
                told[0].getMessage()
            )
            assert not pending.done()  # nothing was delivered
            pty.write(encode_frame(HELLO, seq, seq * 10**6) + data(seq + 1))
            async with asyncio.timeout(10):
                reading = await pending
            assert reading.stream == "bed-7/vitals"
            hello = [r for r in caplog.records if "HELLO received" in r.getMessage()]
            assert [r.getMessage() for r in hello] == [
                f"bed-7: HELLO received; {dropped} DATA frame(s) before it were dropped"
            ]
            assert hello[0].levelno == logging.INFO

    asyncio.run(main())


def test_decoder_error_kinds_are_counted_and_survive_a_lost_link(pty: PtyDevice) -> None:
    pty.plug()

    async def main() -> None:
        source = SerialSource(serial_device(pty.link), backoff=FAST)
        async with source:
            pending = asyncio.ensure_future(anext(source))
            await connected(source)  # opening flushes what the port held
            raw = bytearray(cobs.decode(data(1)[1:-1]))
            raw[-1] ^= 0x40  # one flipped bit in the CRC
            bad_crc = b"\x00" + cobs.encode(bytes(raw)) + b"\x00"
            cut = b"\x00\x03\x01\x00"  # COBS says two bytes follow, one does
            pty.write(encode_frame(HELLO, 0, 0) + bad_crc + cut + data(2) + data(1))
            async with asyncio.timeout(10):
                await pending
            await take(source, 1)  # seq 2 then seq 1: the sequence went back
            errors = dict(source.stats.errors)
            assert errors["bad_crc"] == 1 and errors["truncated"] == 1
            assert errors["seq_backwards"] == 1 and errors["lost_frames"] == 1
            assert source.stats.bad_frames == 2  # the kinds break the total down
            assert errors["waiting_hello"] == 0 and errors["undecodable"] == 0

            pty.unplug()  # the next link's decoder starts from zero; the source's counts do not
            pty.plug()
            pty.start()
            await take(source, 1)
            after = dict(source.stats.errors)
            assert source.stats.reconnects == 1 and after["link_failures"] == 1
            assert after["bad_crc"] == 1 and after["truncated"] == 1 and after["seq_backwards"] == 1

    asyncio.run(main())
