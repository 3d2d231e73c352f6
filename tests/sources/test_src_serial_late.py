"""Serial data read late keeps the time the device sent it (agent.sources.serial_clock).

The source reads only when the consumer asks, so a stalled agent leaves a device's bytes in the kernel
buffer. An episode the device sent in real time meanwhile must still alarm, with its real onset: the
audit of 2026-11-30 (finding 1) saw every late block re-stamped to its arrival, a 25 s episode folded
into a 2 s saw-tooth, and no alarm. Real pseudo-terminals, the real `SerialSource` and `Pipeline`; the
reader pauses (does not ask for readings) while the device sends in real time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from src_pty import PtyDevice, serial_device, take

from agent.config import parse_config
from agent.events import AlarmEvent, Phase
from agent.pipeline import Pipeline
from agent.readings import Reading
from agent.sources.serial import SerialSource
from agent.sources.serial_frames import FrameReadings
from firmware_bridge import Frame, encode_frame
from firmware_bridge.frame_messages import ChannelSpec, DataBlock, Hello, SampleType

RATE_HZ = 5.0
HELLO = Hello("emu-1", (1, 0, 0), (ChannelSpec("hr", "bpm", SampleType.INT16, RATE_HZ, 1.0),))


def config(tmp_path: Path, **serial: Any) -> dict[str, Any]:
    return {
        "gateway": {"id": "gw", "site": "s"},
        "mqtt": {"url": "mqtt://127.0.0.1:1883"},
        "outbox": {"path": "outbox.sqlite"},
        "devices": [
            {
                "id": "bed-7",
                "kind": "wearable",
                "transport": "serial",
                "serial": {"port": str(tmp_path / "port"), **serial},
            }
        ],
        "detectors": [
            {
                "id": "hr-high",
                "type": "limit",
                "stream": "vitals",
                "channels": ["hr"],
                "rate_hz": RATE_HZ,
                "params": {"above": 120, "hop_s": 1 / RATE_HZ},
            }
        ],
        "alarms": [
            {
                "condition": "tachycardia",
                "detector": "hr-high",
                "min_duration_s": 1.5,
                "clear_after_s": 1.0,
                "unit": "bpm",
            }
        ],
    }


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[PtyDevice]:
    dev = PtyDevice(tmp_path / "usb-Acme_Monitor_0001-if00-port0")
    dev.plug()
    yield dev
    dev.unplug()


class LiveDevice:
    """Sends `hr` at RATE_HZ in real time, its device clock in µs since it started; `episode` is the
    (start, end) in seconds of its run at 150 bpm, `onset` the gateway wall time of its first sample."""

    def __init__(self, write: Any, seconds: float, episode: tuple[float, float], lines: bool = False) -> None:
        self.write = write
        self.seconds = seconds
        self.episode = episode
        self.lines = lines
        self.onset = 0.0
        self.sent = 0
        self.times_us: list[int] = []  # device time of each block sent
        self.walls: list[float] = []  # gateway wall time it was sent at
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        start = time.monotonic()
        if not self.lines:
            self.write(encode_frame(HELLO, 0, 0))
        for k in range(round(self.seconds * RATE_HZ)):
            t = k / RATE_HZ
            time.sleep(max(0.0, start + t - time.monotonic()))
            hr = 150 if self.episode[0] <= t < self.episode[1] else 70
            if hr == 150 and not self.onset:
                self.onset = time.time()
            if self.lines:
                self.write(f"{hr},97\n".encode())
            else:
                now_us = round((time.monotonic() - start) * 1e6)
                self.times_us.append(now_us)
                self.walls.append(time.time())
                block = DataBlock(now_us, SampleType.INT16, (0,), np.array([[hr]]))
                self.write(encode_frame(block, k + 1, now_us))
            self.sent += 1


async def read_with_a_stall(
    source: SerialSource, device: LiveDevice, pipeline: Pipeline, live_s: float, stall_s: float
) -> tuple[list[Reading], list[AlarmEvent]]:
    """Read `live_s` as the device sends, then stop asking for readings for `stall_s`, then take the
    rest; each read's readings go to the pipeline together, as the daemon's turn takes them."""
    first = asyncio.ensure_future(take(source, 1))  # the source opens the port when asked
    async with asyncio.timeout(10):
        while not source.stats.connected:
            await asyncio.sleep(0.01)
    device.thread.start()
    readings = await first
    events = pipeline.ingest(readings)
    until = time.monotonic() + live_s
    while time.monotonic() < until:
        batch = await take(source, 1)
        readings += batch
        events += pipeline.ingest(batch)
    await asyncio.sleep(stall_s)  # the agent is busy: the device's bytes wait in the kernel buffer
    device.thread.join(timeout=30)
    while source.stats.readings < device.sent:
        batch = await take(source, 1)
        while source._pending:  # what that read brought, as one turn
            batch += await take(source, 1)
        readings += batch
        events += pipeline.ingest(batch)
    return readings, events


def test_frames_read_late_keep_the_device_time_and_the_episode_alarms(tmp_path: Path, pty: PtyDevice) -> None:
    """2 s live, then a 4 s stall during which the device sends 3 s of 150 bpm: the backlog keeps its
    0.2 s spacing, in order, in the past, and the tachycardia starts with the onset the device sent."""
    cfg = parse_config(config(tmp_path), base_dir=tmp_path)
    pipeline = Pipeline(cfg, str)
    device = LiveDevice(pty.write, seconds=7.0, episode=(2.5, 5.5))

    async def main() -> tuple[list[Reading], list[AlarmEvent]]:
        async with SerialSource(serial_device(pty.link)) as source:
            return await read_with_a_stall(source, device, pipeline, live_s=2.0, stall_s=4.0)

    readings, events = asyncio.run(main())
    times = np.array([r.wall_time for r in readings])
    assert len(readings) == device.sent == 35
    np.testing.assert_allclose(times, device.walls, atol=0.2)  # when it was sent, not read
    late = np.array([r.monotonic for r in readings]) == readings[-1].monotonic  # read together
    assert late.sum() > 15
    spacing = np.diff(device.times_us)[late[1:] & late[:-1]] / 1e6
    np.testing.assert_allclose(np.diff(times[late]), spacing, atol=1e-5)  # the device clock's spacing
    assert times[-1] <= time.time()
    starts = [e for e in events if e.condition == "tachycardia" and e.phase is Phase.START]
    assert len(starts) == 1
    assert starts[0].onset_time == pytest.approx(device.onset, abs=0.25)


@pytest.mark.parametrize("rate_hz", [RATE_HZ, 0.0], ids=["serial.rate_hz", "no-rate"])
def test_lines_read_late_are_spaced_back_from_their_arrival(
    tmp_path: Path, pty: PtyDevice, rate_hz: float
) -> None:
    """CSV lines carry no time: the lines of one late read are spaced by serial.rate_hz back from
    their arrival (without it, evenly since the previous read), so an episode sent in real time during
    a stall alarms, near its real onset."""
    cfg = parse_config(
        config(tmp_path, protocol="csv", channels=["hr", "spo2"], rate_hz=rate_hz), base_dir=tmp_path
    )
    pipeline = Pipeline(cfg, str)
    device = LiveDevice(pty.write, seconds=7.0, episode=(2.5, 5.5), lines=True)
    serial = cfg.devices[0].serial
    assert serial is not None and serial.rate_hz == rate_hz

    async def main() -> tuple[list[Reading], list[AlarmEvent]]:
        async with SerialSource(
            serial_device(pty.link, protocol="csv", channels=("hr", "spo2"), rate_hz=rate_hz)
        ) as source:
            return await read_with_a_stall(source, device, pipeline, live_s=2.0, stall_s=4.0)

    readings, events = asyncio.run(main())
    times = np.array([r.wall_time for r in readings])
    assert len(readings) == device.sent == 35
    assert np.all(np.diff(times) > 0) and times[-1] <= time.time()
    assert {r.period_s for r in readings} == {1 / rate_hz if rate_hz else 0.0}  # declared to the pipeline
    starts = [e for e in events if e.condition == "tachycardia" and e.phase is Phase.START]
    assert len(starts) == 1
    assert starts[0].onset_time == pytest.approx(device.onset, abs=0.5)


class Gateway:
    """The gateway's clocks for sans-I/O frames: monotonic, and wall = monotonic + an offset."""

    def __init__(self) -> None:
        self.mono = 100.0
        self.offset = 1.8e9

    def wall(self) -> float:
        return self.mono + self.offset


