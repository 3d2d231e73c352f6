"""What an operator reads when a CSV or JSON-lines device sends what does not decode (wrong baud rate,
protocol or channel map): one warning per connection naming the device, serial.port, the protocol and
the count of bad lines, with what to check; never the bytes themselves (they may be patient data),
and nothing about a device that decodes. Real pseudo-terminals behind a stable link, real pyserial;
the rule's time is shortened from 10 s to 1 s so the tests stay quick.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from src_pty import PtyDevice, serial_device, take

from agent.config.schema import SerialConfig
from agent.sources.backoff import BackoffPolicy
from agent.sources.serial import SerialSource
from agent.sources.serial_undecodable import UndecodableInput

FAST = BackoffPolicy(initial_s=0.02, max_s=0.1)
LOGGER = "agent.sources.serial"
AFTER_S = 1.0
SECRET = b"jane-doe"  # stands for what a device may send: it must never reach the log
GOOD = {"csv": b"75,98\n", "jsonl": b'{"hr": 75, "spo2": 98}\n'}
BAD_LINE = {"csv": SECRET + b",42\n", "jsonl": b'{"name": "' + SECRET + b'", "hr": 42}\n'}
UNIT = {"csv": "fields", "jsonl": "keys"}


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[PtyDevice]:
    dev = PtyDevice(tmp_path / "usb-Acme_Monitor_0001-if00-port0")
    yield dev
    dev.unplug()


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def assert_no_device_bytes_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert all(SECRET.decode() not in r.getMessage() for r in caplog.records)


async def until(condition: Callable[[], bool], deadline_s: float = 10.0) -> None:
    async with asyncio.timeout(deadline_s):
        while not condition():
            await asyncio.sleep(0.01)


async def send_for(pty: PtyDevice, chunk: bytes, seconds: float, every_s: float = 0.1) -> None:
    for _ in range(round(seconds / every_s)):
        pty.write(chunk)
        await asyncio.sleep(every_s)


def source_for(pty: PtyDevice, protocol: str) -> SerialSource:
    device = serial_device(pty.link, protocol=protocol, channels=("hr", "spo2"))
    return SerialSource(device, backoff=FAST, undecodable_after_s=AFTER_S)


@pytest.mark.parametrize("protocol", ["csv", "jsonl"])
def test_bad_lines_are_told_once_per_stretch_that_decodes_nothing(
    protocol: str, pty: PtyDevice, caplog: pytest.LogCaptureFixture
) -> None:
    """The audit's case: random bytes and bad lines at a few lines a second, far below 4096 bytes; then
    good lines, then bad ones again on the same link (a firmware update added a CSV column: told again,
    review of 2026-11-30, equipment F8)."""
    pty.plug()
    noise = random.Random(1)

    async def main() -> None:
        source = source_for(pty, protocol)
        async with source:
            reader = asyncio.create_task(take(source, 3, deadline_s=60))
            await until(lambda: source.stats.connected)
            pty.write(bytes(noise.randrange(256) for _ in range(200)) + b"\n")
            await send_for(pty, BAD_LINE[protocol], 2 * AFTER_S)  # ~20 lines of 12-30 bytes
            assert len(warnings(caplog)) == 1 and source.stats.bytes_in < 4096  # told by time, not bytes
            await send_for(pty, GOOD[protocol], 0.3)  # the device is fixed: it decodes
            assert len(await reader) == 3
            reader = asyncio.create_task(take(source, 1, deadline_s=60))
            await send_for(pty, BAD_LINE[protocol], 2 * AFTER_S)  # garbage again on the same link
            await until(lambda: source.stats.bad_frames >= 35)
            reader.cancel()

    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        asyncio.run(main())
    first, again = warnings(caplog)
    pattern = (
        rf"bed-7: (\d+) bytes over \d+ s from {re.escape(str(pty.link))} \(serial\.port\) and nothing "
        rf"decodes as serial\.protocol '{protocol}'( any more \(it did before on this connection\))? "
        rf"\((\d+) bad lines\): check serial\.baudrate \(115200\), serial\.protocol and serial\.channels "
        rf"\(2 {UNIT[protocol]} a line: hr, spo2\) against what the device sends; bad input is counted as "
        r"bad frames, not logged"
    )
    match = re.fullmatch(pattern, first)
    assert match is not None and match[2] is None, first
    assert 200 < int(match[1]) < 4096 and int(match[3]) >= 9  # the random line and the bad ones so far
    match = re.fullmatch(pattern, again)
    assert match is not None and match[2] is not None, again
    assert int(match[1]) < 1000 and int(match[3]) >= 9  # counted from the last good line
    assert_no_device_bytes_logged(caplog)


@pytest.mark.parametrize("protocol", ["csv", "jsonl"])
def test_a_wrong_baud_rate_without_line_ends_is_told(
    protocol: str, pty: PtyDevice, caplog: pytest.LogCaptureFixture
) -> None:
    """A slow line device read at another baud rate: a few framing-error bytes a second, no newline."""
    pty.plug()

    async def main() -> None:
        source = source_for(pty, protocol)
        async with source:
            reader = asyncio.create_task(take(source, 1, deadline_s=60))
            await until(lambda: source.stats.connected)
            await send_for(pty, b"\x00\xf8\xff" + SECRET[:2], 1.5 * AFTER_S)
            reader.cancel()
            assert source.stats.readings == 0

    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        asyncio.run(main())
    (warning,) = warnings(caplog)
    assert f"nothing decodes as serial.protocol '{protocol}' (0 bad lines, " in warning
    assert re.search(r"\(0 bad lines, \d+ bytes without a line end\): check serial\.baudrate", warning)
    assert_no_device_bytes_logged(caplog)


@pytest.mark.parametrize("protocol", ["csv", "jsonl"])
def test_a_device_that_decodes_gets_no_warning(
    protocol: str, pty: PtyDevice, caplog: pytest.LogCaptureFixture
) -> None:
    """A stray byte at plug-in, a device that starts late with blank lines (and a CSV header), then
    good lines with the odd bad one: nothing to tell."""
    pty.plug()
    header = b"hr,spo2\n" if protocol == "csv" else b""

    async def main() -> None:
        source = source_for(pty, protocol)
        async with source:
            reader = asyncio.create_task(take(source, 20, deadline_s=60))
            await until(lambda: source.stats.connected)
            pty.write(b"\xff")  # plugged in mid-line
            await asyncio.sleep(1.2 * AFTER_S)
            pty.write(header)
            await send_for(pty, b"\r\n", 1.5 * AFTER_S)  # warming up: blank lines only
            for i in range(20):
                pty.write((BAD_LINE[protocol] if i % 5 == 2 else b"") + GOOD[protocol])
                await asyncio.sleep(0.1)
            assert len(await reader) == 20
            assert source.stats.bad_frames == 5  # the first line, glued to the stray byte, and 4 more

    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        asyncio.run(main())
    assert warnings(caplog) == []
    assert_no_device_bytes_logged(caplog)


def test_each_connection_may_be_told_once(pty: PtyDevice, caplog: pytest.LogCaptureFixture) -> None:
    pty.plug()

    async def main() -> None:
        source = source_for(pty, "csv")
        async with source:
            reader = asyncio.create_task(take(source, 1, deadline_s=60))
            await until(lambda: source.stats.connected)
            await send_for(pty, BAD_LINE["csv"], 1.5 * AFTER_S)
            assert len(warnings(caplog)) == 1
            pty.unplug()  # replugged: perhaps with the baud rate fixed, perhaps not
            pty.plug()
            await until(lambda: source.stats.reconnects == 1)
            await send_for(pty, BAD_LINE["csv"], 1.5 * AFTER_S)
            reader.cancel()

    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        asyncio.run(main())
    assert len(warnings(caplog)) == 3  # the first link's, the "link lost", the second link's
    assert sum("nothing decodes" in w for w in warnings(caplog)) == 2


@dataclass
class Counts:
    bytes_in: int = 0
    frames: int = 0
    rejected: int = 0


def test_the_rule_with_a_fake_clock(caplog: pytest.LogCaptureFixture) -> None:
    rule = UndecodableInput(SerialConfig(port="/dev/ttyX", protocol="frames"), after_bytes=4096, after_s=10)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert not rule.check("dev", Counts(1, 0, 0), 1, 0.0)  # a stray byte
        assert not rule.check("dev", Counts(40, 0, 1), 0, 12.0)  # after a pause: the count starts again
        assert not rule.check("dev", Counts(400, 0, 5), 0, 21.0)
        assert rule.check("dev", Counts(440, 0, 6), 0, 22.0)  # bytes kept coming for 10 s
        assert not rule.check("dev", Counts(900, 0, 12), 0, 40.0)  # once per connection
        rule.link_opened()
        assert rule.check("dev", Counts(5000, 0, 3), 0, 41.0)  # 4096 bytes tell at once
        rule.link_opened()
        assert not rule.check("dev", Counts(5000, 1, 3), 0, 60.0)  # one frame decoded: nothing to tell
        assert not rule.check("dev", Counts(5100, 1, 9), 0, 65.0)  # bad ones after it: not yet 10 s
        assert not rule.check("dev", Counts(5200, 2, 9), 0, 69.0)  # decodes again: counted from here
        rule.link_opened()
        assert not rule.check("dev", Counts(10, 0, 1), 0, 70.0)  # a line cut at plug-in, then blank ones
        assert not rule.check("dev", Counts(9000, 0, 1), 0, 80.0)
        assert rule.check("dev", Counts(9010, 0, 1), 3, 81.0)  # bytes without a line end
    first, second, third = warnings(caplog)
    assert first == (
        "dev: 440 bytes over 22 s from /dev/ttyX (serial.port) and nothing decodes as serial.protocol "
        "'frames' (6 rejected): check serial.baudrate (115200) and serial.protocol against what the "
        "device sends; bad input is counted as bad frames, not logged"
    )
    assert second.startswith("dev: 5000 bytes from /dev/ttyX (serial.port)") and rule.told == 3
    assert "(1 rejected): check" in third
