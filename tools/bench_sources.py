"""Throughput of the agent's sources around the decoders: readings/s through the whole I/O path.

* serial: pre-encoded DATA frames (25 × 1 ch int16, a 250 Hz ECG in 0.1 s blocks) written by a
  thread into a real pseudo-terminal; the `SerialSource` reads them (add_reader + pyserial), decodes,
  scales and builds `Reading`s. Time from the first byte to the last reading.
* ble: Heart Rate Measurement notifications (u8 bpm + 2 RR) delivered to the `BleSource` callback of a
  fake client, through decoding, the vitals/RR assembly and the queue, drained by the consumer.
* record / replay: JSON-lines writing of 25-sample ECG readings, and replay at speed 0.

Medians of `--repeats` runs, one process; figures go to docs/benchmarks.md ("Sources").

    python -m tools.bench_sources            # prints a Markdown table
    python -m tools.bench_sources --quick    # small inputs, 1 run (smoke test)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bleak.backends.device import BLEDevice

from agent.config.schema import BleConfig, DeviceConfig, ReplayConfig, SerialConfig
from agent.readings import Reading
from agent.sources.ble import BleSource
from agent.sources.record import ReadingRecorder
from agent.sources.replay import ReplaySource
from agent.sources.serial import SerialSource
from firmware_bridge import encode_frame
from firmware_bridge.frame_messages import ChannelSpec, DataBlock, Hello, SampleType

HR_UUID = "00002a37-0000-1000-8000-00805f9b34fb"


def _median(run: Callable[[], float], repeats: int) -> float:
    return statistics.median(run() for _ in range(repeats))


def serial_run(frames: int) -> tuple[float, int]:
    """Seconds to deliver `frames` DATA frames as readings, and the wire bytes."""
    hello = Hello("bench", (1, 0, 0), (ChannelSpec("ecg", "mV", SampleType.INT16, 250.0, 0.001),))
    samples = (np.arange(25) * 10).reshape(25, 1)
    wire = encode_frame(hello, 0, 0) + b"".join(
        encode_frame(DataBlock(i * 100_000, SampleType.INT16, (0,), samples), i + 1, (i + 1) * 100_000)
        for i in range(frames)
    )
    master, slave = os.openpty()
    tty.setraw(slave)
    with tempfile.TemporaryDirectory() as tmp:
        link = Path(tmp) / "port"
        link.symlink_to(os.ttyname(slave))
        device = DeviceConfig("bench", "wearable", "serial", serial=SerialConfig(str(link)))

        def writer() -> None:
            view = memoryview(wire)
            while view:
                view = view[os.write(master, view[:65536]) :]

        async def main() -> float:
            source = SerialSource(device)
            async with source:
                first = asyncio.ensure_future(anext(source))
                while not source.stats.connected:
                    await asyncio.sleep(0.005)
                thread = threading.Thread(target=writer, daemon=True)
                t0 = time.perf_counter()
                thread.start()
                await first
                for _ in range(frames - 1):
                    await anext(source)
                elapsed = time.perf_counter() - t0
                thread.join()
                return elapsed

        try:
            return asyncio.run(main()), len(wire)
        finally:
            os.close(master)
            os.close(slave)


class _Finder:
    async def find(self, config: BleConfig, timeout_s: float) -> BLEDevice | None:
        return BLEDevice("AA:BB:CC:DD:EE:FF", "bench", {})


class _Client:
    def __init__(self) -> None:
        self.callbacks: dict[str, Callable[[Any, bytearray], None]] = {}

    async def start_notify(self, uuid: str, callback: Callable[[Any, bytearray], None]) -> None:
        self.callbacks[uuid] = callback

    async def read_gatt_char(self, uuid: str) -> bytearray:
        return bytearray([90])

    async def write_gatt_char(self, uuid: str, data: bytes, response: bool = False) -> None:
        return None

    async def disconnect(self) -> bool:
        return True


def ble_run(notifications: int) -> float:
    """Seconds for `notifications` HR values (each 2 RR readings; the vitals row comes once a second,
    not per notification) to come out as readings."""
    payload = bytearray([0x16, 72, 0x00, 0x04, 0x00, 0x02])
    client = _Client()

    async def connect(device: BLEDevice, on_disconnect: Callable[[], None]) -> _Client:
        return client

    device = DeviceConfig("bench", "wearable", "ble", ble=BleConfig(address="AA:BB:CC:DD:EE:FF"))

    async def main() -> float:
        async with BleSource(device, finder=_Finder(), connector=connect) as source:
            while HR_UUID not in client.callbacks:
                await asyncio.sleep(0.001)
            callback = client.callbacks[HR_UUID]

            async def drain(rr: int) -> None:  # until `rr` RR readings came out (and any row)
                while rr:
                    rr -= (await anext(source)).stream.endswith("/rr")

            t0 = time.perf_counter()
            for i in range(notifications):
                callback(None, payload)
                if i % 1000 == 999:  # drain: the queue is bounded
                    await drain(2000)
            await drain(2 * (notifications % 1000))
            return time.perf_counter() - t0

    return asyncio.run(main())


def ecg_readings(n: int) -> list[Reading]:
    values = np.sin(np.arange(25 * n) / 20.0).reshape(n, 25, 1)
    return [Reading("bench/ecg", ("ecg",), values[i], 1.7e9 + i * 0.1, float(i), 0.004) for i in range(n)]


def record_run(readings: list[Reading], folder: Path) -> tuple[float, int]:
    for old in folder.iterdir():
        old.unlink()
    t0 = time.perf_counter()
    with ReadingRecorder(folder, max_file_bytes=64 << 20, max_files=4) as recorder:
        for r in readings:
            recorder.write(r)
    elapsed = time.perf_counter() - t0
    return elapsed, sum(p.stat().st_size for p in folder.iterdir())


def replay_run(folder: Path, n: int) -> float:
    device = DeviceConfig("bench", "wearable", "replay", replay=ReplayConfig(folder, 0.0))

    async def main() -> float:
        t0 = time.perf_counter()
        async with ReplaySource(device) as source:
            count = sum([1 async for _ in source])
        assert count == n
        return time.perf_counter() - t0

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    frames = 2_000 if args.quick else 20_000
    notes = 2_000 if args.quick else 20_000
    n_rec = 2_000 if args.quick else 20_000

    serial_run(10)  # warm-up: imports, pyserial
    wire_bytes = 0
    serial_s = []
    for _ in range(repeats):
        seconds, wire_bytes = serial_run(frames)
        serial_s.append(seconds)
    s = statistics.median(serial_s)
    ble_s = _median(lambda: ble_run(notes), repeats)
    readings = ecg_readings(n_rec)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rec = [record_run(readings, folder) for _ in range(repeats)]
        rec_s = statistics.median(r[0] for r in rec)
        rec_bytes = rec[-1][1]
        replay_s = _median(lambda: replay_run(folder, n_rec), repeats)

    print("| source path | input | readings/s | MB/s |")
    print("|---|---|---:|---:|")
    print(
        f"| serial (pty → SerialSource) | {frames} DATA frames 25 × 1 ch int16 | {frames / s:,.0f} | "
        f"{wire_bytes / s / 1e6:.2f} |"
    )
    print(
        f"| BLE (HR notification → BleSource) | {notes} values, 2 RR each (+ 1 vitals row a second) | "
        f"{2 * notes / ble_s:,.0f} | – |"
    )
    print(
        f"| record (JSON lines) | {n_rec} ECG readings of 25 samples | {n_rec / rec_s:,.0f} | "
        f"{rec_bytes / rec_s / 1e6:.2f} |"
    )
    print(f"| replay (speed 0) | same files | {n_rec / replay_s:,.0f} | {rec_bytes / replay_s / 1e6:.2f} |")


if __name__ == "__main__":
    main()
