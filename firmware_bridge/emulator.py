"""A serial device that speaks the frame protocol over a file descriptor (a pty master in tests/demos).

It sends HELLO, then DATA blocks for its channels, paced in real time (or as fast as the reader
takes them with `speed=0`). Channels sharing a rate and sample type travel in one interleaved block;
a generator callable maps sample times (s) to physical values, which are scaled back to raw
integers with the channel's scale/offset, exactly as firmware would. Fault hooks drop, corrupt,
truncate or precede frames with garbage on a fixed schedule, and count what they did, so tests
can compare the decoder's counters with the truth. The emulator answers COMMAND frames
(SEND_HELLO, START, STOP) read from the same descriptor with ACKs.

Only os.read / os.write / select on the descriptor: no pyserial, no asyncio.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from firmware_bridge.decoding import NEED_DATA
from firmware_bridge.frame_codec import FrameDecoder, encode_frame
from firmware_bridge.frame_messages import (
    MAX_PAYLOAD_SIZE,
    Ack,
    AckStatus,
    ChannelSpec,
    Command,
    CommandCode,
    DataBlock,
    Event,
    Hello,
    Message,
    SampleType,
)

Generator = Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]


def _f32(x: float) -> float:
    return float(np.float32(x))


@dataclass(frozen=True, slots=True)
class EmulatedChannel:
    spec: ChannelSpec
    generator: Generator  # sample times in seconds since boot → physical values


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Every Nth DATA frame (0 = never) is dropped, corrupted, truncated, or preceded by garbage."""

    drop_every: int = 0
    corrupt_every: int = 0
    truncate_every: int = 0
    garbage_every: int = 0
    garbage_size: int = 16
    seed: int = 0


@dataclass(slots=True)
class EmulatorCounters:
    frames_written: int = 0
    data_frames: int = 0
    dropped: int = 0
    corrupted: int = 0
    truncated: int = 0
    garbage_bytes: int = 0
    commands: int = 0


@dataclass(slots=True)
class _Group:
    indices: tuple[int, ...]
    rate_hz: float
    block_samples: int
    next_sample: int = 0


