"""A DATA block whose sample times do not fit its frame's time is refused and never moves the clock.

One CRC-valid block whose first sample was X s after its own header time pulled the device's clock
anchor back by X: every later block of the device was stamped X s in the past (an hour: a tachycardia
went unraised, the previous episode's cooldown lying in the stream's "future"), and with X = 1e13 s the
heartbeat's `last_seen` (year -314861) stopped the daemon (review of 2026-11-30, finding 1). Real
pseudo-terminals and the real `SerialSource`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from src_pty import PtyDevice, serial_device, take

from agent.events import iso_time
from agent.logs import redact_identifiers
from agent.sources.serial import SerialSource
from agent.sources.serial_frames import FrameReadings
from firmware_bridge import Frame, encode_frame
from firmware_bridge.frame_messages import ChannelSpec, DataBlock, Hello, SampleType

HELLO = Hello("emu-1", (1, 0, 0), (ChannelSpec("hr", "bpm", SampleType.INT16, 1.0, 1.0),))
U64_MAX = 2**64 - 1


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[PtyDevice]:
    redact_identifiers({"bed-7": "d-bed7pseudonym"})  # as the daemon does at start (conftest undoes it)
    dev = PtyDevice(tmp_path / "usb-Acme_Monitor_0001-if00-port0")
    dev.plug()
    yield dev
    dev.unplug()


class Device:
    """Writes frames stamped with its own µs clock, which started with it; keeps when each block went."""

    def __init__(self, pty: PtyDevice) -> None:
        self.pty = pty
        self.start = time.monotonic()
        self.seq = 0
        self.sent_at: list[float] = []  # gateway wall time of each good block

    def now_us(self) -> int:
        return round((time.monotonic() - self.start) * 1e6)

    def frame(self, message: Hello | DataBlock, time_us: int) -> None:
        self.pty.write(encode_frame(message, self.seq, time_us))
        self.seq += 1

    def block(self, hr: int = 70) -> None:
        now = self.now_us()
        self.sent_at.append(time.time())
        self.frame(DataBlock(now, SampleType.INT16, (0,), np.array([[hr]])), now)


# (first-sample time, header time) of the odd block, from the device's clock now
ODD = {
    "samples 1 h after the header": lambda now: (now + 3_600_000_000, now),
    "samples 1e13 s after the header": lambda now: (now + 10**19, now),
    "samples at the end of time": lambda now: (U64_MAX, now),
    "header at the end of time, samples at boot": lambda now: (0, U64_MAX),
}


@pytest.mark.parametrize("odd", ODD.values(), ids=ODD.keys())
def test_a_block_whose_times_disagree_is_refused_and_later_blocks_keep_their_time(
    pty: PtyDevice, odd: object, caplog: pytest.LogCaptureFixture
) -> None:
    device = Device(pty)

    async def main() -> tuple[list[float], dict[str, int], int]:
        async with SerialSource(serial_device(pty.link)) as source:
            first = asyncio.ensure_future(take(source, 3))
            async with asyncio.timeout(10):
                while not source.stats.connected:
                    await asyncio.sleep(0.01)
            device.frame(HELLO, device.now_us())
            for _ in range(3):
                device.block()
                await asyncio.sleep(0.2)
            readings = await first
            first_us, header_us = odd(device.now_us())  # type: ignore[operator]
            device.frame(DataBlock(first_us, SampleType.INT16, (0,), np.array([[70]])), header_us)
            await asyncio.sleep(0.2)
            for _ in range(3):
                device.block(150)
                await asyncio.sleep(0.2)
            readings += await take(source, 3)
            stats = source.stats
            return [r.wall_time for r in readings], dict(stats.errors), stats.bad_frames

    with caplog.at_level(logging.WARNING, logger="agent.sources.serial"):
        times, errors, bad_frames = asyncio.run(main())
    # every delivered block at the time it was sent: the odd one moved nothing
    np.testing.assert_allclose(times, device.sent_at, atol=0.3)
    assert errors["bad_block_times"] == 1 and bad_frames == 1
    told = [r.getMessage() for r in caplog.records if "bad_block_times" in r.getMessage()]
    assert len(told) == 1 and told[0].startswith("d-bed7pseudonym:") and "bed-7" not in told[0]
    assert all(iso_time(t) for t in times)


def test_such_blocks_are_told_at_most_every_ten_minutes(
    pty: PtyDevice, caplog: pytest.LogCaptureFixture
) -> None:
    device = Device(pty)

    async def main() -> dict[str, int]:
        async with SerialSource(serial_device(pty.link)) as source:
            pending = asyncio.ensure_future(take(source, 2))
            async with asyncio.timeout(10):
                while not source.stats.connected:
                    await asyncio.sleep(0.01)
            device.frame(HELLO, device.now_us())
            device.block()
            for _ in range(5):
                now = device.now_us()
                device.frame(DataBlock(now + 60_000_000, SampleType.INT16, (0,), np.array([[70]])), now)
            device.block()
            await pending
            return dict(source.stats.errors)

    with caplog.at_level(logging.WARNING, logger="agent.sources.serial"):
        errors = asyncio.run(main())
    assert errors["bad_block_times"] == 5
    assert sum("bad_block_times" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("unix_s", [-1e13, 1e13, -(2**64) / 1e6, float("nan"), float("inf"), -float("inf")])
def test_a_wall_time_out_of_range_is_written_not_raised(unix_s: float) -> None:
    """The heartbeat's `last_seen` and every payload time go through `iso_time`: it must never raise."""
    text = iso_time(unix_s)
    assert text.endswith("Z") and len(text) == len("2026-11-30T19:51:25.000Z")


