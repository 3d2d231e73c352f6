"""Fuzz-style robustness: ≥ 1 MB of random and mutated input into every decoder.

Mutations: bit flips, truncations, duplications, inserted zero bytes, random garbage. Stream
decoders must never raise and must account for every byte; GATT/PMD decoders may only raise
`GattDecodeError`. Deterministic seeds keep failures reproducible; the whole file runs in seconds.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import numpy as np
import pytest

from firmware_bridge.decoding import NEED_DATA
from firmware_bridge.errors import GattDecodeError
from firmware_bridge.frame_codec import Frame, FrameDecoder, encode_frame
from firmware_bridge.frame_messages import (
    Ack,
    AckStatus,
    ChannelSpec,
    DataBlock,
    Event,
    EventKind,
    Hello,
    Message,
    SampleType,
)
from firmware_bridge.gatt.battery import decode_battery_level
from firmware_bridge.gatt.blood_pressure import decode_blood_pressure_measurement
from firmware_bridge.gatt.heart_rate import decode_heart_rate_measurement
from firmware_bridge.gatt.polar_pmd import decode_control_point_response, decode_pmd_data, decode_settings
from firmware_bridge.gatt.pulse_oximeter import decode_plx_continuous, decode_plx_spot_check
from firmware_bridge.gatt.thermometer import decode_temperature_measurement
from firmware_bridge.line_formats import CsvLineDecoder, JsonLineDecoder

MEGABYTE = 1 << 20


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One random mutation of `data` (or the data unchanged, a third of the time)."""
    choice = rng.randrange(9)
    b = bytearray(data)
    if choice == 0 and b:  # bit flip(s)
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif choice == 1 and b:  # truncation
        del b[rng.randrange(len(b)) :]
    elif choice == 2 and b:  # duplicate a slice
        i = rng.randrange(len(b))
        j = rng.randint(i, len(b))
        b[j:j] = b[i:j]
    elif choice == 3:  # inserted zeros
        for _ in range(rng.randint(1, 3)):
            b.insert(rng.randint(0, len(b)), 0)
    elif choice == 4:  # random garbage inserted
        pos = rng.randint(0, len(b))
        b[pos:pos] = rng.randbytes(rng.randint(1, 40))
    elif choice == 5:  # pure random bytes of a similar size
        b = bytearray(rng.randbytes(rng.randint(0, len(b) + 8)))
    return bytes(b)


def sample_messages(rng: random.Random) -> list[Message]:
    hello = Hello("fuzz", (1, 2, 3), (ChannelSpec("a", "u", SampleType.INT16, 250.0, 0.5),))
    out: list[Message] = [hello]
    for _ in range(200):
        n = rng.randint(0, 120)  # 120 × 2 int32 still fits MAX_FRAME_SIZE
        stype = rng.choice(list(SampleType))
        samples = np.array([rng.randint(-30000, 30000) for _ in range(n * 2)], dtype=np.int64).reshape(n, 2)
        out.append(DataBlock(rng.getrandbits(40), stype, (0, 1), samples))
        out.append(Event(rng.choice(list(EventKind)), rng.randrange(65536), rng.randint(-5, 5)))
        out.append(Ack(rng.randrange(65536), AckStatus.OK))
    return out


def test_frame_decoder_survives_a_megabyte_of_mutations() -> None:
    rng = random.Random(1)
    messages = sample_messages(rng)
    dec = FrameDecoder()
    fed = 0
    decoded: list[Frame] = []
    seq = 0
    while fed < 2 * MEGABYTE:
        msg = rng.choice(messages)
        wire = encode_frame(msg, seq, seq * 1000)
        seq += 1
        if rng.random() < 0.5:
            wire = mutate(rng, wire)
        if rng.random() < 0.02:  # a long run without delimiters: oversized
            wire = bytes(rng.randrange(1, 256) for _ in range(1100)) + wire
        fed += len(wire)
        pos = 0
        while pos < len(wire):  # random read sizes, as from a UART
            step = rng.randint(1, 300)
            dec.feed(wire[pos : pos + step])
            pos += step
            while (f := dec.next_frame()) is not NEED_DATA:
                decoded.append(f)
    s = dec.stats
    assert s.bytes_in == fed
    assert s.bytes_in == s.frame_bytes + s.garbage_bytes + s.delimiters + dec.buffered
    assert s.frames == len(decoded)
    assert s.truncated and s.bad_crc and s.oversized, "the mutations must reach every error class"
    assert sum(f.gap_before for f in decoded) == s.lost_frames
    assert s.lost_frames > 0 and s.duplicates > 0  # mutations duplicate frames: dropped, counted