class SerialDeviceEmulator:
    """Writes frames to `fd`; `run()` is meant for a thread, the hooks may be called from another."""

    def __init__(
        self,
        fd: int,
        device_id: str,
        channels: Sequence[EmulatedChannel],
        *,
        block_seconds: float = 0.1,
        faults: FaultPlan | None = None,
        firmware: tuple[int, int, int] = (1, 0, 0),
        speed: float = 1.0,
    ) -> None:
        self.fd = fd
        self.device_id = device_id
        # the wire carries float32: keep exactly what the gateway will see, and scale with it
        self.channels = tuple(
            EmulatedChannel(
                replace(
                    c.spec, rate_hz=_f32(c.spec.rate_hz), scale=_f32(c.spec.scale), offset=_f32(c.spec.offset)
                ),
                c.generator,
            )
            for c in channels
        )
        self.faults = faults or FaultPlan()
        self.firmware = firmware
        self.speed = speed  # 1 = real time, 2 = twice as fast, 0 = no pacing
        self.counters = EmulatorCounters()
        self._seq = 0
        self._rng = random.Random(self.faults.seed)
        self._commands = FrameDecoder()
        self._streaming = True
        self._lock = threading.Lock()
        by_key: dict[tuple[float, int], list[int]] = {}
        for i, ch in enumerate(self.channels):
            by_key.setdefault((ch.spec.rate_hz, ch.spec.sample_type), []).append(i)
        self._groups = []
        for (rate, stype), ix in by_key.items():
            width = SampleType(stype).dtype.itemsize * len(ix)
            fit = (MAX_PAYLOAD_SIZE - 12 - len(ix)) // width
            self._groups.append(_Group(tuple(ix), rate, max(1, min(fit, round(rate * block_seconds)))))

    @property
    def hello(self) -> Hello:
        return Hello(self.device_id, self.firmware, tuple(c.spec for c in self.channels))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def send(self, message: Message, time_us: int) -> None:
        """Encode and write one frame as is (no fault injection); thread-safe."""
        with self._lock:
            frame = encode_frame(message, self._seq, time_us)
            self._seq = (self._seq + 1) & 0xFFFF
            self._write(frame)
            self.counters.frames_written += 1

    def send_event(self, event: Event, time_us: int) -> None:
        self.send(event, time_us)

    def skip_sequence(self, count: int) -> None:
        """Consume `count` sequence numbers without sending: the receiver must report a gap."""
        with self._lock:
            self._seq = (self._seq + count) & 0xFFFF

    def inject_garbage(self, data: bytes) -> None:
        with self._lock:
            self._write(data)
            self.counters.garbage_bytes += len(data)

    def _block(self, group: _Group) -> DataBlock:
        n0, n = group.next_sample, group.block_samples
        group.next_sample += n
        t = (n0 + np.arange(n, dtype=np.float64)) / group.rate_hz
        stype = self.channels[group.indices[0]].spec.sample_type
        info = np.iinfo(stype.dtype)
        columns = []
        for i in group.indices:
            spec = self.channels[i].spec
            physical = np.asarray(self.channels[i].generator(t), dtype=np.float64)
            raw = np.rint((physical - spec.offset) / spec.scale)
            columns.append(np.clip(raw, info.min, info.max))
        samples = np.stack(columns, axis=1).astype(stype.dtype)
        return DataBlock(round(n0 * 1e6 / group.rate_hz), stype, group.indices, samples)

    def _send_data(self, block: DataBlock, time_us: int) -> None:
        plan, c = self.faults, self.counters
        with self._lock:
            c.data_frames += 1
            k = c.data_frames
            frame = encode_frame(block, self._seq, time_us)
            self._seq = (self._seq + 1) & 0xFFFF
            if plan.drop_every and k % plan.drop_every == 0:
                c.dropped += 1
                return
            if plan.garbage_every and k % plan.garbage_every == 0:
                junk = bytes(self._rng.randrange(1, 256) for _ in range(plan.garbage_size))
                self._write(junk)
                c.garbage_bytes += len(junk)
            if plan.corrupt_every and k % plan.corrupt_every == 0:
                damaged = bytearray(frame)
                pos = self._rng.randrange(1, len(frame) - 1)
                damaged[pos] ^= 0x02 if damaged[pos] == 0x01 else 0x01  # never creates a delimiter
                frame = bytes(damaged)
                c.corrupted += 1
            elif plan.truncate_every and k % plan.truncate_every == 0:
                frame = frame[: len(frame) // 2]
                c.truncated += 1
            self._write(frame)
            c.frames_written += 1

    def poll_commands(self) -> None:
        """Answer any COMMAND frames waiting on the descriptor (non-blocking)."""
        while select.select([self.fd], [], [], 0)[0]:
            try:
                data = os.read(self.fd, 4096)
            except OSError:
                return
            if not data:
                return
            self._commands.feed(data)
        while (frame := self._commands.next_frame()) is not NEED_DATA:
            if isinstance(frame.message, Command):
                self.counters.commands += 1
                self._answer(frame.message, frame.seq)

    def _answer(self, command: Command, seq: int) -> None:
        now = self._device_time_us()
        if command.code is CommandCode.SEND_HELLO:
            self.send(self.hello, now)
        elif command.code in (CommandCode.START, CommandCode.STOP):
            self._streaming = command.code is CommandCode.START
        else:
            self.send(Ack(seq, AckStatus.UNSUPPORTED), now)
            return
        self.send(Ack(seq, AckStatus.OK), now)

    def _device_time_us(self) -> int:
        return max(int(g.next_sample * 1e6 / g.rate_hz) for g in self._groups) if self._groups else 0

    def run(
        self, stop: threading.Event, max_blocks: int | None = None, answer_commands: bool = False
    ) -> None:
        """Send HELLO, then DATA blocks until `stop` is set or `max_blocks` blocks were produced."""
        self.send(self.hello, 0)
        start = time.monotonic()
        produced = 0
        while not stop.is_set() and (max_blocks is None or produced < max_blocks) and self._groups:
            group = min(self._groups, key=lambda g: g.next_sample / g.rate_hz)
            due = group.next_sample / group.rate_hz  # device seconds at the block's first sample
            end_s = due + group.block_samples / group.rate_hz  # a block leaves once its last sample exists
            if self.speed > 0 and stop.wait(max(0.0, start + end_s / self.speed - time.monotonic())):
                break
            if answer_commands:
                self.poll_commands()
            if not self._streaming:
                group.next_sample += group.block_samples  # device keeps time while stopped
                continue
            self._send_data(self._block(group), int(end_s * 1e6))
            produced += 1


def _demo_channels() -> list[EmulatedChannel]:
    def ecg(t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return 1.2 * np.exp(-(((t % 0.8) - 0.4) ** 2) / 0.0005) + 0.05 * np.sin(2 * np.pi * 0.3 * t)

    def temp(t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return 36.8 + 0.1 * np.sin(2 * np.pi * t / 60.0)

    return [
        EmulatedChannel(ChannelSpec("ecg", "mV", SampleType.INT16, 250.0, 0.001), ecg),
        EmulatedChannel(ChannelSpec("temp", "°C", SampleType.INT16, 1.0, 0.01), temp),
    ]


def main() -> None:  # pragma: no cover - interactive demo entry point
    """Open a pty, print its device path, and stream a demo ECG + temperature device until Ctrl-C."""
    import tty

    master, slave = os.openpty()
    tty.setraw(slave)
    print(os.ttyname(slave), flush=True)
    emu = SerialDeviceEmulator(master, "emulated-ecg-1", _demo_channels())
    with contextlib.suppress(KeyboardInterrupt):
        emu.run(threading.Event(), answer_commands=True)


if __name__ == "__main__":  # pragma: no cover
    main()