class Gateway:
    """The gateway's clocks for sans-I/O frames: monotonic, and wall = monotonic + an offset."""

    def __init__(self) -> None:
        self.mono = 100.0
        self.offset = 1.8e9

    def wall(self) -> float:
        return self.mono + self.offset


def five_second_blocks(header_at_first: bool) -> tuple[list[float], int]:
    """Wall times (relative to the device's boot, in gateway time) of 5-sample blocks of a 1 Hz HELLO,
    each sent when its last sample is taken, its header stamped then or at its first sample; and the
    refused count."""
    gateway = Gateway()
    boot = gateway.wall()
    frames = FrameReadings("bed-7", "vitals", gateway.wall)
    frames.take(Frame(0, 0, HELLO), gateway.mono)
    walls = []
    for k in range(12):
        first_us = k * 5_000_000
        sent_us = first_us + 4_000_000
        gateway.mono = 100.0 + sent_us / 1e6 + 0.005  # read 5 ms after the send
        block = DataBlock(first_us, SampleType.INT16, (0,), np.full((5, 1), 150))
        reading = frames.take(Frame(k + 1, first_us if header_at_first else sent_us, block), gateway.mono)
        if reading is not None:
            walls.append(reading.wall_time - boot)
    return walls, frames.bad_times


def test_blocks_whose_later_samples_pass_the_header_are_taken_as_before(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Firmware stamping a multi-second block's header at its first sample (review of the fixes: device
    `hs`) lost every block when the rule looked at the last sample; it is stamped as the same blocks with
    their header stamped at the send, at their real times."""
    with caplog.at_level(logging.WARNING, logger="agent.sources.serial"):
        at_first, refused = five_second_blocks(True)
        at_send, refused_ctl = five_second_blocks(False)
    assert refused == refused_ctl == 0 and not caplog.records
    assert len(at_first) == len(at_send) == 12
    np.testing.assert_allclose(at_first, at_send, atol=1e-9)
    np.testing.assert_allclose(at_first, [k * 5.0 for k in range(12)], atol=0.01)


def test_a_hello_rate_below_the_real_one_still_delivers() -> None:
    """HELLO 1 Hz, 5 samples taken in each second (review of the fixes: device `mis`): the declared span
    (4 s) ends past the header; the blocks are delivered (the pace warning tells the rate)."""
    gateway = Gateway()
    frames = FrameReadings("bed-7", "vitals", gateway.wall)
    frames.take(Frame(0, 0, HELLO), gateway.mono)
    delivered = 0
    for k in range(5):
        sent_us = (k + 1) * 1_000_000
        gateway.mono = 100.0 + sent_us / 1e6
        block = DataBlock(sent_us - 800_000, SampleType.INT16, (0,), np.full((5, 1), 150))
        delivered += frames.take(Frame(k + 1, sent_us, block), gateway.mono) is not None
    assert delivered == 5 and frames.bad_times == 0


@pytest.mark.parametrize(
    ("ahead_us", "refused", "told"),
    [
        (1_000_000, False, ""),
        (1_000_001, True, "its first sample 1.000001 s after its frame's header time (at most 1 s"),
        (-30 * 86_400_000_000, False, ""),
        (-30 * 86_400_000_000 - 1, True, "its first sample 2592000.000001 s before its frame's header time"),
    ],
)
def test_the_limits_and_the_warning_say_by_how_much(
    ahead_us: int, refused: bool, told: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The first sample may be 1 s after the header, and 30 days before it, not 1 µs more; the warning
    shows the overshoot to the µs (it said "1 s after" for 1.000001 s)."""
    gateway = Gateway()
    frames = FrameReadings("bed-7", "vitals", gateway.wall)
    header_us = 40 * 86_400_000_000
    frames.take(Frame(0, header_us, HELLO), gateway.mono)
    block = DataBlock(header_us + ahead_us, SampleType.INT16, (0,), np.array([[70]]))
    with caplog.at_level(logging.WARNING, logger="agent.sources.serial"):
        reading = frames.take(Frame(1, header_us, block), gateway.mono)
    assert (reading is None) == refused and frames.bad_times == int(refused)
    messages = [r.getMessage() for r in caplog.records]
    assert (told in messages[0]) if told else not messages