def stamp(frames: FrameReadings, gateway: Gateway, blocks: list[tuple[int, int]]) -> list[float]:
    """Wall times of single-sample blocks (seq, device µs) read together now, relative to now."""
    read = [
        Frame(seq, t_us, DataBlock(t_us, SampleType.INT16, (0,), np.array([[70]]))) for seq, t_us in blocks
    ]
    return [r.wall_time - gateway.wall() for r in frames.take_read(read, gateway.mono)]


def test_the_device_clock_is_anchored_anew_only_when_it_goes_back() -> None:
    """A reboot (device time back to 0, a jump back of an hour) or a jump forward puts the next block at
    its arrival, never after it; a backlog keeps its past times; a gateway clock step moves readings."""
    gateway = Gateway()
    frames = FrameReadings("bed-7", "vitals", gateway.wall)
    assert frames.take(Frame(0, 0, HELLO), gateway.mono) is None
    t = 3_600_000_000  # the device has been up an hour
    assert stamp(frames, gateway, [(1, t)]) == [0.0]
    gateway.mono += 10.0  # 10 s read late, in one read: their real times
    late = stamp(frames, gateway, [(2 + k, t + 200_000 * (k + 1)) for k in range(50)])
    assert late == pytest.approx([-10.0 + 0.2 * (k + 1) for k in range(50)])
    gateway.mono += 1.0
    assert stamp(frames, gateway, [(52, 0)]) == [0.0]  # rebooted: anchored at arrival
    gateway.mono += 1.0
    assert stamp(frames, gateway, [(53, 1_000_000)]) == pytest.approx([0.0])  # and kept
    gateway.mono += 1.0
    assert stamp(frames, gateway, [(54, 3_600_000_000)]) == [0.0]  # forward an hour: not in the future
    gateway.mono += 1.0
    assert stamp(frames, gateway, [(55, 1_000)]) == [0.0]  # back an hour
    gateway.mono += 1.0
    gateway.offset += 86_400.0  # NTP steps the gateway clock: the readings follow it
    assert stamp(frames, gateway, [(56, 1_001_000)]) == pytest.approx([0.0])
    assert frames.time.restarts == 2
    walls = []
    for k in range(20):  # device time going back 1.5 s a frame (the audit's s2): each at its arrival
        gateway.mono += 1.0
        walls += stamp(frames, gateway, [(57 + k, 30_000_000 - k * 1_500_000)])
    assert walls == [0.0] * 20 and frames.time.restarts == 2 + 19  # the first went forward