def _line_corpus(rng: random.Random, json_lines: bool) -> bytes:
    parts = []
    size = 0
    while size < MEGABYTE:
        row = {"hr": rng.randint(30, 200), "spo2": round(rng.uniform(80, 100), 1), "t": rng.random()}
        line = (json.dumps(row) if json_lines else f"{row['hr']},{row['spo2']}").encode() + b"\n"
        if rng.random() < 0.4:
            line = mutate(rng, line)
        if rng.random() < 0.0002:
            line = b"x" * 5000 + line  # oversized
        parts.append(line)
        size += len(line)
    return b"".join(parts)


@pytest.mark.parametrize("cls", [CsvLineDecoder, JsonLineDecoder])
def test_line_decoders_survive_a_megabyte_of_mutations(cls: type[CsvLineDecoder | JsonLineDecoder]) -> None:
    rng = random.Random(2)
    corpus = _line_corpus(rng, cls is JsonLineDecoder)
    dec = cls(("hr", "spo2"))
    frames = 0
    pos = 0
    while pos < len(corpus):
        step = rng.randint(1, 4096)
        dec.feed(corpus[pos : pos + step])
        pos += step
        while dec.next_frame() is not NEED_DATA:
            frames += 1
    s = dec.stats
    assert s.frames == frames > 0
    assert s.bad_lines > 0 and s.oversized_lines > 0
    assert s.lines == s.frames + s.blank_lines + s.header_lines + s.bad_lines + s.oversized_lines
    assert s.bytes_in == len(corpus) == s.consumed_bytes + dec.buffered


GATT_SEEDS: dict[str, tuple[Callable[[bytes], object], list[str]]] = {
    "heart_rate": (
        decode_heart_rate_measurement,
        ["00 48", "16 48 00 04 cc 02", "1f 3c 00 e8 03 00 04 00 02"],
    ),
    "plx_continuous": (
        decode_plx_continuous,
        ["00 62 00 48 00", "1f 61 00 41 00 60 00 42 00 cf f3 40 00 80 00 20 00 00 19 f0"],
    ),
    "plx_spot_check": (decode_plx_spot_check, ["1f 62 00 46 00 e8 07 0b 17 14 1e 00 00 01 00 80 00 ff 07"]),
    "thermometer": (
        decode_temperature_measurement,
        ["00 6d 01 00 ff", "07 da 03 00 ff e8 07 0b 17 14 1e 00 02"],
    ),
    "blood_pressure": (
        decode_blood_pressure_measurement,
        ["1e 78 00 50 00 a5 f3 e8 07 0b 17 14 1e 00 48 00 01 05 00"],
    ),
    "battery": (decode_battery_level, ["64", "00"]),
    "pmd_cp_response": (
        lambda v: decode_settings(decode_control_point_response(v).parameters),
        [
            "f0 01 02 00 00 00 02 19 00 c8 00 01 01 10 00 02 03 02 00 04 00 08 00",
            "f0 02 02 00 00 05 01 00 00 00 3f",
        ],
    ),
    "pmd_data": (
        decode_pmd_data,
        [
            "00 08 07 06 05 04 03 02 01 00 " + "64 00 00 9c ff ff " * 36,  # ECG, 73 samples like an H10 frame
            "02 08 07 06 05 04 03 02 01 01 " + "f6 ff 14 00 e8 03 " * 36,
            "02 08 07 06 05 04 03 02 01 81 64 00 ce ff e8 03 04 02 e1 f3 70 02 01 2d",
        ],
    ),
}


@pytest.mark.parametrize("name", list(GATT_SEEDS))
def test_gatt_decoders_raise_only_their_error_type(name: str) -> None:
    decoder, seeds = GATT_SEEDS[name]
    rng = random.Random(name)
    values = [bytes.fromhex(s) for s in seeds]
    fed = ok = failed = 0
    while fed < MEGABYTE:
        value = mutate(rng, rng.choice(values))
        fed += len(value)
        try:
            decoder(value)
            ok += 1
        except GattDecodeError:
            failed += 1
    assert ok > 0 and failed > 0  # both paths were exercised
