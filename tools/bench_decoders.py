"""Throughput of the firmware_bridge decoders on one core: frames/s and MB/s, median of 5 runs.

Serial frames are fed in 4 KiB reads (what a serial source gets from the OS) and drained with
`next_frame()`; GATT decoders are called once per characteristic value, as a BLE notification
callback would. MB/s counts input bytes (wire bytes for serial, value bytes for GATT).

    python -m tools.bench_decoders            # prints a Markdown table
    python -m tools.bench_decoders --quick    # 1 run, smaller inputs (smoke test)
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from collections.abc import Callable

import numpy as np

from firmware_bridge.decoding import NEED_DATA
from firmware_bridge.frame_codec import FrameDecoder, encode_frame
from firmware_bridge.frame_messages import ChannelSpec, DataBlock, Hello, SampleType
from firmware_bridge.gatt.battery import decode_battery_level
from firmware_bridge.gatt.blood_pressure import decode_blood_pressure_measurement
from firmware_bridge.gatt.heart_rate import decode_heart_rate_measurement
from firmware_bridge.gatt.polar_pmd import decode_pmd_data
from firmware_bridge.gatt.pulse_oximeter import decode_plx_continuous, decode_plx_spot_check
from firmware_bridge.gatt.thermometer import decode_temperature_measurement
from firmware_bridge.line_formats import CsvLineDecoder, JsonLineDecoder
from firmware_bridge.physical import to_physical

READ_SIZE = 4096


def _median_rate(run: Callable[[], None], units: int, nbytes: int, repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return units / t, nbytes / t / 1e6


def _stream(
    make: Callable[[], FrameDecoder | CsvLineDecoder | JsonLineDecoder], wire: bytes, expected: int
) -> Callable[[], None]:
    def run() -> None:
        dec = make()
        for i in range(0, len(wire), READ_SIZE):
            dec.feed(wire[i : i + READ_SIZE])
            while dec.next_frame() is not NEED_DATA:
                pass
        # a benchmark of a decoder that silently rejects its input would measure nothing
        if dec.stats.frames != expected or dec.stats.rejected:
            raise SystemExit(f"{type(dec).__name__}: decoded {dec.stats.frames}/{expected}, {dec.stats}")

    return run


def serial_cases(n_frames: int) -> list[tuple[str, bytes, int]]:
    rng = np.random.default_rng(0)
    cases = []
    for label, n_samples, n_ch in (
        ("DATA 25 × 1 ch int16 (250 Hz ECG, 0.1 s)", 25, 1),
        ("DATA 100 × 3 ch int16 (1 kHz vibration xyz, 0.1 s)", 100, 3),
        ("DATA 498 × 1 ch int16 (largest frame)", 498, 1),
    ):
        frames = []
        for seq in range(n_frames):
            samples = rng.integers(-2000, 2000, size=(n_samples, n_ch), dtype=np.int16)
            block = DataBlock(seq * 100_000, SampleType.INT16, tuple(range(n_ch)), samples)
            frames.append(encode_frame(block, seq, seq * 100_000))
        wire = b"".join(frames)
        cases.append((f"{label}, {len(frames[0])} B/frame", wire, n_frames))
    return cases


GATT_VALUES: list[tuple[str, Callable[[bytes], object], str]] = [
    ("Heart Rate 0x2A37 (u8 bpm + 2 RR)", decode_heart_rate_measurement, "16 48 04 04 cc 02"),
    (
        "PLX Continuous 0x2A5F (all fields)",
        decode_plx_continuous,
        "1f 61 00 41 00 60 00 42 00 cf f3 40 00 80 00 20 00 00 19 f0",
    ),
    (
        "PLX Spot-check 0x2A5E (all fields)",
        decode_plx_spot_check,
        "1f 62 00 46 00 e8 07 0b 17 14 1e 00 00 01 00 80 00 ff 07",
    ),
    (
        "Temperature 0x2A1C (°F, stamp, type)",
        decode_temperature_measurement,
        "07 da 03 00 ff e8 07 0b 17 14 1e 00 02",
    ),
    (
        "Blood Pressure 0x2A35 (all fields)",
        decode_blood_pressure_measurement,
        "1e 78 00 50 00 a5 f3 e8 07 0b 17 14 1e 00 48 00 01 05 00",
    ),
    ("Battery Level 0x2A19", decode_battery_level, "55"),
    (
        "Polar PMD ECG type 0 (73 samples)",
        decode_pmd_data,
        "00 08 07 06 05 04 03 02 01 00" + " 64 00 00" * 73,
    ),
    (
        "Polar PMD ACC type 1 (36 samples)",
        decode_pmd_data,
        "02 08 07 06 05 04 03 02 01 01" + " f6 ff 14 00 e8 03" * 36,
    ),
    (
        "Polar PMD ACC delta 0x81 (4 samples)",
        decode_pmd_data,
        "02 08 07 06 05 04 03 02 01 81 64 00 ce ff e8 03 04 02 e1 f3 70 02 01 2d",
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run on small inputs")
    args = parser.parse_args()
    repeats, n_frames, n_calls = (1, 500, 2000) if args.quick else (5, 20_000, 50_000)

    print("| decoder | input | frames/s (or calls/s) | MB/s |")
    print("|---|---|---:|---:|")
    for label, wire, count in serial_cases(n_frames):
        fps, mbps = _median_rate(_stream(FrameDecoder, wire, count), count, len(wire), repeats)
        print(f"| serial FrameDecoder | {label} | {fps:,.0f} | {mbps:.1f} |")

    hello = Hello(
        "bench", (1, 0, 0), tuple(ChannelSpec(f"c{i}", "u", SampleType.INT16, 1000.0, 0.01) for i in range(3))
    )
    block = DataBlock(0, SampleType.INT16, (0, 1, 2), np.zeros((100, 3), dtype=np.int16))

    def scale_blocks() -> None:
        for _ in range(n_calls):
            to_physical(block, hello)

    bps, _ = _median_rate(scale_blocks, n_calls, 0, repeats)
    print(f"| physical.to_physical | 100 × 3 ch block | {bps:,.0f} | – |")

    rows = [(70 + i % 50, 95 + i % 5) for i in range(n_frames)]
    csv = "".join(f"{a},{b}\n" for a, b in rows).encode()
    jsonl = "".join(json.dumps({"hr": a, "spo2": b}) + "\n" for a, b in rows).encode()
    for name, cls, wire in (
        ("CsvLineDecoder", CsvLineDecoder, csv),
        ("JsonLineDecoder", JsonLineDecoder, jsonl),
    ):
        make = functools.partial(cls, ("hr", "spo2"))
        fps, mbps = _median_rate(_stream(make, wire, n_frames), n_frames, len(wire), repeats)
        print(f"| {name} | 2 channels, {len(wire) // n_frames} B/line | {fps:,.0f} | {mbps:.1f} |")

    for label, decoder, hex_value in GATT_VALUES:
        value = bytes.fromhex(hex_value)

        def run(decoder: Callable[[bytes], object] = decoder, value: bytes = value) -> None:
            for _ in range(n_calls):
                decoder(value)

        cps, mbps = _median_rate(run, n_calls, n_calls * len(value), repeats)
        print(f"| GATT | {label}, {len(value)} B | {cps:,.0f} | {mbps:.2f} |")


if __name__ == "__main__":
    main()
