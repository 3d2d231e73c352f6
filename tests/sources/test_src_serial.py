"""Serial source over real pseudo-terminals with the firmware_bridge emulator on the master side."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from src_pty import CHANNELS, PtyDevice, serial_device, take, take_until

from agent.readings import Quality
from agent.sources import open_source
from agent.sources.backoff import BackoffPolicy
from agent.sources.serial import SerialSource
from firmware_bridge import encode_frame
from firmware_bridge.emulator import FaultPlan
from firmware_bridge.frame_messages import DataBlock, Event, EventKind, Hello, SampleType

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


def test_stream_flows_with_streams_named_from_hello(pty: PtyDevice) -> None:
    pty.plug()
    pty.start()

    async def main() -> None:
        async with open_source(serial_device(pty.link)) as source:
            assert isinstance(source, SerialSource)
            readings = await take(source, 40)
            assert source.stats.connected and source.stats.readings == 40

        by_stream = {r.stream: r for r in readings}
        assert set(by_stream) == {"bed-7/ecg", "bed-7/vitals"}
        vitals = by_stream["bed-7/vitals"]
        assert vitals.channels == ("hr", "spo2")
        np.testing.assert_allclose(vitals.values, [[72.0, 97.5]], atol=0.05)
        ecg = [r for r in readings if r.stream == "bed-7/ecg"]
        assert all(r.channels == ("ecg",) and r.period_s == pytest.approx(1 / 250) for r in ecg)
        assert all(r.n_samples == 25 for r in ecg)  # the emulator's 0.1 s blocks
        # the ramp is continuous across blocks: no sample lost or repeated
        joined = np.concatenate([r.values[:, 0] for r in ecg])
        np.testing.assert_allclose(np.diff(joined), 0.01 / 250, atol=0.0011)
        assert all(r.quality == Quality.OK for r in readings)
        assert abs(ecg[-1].wall_time - time.time()) < 5.0

    asyncio.run(main())


def test_unplug_and_replug_resumes_within_5_s_with_a_gap(pty: PtyDevice) -> None:
    pty.plug()
    pty.start()

    async def main() -> None:
        source = SerialSource(serial_device(pty.link), backoff=FAST)
        async with source:
            before = await take(source, 10)
            assert source.stats.reconnects == 0
            pty.unplug()  # the emulator's end goes away: EIO on our side
            replugged = time.monotonic()
            pty.plug()  # a new pty, the stable link now points at its slave
            pty.start()
            # whatever was read before the unplug may still come out first; then the new link's
            # data, whose first block of each stream carries GAP
            await take_until(source, lambda r: bool(r.quality & Quality.GAP), 5.0)
            assert time.monotonic() - replugged < 5.0
            more = await take(source, 5)  # and it keeps flowing
            stats = source.stats
        assert before and all(r.device == "bed-7" for r in more)
        assert stats.reconnects == 1 and stats.gaps == 1 and stats.errors["link_failures"] == 1
        assert stats.connected

    asyncio.run(main())


def test_port_appears_later_and_is_exclusive(pty: PtyDevice) -> None:
    async def main() -> None:
        source = SerialSource(serial_device(pty.link), backoff=FAST)
        async with source:
            first = asyncio.ensure_future(anext(source))
            await asyncio.sleep(0.5)
            assert not first.done() and not source.stats.connected
            assert source.stats.errors["open_failures"] >= 2  # kept trying, never raised
            pty.plug()
            pty.start()
            async with asyncio.timeout(10):
                reading = await first
            assert reading.device == "bed-7"
            # a second agent on the same port cannot open it while we hold it
            rival = SerialSource(serial_device(pty.link), backoff=FAST)
            async with rival:
                late = asyncio.ensure_future(anext(rival))
                await asyncio.sleep(0.5)
                assert not late.done() and rival.stats.errors["open_failures"] >= 1
                late.cancel()

    asyncio.run(main())


def test_garbage_and_damaged_frames_are_counted_and_skipped(pty: PtyDevice) -> None:
    pty.plug()
    plan = FaultPlan(drop_every=13, corrupt_every=5, truncate_every=11, garbage_every=7, garbage_size=16)

    async def main() -> None:
        source = SerialSource(serial_device(pty.link), backoff=FAST)
        async with source:
            first = asyncio.ensure_future(anext(source))
            await connected(source)  # pyserial flushes stale input on open: start the device after
            # 300 blocks, not a multiple of 11: the last frame is never a dangling truncated one
            emu = pty.start(speed=0, faults=plan, max_blocks=300)

            def expected() -> int:
                c = emu.counters
                return c.data_frames - c.dropped - c.corrupted - c.truncated

            await first
            count = 1
            async with asyncio.timeout(20):
                while pty.running or count < expected():
                    try:  # short waits: the emulator may end just after its last block was read
                        await asyncio.wait_for(anext(source), 0.5)
                    except TimeoutError:
                        continue
                    count += 1
            c = emu.counters
            assert c.data_frames == 300 and c.corrupted and c.truncated and c.garbage_bytes
            assert count == expected()
            # every damaged frame is one rejected chunk; a garbage burst right after a truncated
            # frame merges with it (no delimiter between them), so bursts count at most once each
            damaged = c.corrupted + c.truncated
            assert damaged <= source.stats.bad_frames <= damaged + c.garbage_bytes // 16
            assert source.stats.gaps >= 1  # the dropped frames are sequence gaps

    asyncio.run(main())


def test_sequence_gap_fault_event_and_late_hello(pty: PtyDevice) -> None:
    pty.plug()
    rng = np.random.default_rng(1)

    def block(t_us: int) -> bytes:
        samples = rng.integers(700, 730, size=(1, 2))
        return DataBlock(t_us, SampleType.INT16, (1, 2), samples)  # type: ignore[return-value]

    seq = 0

    def send(*frames: tuple[object, int]) -> None:
        """The frames in one write, so that they are read together."""
        nonlocal seq
        wire = b""
        for message, t_us in frames:
            wire += encode_frame(message, seq, t_us)  # type: ignore[arg-type]
            seq += 1
        pty.write(wire)

    async def main() -> None:
        nonlocal seq
        source = SerialSource(serial_device(pty.link), backoff=FAST)
        async with source:
            pending = asyncio.ensure_future(take(source, 1))
            await connected(source)
            send((block(0), 0))  # DATA before any HELLO: dropped, and the source asks for one
            await asyncio.sleep(0.3)
            send((HELLO, 0), (block(1_000_000), 1_000_000))
            (ok,) = await pending
            assert ok.quality == Quality.OK and source.stats.errors["waiting_hello"] == 1
            seq += 3  # three frames lost on the wire
            send((block(5_000_000), 5_000_000), (block(6_000_000), 6_000_000))
            gap, after_gap = await take(source, 2)
            assert gap.quality == Quality.GAP and after_gap.quality == Quality.OK
            send(
                (Event(EventKind.FAULT, 17, 0), 6_500_000),
                (block(7_000_000), 7_000_000),
                (block(30_000_000), 30_000_000),  # beyond the fault hold
            )
            faulty, recovered = await take(source, 2)
            assert faulty.quality == Quality.DEVICE_FAULT and recovered.quality == Quality.OK
            # blocks read together keep the device's spacing, the newest ending by the read: the device
            # says the 7 s block is 23 s older than the 30 s one, so it is (agent.sources.serial_clock)
            assert after_gap.wall_time - gap.wall_time == pytest.approx(1.0, abs=1e-6)
            assert recovered.wall_time - faulty.wall_time == pytest.approx(23.0, abs=1e-6)
            assert recovered.wall_time <= time.time()
            assert source.stats.gaps == 1 and source.stats.errors["device_faults"] == 1

    asyncio.run(main())


def test_csv_lines(pty: PtyDevice) -> None:
    pty.plug()

    async def main() -> None:
        device = serial_device(pty.link, kind="equipment", protocol="csv", channels=("vibration_rms", "temp"))
        async with SerialSource(device, backoff=FAST) as source:
            pending = asyncio.ensure_future(take(source, 2))
            await connected(source)
            pty.write(b"vibration_rms,temp\n1.5,40.25\nnot,numbers\n2.5,\n")
            first, second = await pending
            assert first.stream == "bed-7/machine" and first.channels == ("vibration_rms", "temp")
            np.testing.assert_array_equal(first.values, [[1.5, 40.25]])
            assert second.values[0, 0] == 2.5 and np.isnan(second.values[0, 1])
            assert source.stats.bad_frames == 1

    asyncio.run(main())


def test_fuzz_random_and_mutated_bytes_never_raise(pty: PtyDevice) -> None:
    """1 MB of random bytes and bit-flipped frames, then a good frame that must still come through."""
    pty.plug()
    rng = random.Random(42)
    good = [encode_frame(HELLO, i, 0) for i in range(5)]
    good += [
        encode_frame(DataBlock(i * 10**6, SampleType.INT16, (1,), np.array([[720]])), i, 0) for i in range(50)
    ]
    chunks: list[bytes] = []
    size = 0
    while size < 1_000_000:
        if rng.random() < 0.5:
            chunk = rng.randbytes(rng.randrange(1, 2048))
        else:
            frame = bytearray(rng.choice(good))
            for _ in range(rng.randrange(1, 4)):
                frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
            chunk = bytes(frame[: rng.randrange(1, len(frame) + 1)])
        chunks.append(chunk)
        size += len(chunk)
    tail = encode_frame(HELLO, 0, 0) + encode_frame(
        DataBlock(0, SampleType.INT16, (1, 2), np.array([[123, 456]])), 1, 10**6
    )

    def writer() -> None:
        for chunk in chunks:
            pty.write(chunk)
        pty.write(tail)

    async def main() -> None:
        source = SerialSource(serial_device(pty.link), backoff=FAST)
        async with source:
            pending = asyncio.ensure_future(
                take_until(
                    source, lambda r: r.channels == ("hr", "spo2") and abs(r.values[0, 0] - 12.3) < 1e-3, 30
                )
            )
            await connected(source)
            thread = threading.Thread(target=writer, daemon=True)
            thread.start()
            seen = await pending
            thread.join(timeout=10)
            assert seen[-1].values[0, 1] == pytest.approx(45.6)
            assert source.stats.bad_frames > 100
            assert source.stats.bytes_in == size + len(tail)
            assert source.stats.connected and source.stats.reconnects == 0

    asyncio.run(main())