def test_a_device_clock_running_slow_is_followed() -> None:
    """The anchor may move later by SLEW of the device time: a device clock 1 % slow stays within a
    few ms of the gateway's over an hour instead of drifting 36 s into the past."""
    gateway = Gateway()
    frames = FrameReadings("bed-7", "vitals", gateway.wall)
    frames.take(Frame(0, 0, HELLO), gateway.mono)
    errors = []
    for k in range(3600):
        errors += stamp(frames, gateway, [(k + 1, round(k * 0.99e6))])
        gateway.mono += 1.0
    assert max(abs(e) for e in errors) < 0.02


def test_a_flushed_backlog_alarms_in_its_own_time_and_is_no_clock_step(tmp_path: Path) -> None:
    """A device stores 60 s while its link is down (20 s of them at 150 bpm) and flushes them at once,
    the newest 30 s old, then goes live: the episode alarms with its real onset, and the live readings
    after the old ones are not taken for a step of the gateway clock (agent.clock)."""
    gateway = Gateway()
    pipeline = Pipeline(
        parse_config(config(tmp_path), base_dir=tmp_path),
        str,
        clock=gateway.wall,
        monotonic=lambda: gateway.mono,
    )
    frames = FrameReadings("bed-7", "vitals", gateway.wall)
    frames.take(Frame(0, 0, HELLO), gateway.mono)
    start = gateway.wall()
    seq = 0

    def block(k: int, hr: int) -> Frame:
        nonlocal seq
        seq += 1
        t_us = k * 200_000  # k-th sample at RATE_HZ
        return Frame(seq, t_us, DataBlock(t_us, SampleType.INT16, (0,), np.array([[hr]])))

    events: list[AlarmEvent] = []
    for k in range(50):  # 10 s live
        events += pipeline.ingest(frames.take_read([block(k, 70)], gateway.mono))
        gateway.mono += 0.2
    gateway.mono += 90.0  # 60 s stored, flushed 30 s after the newest of them
    stored = [block(k, 150 if 100 <= k < 200 else 70) for k in range(50, 350)]
    events += pipeline.ingest(frames.take_read(stored, gateway.mono))
    for k in range(350 + 150, 350 + 200):  # live again
        gateway.mono += 0.2
        events += pipeline.ingest(frames.take_read([block(k, 70)], gateway.mono))
    starts = [e for e in events if e.condition == "tachycardia" and e.phase is Phase.START]
    assert len(starts) == 1 and starts[0].onset_time == pytest.approx(start + 100 * 0.2, abs=0.01)
    assert pipeline.clock_steps() == 0


