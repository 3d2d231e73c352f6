"""The device emulator on a real pseudo-terminal: HELLO + DATA read back with plain os.read."""

from __future__ import annotations

import os
import select
import threading
import time
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt
import pytest

from firmware_bridge.decoding import NEED_DATA
from firmware_bridge.emulator import EmulatedChannel, FaultPlan, SerialDeviceEmulator
from firmware_bridge.frame_codec import Frame, FrameDecoder, encode_frame
from firmware_bridge.frame_messages import (
    Ack,
    AckStatus,
    ChannelSpec,
    Command,
    CommandCode,
    DataBlock,
    Hello,
    SampleType,
)
from firmware_bridge.physical import sample_times_us, to_physical

READ_DEADLINE_S = 20.0  # generous: the machine is shared and noisy


def sine(freq: float, amp: float) -> Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]:
    return lambda t: amp * np.sin(2 * np.pi * freq * t)


CHANNELS = [
    EmulatedChannel(ChannelSpec("ecg", "mV", SampleType.INT16, 500.0, 0.001), sine(1.2, 1.5)),
    EmulatedChannel(ChannelSpec("acc_x", "g", SampleType.INT16, 100.0, 0.01), sine(2.0, 3.0)),
    EmulatedChannel(ChannelSpec("acc_y", "g", SampleType.INT16, 100.0, 0.01), sine(0.5, 1.0)),
    EmulatedChannel(ChannelSpec("temp", "°C", SampleType.INT32, 10.0, 0.001, 30.0), lambda t: 36.6 + 0 * t),
]


@contextmanager
def pty_pair() -> Iterator[tuple[int, int]]:
    master, slave = os.openpty()
    tty.setraw(slave)  # no line discipline: bytes pass unchanged, as with a real serial port
    try:
        yield master, slave
    finally:
        os.close(master)
        os.close(slave)


def read_frames(fd: int, dec: FrameDecoder, done: Callable[[list[Frame]], bool]) -> list[Frame]:
    frames: list[Frame] = []
    deadline = time.monotonic() + READ_DEADLINE_S
    while not done(frames):
        assert time.monotonic() < deadline, f"only {len(frames)} frames after {READ_DEADLINE_S} s"
        if select.select([fd], [], [], 0.2)[0]:
            dec.feed(os.read(fd, 4096))
            while (f := dec.next_frame()) is not NEED_DATA:
                frames.append(f)
    return frames


@contextmanager
def running(emu: SerialDeviceEmulator, **kwargs: object) -> Iterator[threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=emu.run, args=(stop,), kwargs=kwargs, daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive()


def test_emulator_streams_hello_and_exact_data_over_a_pty() -> None:
    with pty_pair() as (master, slave):
        emu = SerialDeviceEmulator(master, "wearable-3", CHANNELS, block_seconds=0.1, speed=4.0)
        dec = FrameDecoder()
        with running(emu, max_blocks=24):
            frames = read_frames(slave, dec, lambda fs: len(fs) >= 25)
    hello = frames[0].message
    assert isinstance(hello, Hello) and hello == emu.hello
    blocks = [f.message for f in frames[1:]]
    assert all(isinstance(b, DataBlock) for b in blocks)
    assert dec.stats.rejected == 0 and dec.stats.lost_frames == 0
    assert [f.seq for f in frames] == list(range(25))
    next_first: dict[tuple[int, ...], float] = {}
    for block in blocks:
        assert isinstance(block, DataBlock)
        times = sample_times_us(block, hello)
        # consecutive blocks of one channel group continue the sample clock without holes
        assert times[0] == pytest.approx(next_first.get(block.channels, times[0]), abs=1.0)
        step = 1e6 / hello.channels[block.channels[0]].rate_hz
        next_first[block.channels] = times[-1] + step
        expected = np.stack([CHANNELS[i].generator(times / 1e6) for i in block.channels], axis=1)
        scales = np.array([hello.channels[i].scale for i in block.channels])
        np.testing.assert_allclose(to_physical(block, hello), expected, atol=float(scales.max()) * 0.51)
    assert set(next_first) == {(0,), (1, 2), (3,)}


def test_injected_faults_are_counted_and_lost_frames_reported_as_gaps() -> None:
    plan = FaultPlan(drop_every=5, corrupt_every=7, truncate_every=11, garbage_every=3, seed=7)
    with pty_pair() as (master, slave):
        emu = SerialDeviceEmulator(master, "noisy-1", CHANNELS[:2], block_seconds=0.05, faults=plan, speed=0)
        dec = FrameDecoder()
        # the plan's precedence: drop, then corrupt, then truncate (garbage is independent)
        ks = range(1, 62)
        dropped = [k for k in ks if k % 5 == 0]
        corrupted = [k for k in ks if k % 7 == 0 and k not in dropped]
        truncated = [k for k in ks if k % 11 == 0 and k not in dropped and k not in corrupted]
        with running(emu, max_blocks=61):
            expected = 1 + 61 - len(dropped) - len(corrupted) - len(truncated)
            frames = read_frames(slave, dec, lambda fs: len(fs) >= expected)
    c = emu.counters
    assert (c.data_frames, c.dropped, c.corrupted, c.truncated) == (61, 12, 7, 4)
    assert (c.dropped, c.corrupted, c.truncated) == (len(dropped), len(corrupted), len(truncated))
    assert len(frames) == 1 + 61 - c.dropped - c.corrupted - c.truncated
    assert dec.stats.lost_frames == c.dropped + c.corrupted + c.truncated
    assert sum(f.gap_before for f in frames) == dec.stats.lost_frames
    assert dec.stats.rejected >= c.corrupted + c.truncated
    assert dec.stats.garbage_bytes >= c.garbage_bytes
    s = dec.stats
    assert s.bytes_in == s.frame_bytes + s.garbage_bytes + s.delimiters + dec.buffered


def test_emulator_answers_commands_with_hello_and_ack() -> None:
    with pty_pair() as (master, slave):
        emu = SerialDeviceEmulator(master, "pump-2", CHANNELS[3:], block_seconds=0.1, speed=10.0)
        dec = FrameDecoder()
        with running(emu, answer_commands=True):
            read_frames(slave, dec, lambda fs: len(fs) >= 2)  # HELLO and a first DATA block
            os.write(slave, encode_frame(Command(CommandCode.SEND_HELLO), 41, 0))
            os.write(slave, encode_frame(Command(CommandCode.SET_RATE_MHZ, 5000), 42, 0))
            frames = read_frames(
                slave,
                dec,
                lambda fs: any(isinstance(f.message, Ack) and f.message.command_seq == 42 for f in fs),
            )
    acks = [f.message for f in frames if isinstance(f.message, Ack)]
    assert acks == [Ack(41, AckStatus.OK), Ack(42, AckStatus.UNSUPPORTED)]
    assert any(isinstance(f.message, Hello) for f in frames)
    assert emu.counters.commands == 2
