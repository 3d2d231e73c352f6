"""Frames with a correct CRC but absurd contents (a firmware bug, not line noise) must be counted and
survived by the serial source, never raised out of it: the daemon tears a raising source down and reopens
it after 1 to 60 s, so the link is down meanwhile, the rest of that read is dropped, the bad block itself
is never counted, and the device's next such block does it again."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from src_pty import PtyDevice, serial_device, take

from agent.sources.backoff import BackoffPolicy
from agent.sources.serial import SerialSource
from agent.sources.serial_frames import FrameReadings
from firmware_bridge import Frame, encode_frame
from firmware_bridge.frame_messages import ChannelSpec, DataBlock, Hello, SampleType

FAST = BackoffPolicy(initial_s=0.05, max_s=0.5)


def hello(rate_hz: float) -> Hello:
    return Hello("emu-1", (1, 0, 0), (ChannelSpec("ecg", "mV", SampleType.INT16, rate_hz, 0.001),))


def block(n: int, t_us: int = 0) -> DataBlock:
    return DataBlock(t_us, SampleType.INT16, (0,), np.arange(n).reshape(n, 1))


@pytest.mark.parametrize("rate", [0.0, -250.0, math.nan, math.inf, -math.inf, 1e9, 1e-9])
def test_a_hello_without_a_usable_rate_is_refused_and_data_waits(rate: float) -> None:
    """Blocks of several samples raised ValueError (period_s 0) before 2026-11-30 (first review); then
    such a HELLO was taken, and a NaN or 1e9 Hz rate named a waveform stream "ecg"/"hr" instead of the
    kind's, silently (review of 2026-11-30, finding 3): now the HELLO is refused and the data waits."""
    readings = FrameReadings("dev", "vitals", lambda: 1.8e9)
    assert readings.take(Frame(0, 0, hello(rate)), 1.0) is None
    assert readings.hello is None and readings.bad_hellos == 1
    assert readings.take(Frame(1, 0, block(25)), 1.0) is None
    assert readings.take(Frame(2, 0, block(1)), 1.0) is None
    assert readings.waiting_hello == 2 and readings.bad_blocks == 0
    assert readings.take(Frame(3, 0, hello(250.0)), 1.0) is None  # a usable one: the data flows
    reading = readings.take(Frame(4, 0, block(25)), 1.0)
    assert reading is not None and reading.stream == "dev/ecg" and reading.n_samples == 25


def test_a_block_of_a_channel_with_an_infinite_scale_is_a_bad_block() -> None:
    readings = FrameReadings("dev", "vitals", lambda: 1.8e9)
    spec = ChannelSpec("hr", "bpm", SampleType.INT16, 1.0, math.inf)
    readings.take(Frame(0, 0, Hello("emu-1", (1, 0, 0), (spec,))), 1.0)
    assert readings.take(Frame(1, 0, block(1)), 1.0) is None  # was a reading of 0 × inf = NaN
    assert readings.bad_blocks == 1


floats32 = st.floats(width=32)  # NaN and infinities included: HELLO's fields are raw float32
names = st.sampled_from(["hr", "spo2", "ecg", "acc_x", "acc_y", "", "a/b"])
specs = st.builds(ChannelSpec, names, st.just("u"), st.sampled_from(SampleType), floats32, floats32, floats32)
hellos = st.builds(Hello, st.just("emu-1"), st.just((1, 0, 0)), st.lists(specs, max_size=4).map(tuple))


@st.composite
def blocks(draw: st.DrawFn) -> DataBlock:
    stype = draw(st.sampled_from(SampleType))
    channels = tuple(draw(st.lists(st.integers(0, 5), min_size=1, max_size=3, unique=True)))
    n = draw(st.integers(0, 30))
    info = np.iinfo(stype.dtype)
    raw = draw(
        st.lists(
            st.integers(int(info.min), int(info.max)), min_size=n * len(channels), max_size=n * len(channels)
        )
    )
    samples = np.array(raw, dtype=np.int64).reshape(n, len(channels))
    return DataBlock(draw(st.integers(0, 2**64 - 1)), stype, channels, samples)


@given(hellos, st.lists(st.tuples(blocks(), st.integers(0, 2**64 - 1), st.integers(0, 3)), max_size=6))
@settings(max_examples=300, deadline=None)
def test_any_hello_and_data_give_finite_evenly_spaced_readings_or_bad_blocks(
    hello: Hello, frames: list[tuple[DataBlock, int, int]]
) -> None:
    readings = FrameReadings("dev", "vitals", lambda: 1.8e9)
    assert readings.take(Frame(0, 0, hello), 1.0) is None
    for seq, (data, device_us, gap) in enumerate(frames, start=1):
        reading = readings.take(Frame(seq, device_us, data, gap), 1.0)  # must not raise
        if reading is not None:
            assert np.isfinite(reading.values).all()
            assert reading.n_samples <= 1 or 0.0 < reading.period_s < math.inf


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[PtyDevice]:
    dev = PtyDevice(tmp_path / "usb-Acme_Monitor_0001-if00-port0")
    yield dev
    dev.unplug()


def test_the_source_survives_a_hello_with_a_nan_rate(pty: PtyDevice) -> None:
    pty.plug()

    async def main() -> None:
        source = SerialSource(serial_device(pty.link), backoff=FAST)
        async with source:
            pending = asyncio.ensure_future(take(source, 1))
            async with asyncio.timeout(10):
                while not source.stats.connected:
                    await asyncio.sleep(0.01)
            wire = encode_frame(hello(math.nan), 0, 0) + encode_frame(block(25), 1, 0)
            wire += encode_frame(hello(250.0), 2, 0) + encode_frame(block(25, 100_000), 3, 100_000)
            pty.write(wire)
            (reading,) = await pending
            assert reading.n_samples == 25 and reading.period_s == pytest.approx(1 / 250)
            stats = source.stats
            assert stats.bad_frames == 1 and stats.reconnects == 0 and stats.connected

    asyncio.run(main())