def hello_at(frames: FrameReadings, gateway: Gateway, t_us: int) -> None:
    """The device's HELLO, stamped `t_us` when sent, read now (the answer to the open's SEND_HELLO)."""
    assert frames.take_read([Frame(0, t_us, HELLO)], gateway.mono) == []


def test_a_device_rebooted_while_unplugged_is_anchored_anew_by_its_hello() -> None:
    """Review of 2026-11-30, finding 3: 5 s of uptime, an hour unplugged, power-cycled on the replug, read
    again at an uptime of 20 s. Its time is past the last one, so going back does not tell the reboot;
    the HELLO stamped an hour before the anchor expects it does, and its live data is stamped at its
    arrival, not an hour in the past. A device that ran on (a backlog, a clock 1 % slow) keeps its anchor."""
    gateway = Gateway()
    frames = FrameReadings("bed-7", "vitals", gateway.wall)
    hello_at(frames, gateway, 0)
    for k in range(1, 6):
        gateway.mono += 1.0
        assert stamp(frames, gateway, [(k, k * 1_000_000)]) == pytest.approx([0.0])
    frames.link_restarted()
    gateway.mono += 3600.0 + 15.0
    hello_at(frames, gateway, 20_000_000)
    assert frames.time.restarts == 1
    for k in range(6):
        assert stamp(frames, gateway, [(k + 1, (20 + k) * 1_000_000)]) == pytest.approx([0.0])
        gateway.mono += 1.0

    # the same device runs on while unplugged for 60 s and holds them back: its HELLO is on time
    frames.link_restarted()
    gateway.mono += 60.0
    now_us = (20 + 6 + 60) * 1_000_000
    hello_at(frames, gateway, now_us)
    held = stamp(frames, gateway, [(k + 1, now_us - (60 - k) * 1_000_000) for k in range(60)])
    assert held == pytest.approx([-60.0 + k for k in range(60)], abs=0.05)  # their real, past times
    assert frames.time.restarts == 1

    # a clock 1 % slow, an hour unplugged: 36 s behind, within SLEW; a HELLO read late (with newer
    # frames, after a stalled agent) is not behind either
    frames.link_restarted()
    gateway.mono += 3600.0
    slow_us = now_us + round(3600 * 0.99e6)
    hello_at(frames, gateway, slow_us)
    gateway.mono += 5.0
    read = [Frame(0, slow_us + 1_000_000, HELLO)] + [
        Frame(
            k + 1,
            slow_us + (2 + k) * 1_000_000,
            DataBlock(slow_us + (2 + k) * 1_000_000, SampleType.INT16, (0,), np.array([[70]])),
        )
        for k in range(4)
    ]
    frames.take_read(read, gateway.mono)
    assert frames.time.restarts == 1
