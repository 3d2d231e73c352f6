"""What an operator reads when a serial device is set up wrong: a port that is not there, or one whose
bytes do not decode (wrong baud rate or protocol). One log line that names the config key and what
to do, not one per retry or per bad byte; and the source opens the port by itself once it appears.
Real pseudo-terminals behind a stable link, real pyserial.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from src_pty import PtyDevice, serial_device, take

from agent.sources.backoff import BackoffPolicy
from agent.sources.serial import SerialSource

FAST = BackoffPolicy(initial_s=0.02, max_s=0.1)
LOGGER = "agent.sources.serial"


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[PtyDevice]:
    dev = PtyDevice(tmp_path / "usb-Acme_Monitor_0001-if00-port0")
    yield dev
    dev.unplug()


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.01)


def test_a_missing_port_is_told_once_and_opened_when_the_device_is_plugged_in(
    pty: PtyDevice, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        source = SerialSource(serial_device(pty.link), backoff=FAST)
        async with source:
            first = asyncio.create_task(take(source, 5))
            await until(lambda: source.stats.errors["open_failures"] >= 10)  # ten retries, one line
            pty.plug()
            pty.start()
            assert len(await first) == 5

    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        asyncio.run(main())
    (warning,) = lines(caplog, logging.WARNING)
    assert f"cannot open serial port {pty.link} (serial.port): no such device file" in warning
    assert "is the device plugged in" in warning and "other devices are not affected" in warning
    (opened,) = lines(caplog, logging.INFO)
    assert (
        opened.startswith(f"bed-7: serial port {pty.link} open (after ")
        and "failed attempt(s) over " in opened
    )


def test_bytes_that_do_not_decode_are_counted_and_told_once_naming_baud_rate_and_protocol(
    pty: PtyDevice, caplog: pytest.LogCaptureFixture
) -> None:
    pty.plug()
    noise = random.Random(7)

    async def main() -> None:
        source = SerialSource(serial_device(pty.link), backoff=FAST)
        async with source:
            reader = asyncio.create_task(take(source, 1, deadline_s=60))
            for _ in range(40):  # what a device at another baud rate looks like: 40 KiB of noise
                pty.write(bytes(noise.randrange(256) for _ in range(1024)))
                await asyncio.sleep(0.01)
            await until(lambda: source.stats.bad_frames >= 50)
            reader.cancel()
            assert source.stats.readings == 0 and source.stats.bytes_in >= 4096

    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        asyncio.run(main())
    (warning,) = lines(caplog, logging.WARNING)  # once, however many bad frames
    assert "nothing decodes as serial.protocol 'frames'" in warning
    assert "check serial.baudrate (115200) and serial.protocol" in warning
    assert lines(caplog, logging.INFO) == [f"bed-7: serial port {pty.link} open"]  # nothing per bad frame


@pytest.mark.parametrize("mistake", ["held by another program", "not a serial device", "a directory"])
def test_a_port_that_cannot_be_used_says_why(
    mistake: str, pty: PtyDevice, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import serial

    pty.plug()
    holder = serial.Serial(str(pty.link), exclusive=True) if mistake == "held by another program" else None
    path = pty.link if holder is not None else tmp_path / "notes.txt"
    if mistake == "a directory":  # serial.port = "/dev/serial/by-id/": the port's name left out
        path = tmp_path / "by-id"
        path.mkdir()
    else:
        path.touch()

    async def main() -> None:
        source = SerialSource(serial_device(path), backoff=FAST)
        async with source:
            reader = asyncio.ensure_future(anext(source))
            await until(lambda: source.stats.errors["open_failures"] >= 5)
            reader.cancel()

    try:
        with caplog.at_level(logging.INFO, logger=LOGGER):
            asyncio.run(main())
    finally:
        if holder is not None:
            holder.close()
    (warning,) = lines(caplog, logging.WARNING)
    expected = {
        "held by another program": "another program holds the port",
        "not a serial device": "it is not a serial device",
        "a directory": "it is a directory, not a device file: check serial.port (the full path to the port",
    }[mistake]
    assert f"cannot open serial port {path} (serial.port): {expected}" in warning
