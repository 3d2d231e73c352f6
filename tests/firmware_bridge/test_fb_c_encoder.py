"""The reference C encoder (firmware_bridge/c) is built with the host gcc and checked byte for byte.

gcc is a requirement of this test suite: if it is missing the test fails with the install command,
because a skipped test would hide a broken firmware reference.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import firmware_bridge
from firmware_bridge.decoding import NEED_DATA
from firmware_bridge.frame_codec import Frame, FrameDecoder, encode_frame
from firmware_bridge.frame_messages import (
    Ack,
    AckStatus,
    ChannelSpec,
    DataBlock,
    Event,
    EventKind,
    Hello,
    SampleType,
)
from firmware_bridge.physical import to_physical

C_DIR = Path(firmware_bridge.__file__).parent / "c"
GCC_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"]
DOC_EXAMPLE = bytes.fromhex("00 04 01 03 07 04 40 42 0f 01 01 01 01 03 03 0f 03 74 0e 01 03 80 a7 00")


@pytest.fixture(scope="module")
def emitted(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is required to build firmware_bridge/c: apt-get install gcc", pytrace=False)
    exe = tmp_path_factory.mktemp("c") / "emit_vectors"
    build = subprocess.run(
        [gcc, *GCC_FLAGS, str(C_DIR / "edge_frame.c"), str(C_DIR / "emit_vectors.c"), "-o", str(exe)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert build.returncode == 0, f"C encoder does not build cleanly:\n{build.stderr}"
    run = subprocess.run([str(exe)], capture_output=True, timeout=30)
    assert run.returncode == 0, run.stderr.decode()
    return run.stdout


def expected_frames() -> list[Frame]:
    hello = Hello(
        "pump-7",
        (1, 4, 2),
        (
            ChannelSpec("pressure", "kPa", SampleType.INT16, 100.0, float(np.float32(0.01))),
            ChannelSpec("temp", "°C", SampleType.INT16, 1.0, float(np.float32(0.1)), -40.0),
        ),
    )
    i16 = SampleType.INT16
    return [
        Frame(0, 500, hello),
        Frame(
            1, 1000, DataBlock(1_000_000, i16, (0, 1), np.array([[100, 250], [-100, 251], [32767, -32768]]))
        ),
        Frame(
            2,
            2000,
            DataBlock(2_000_000, SampleType.INT32, (0,), np.array([[-(2**31)], [0], [2**31 - 1], [123456]])),
        ),
        Frame(7, 1_000_000, Event(EventKind.BATTERY_LOW, 15, 3700), gap_before=4),
        Frame(8, 1_000_001, Ack(3, AckStatus.OK)),
        Frame(9, 0xFFFFFFFFFFFF, DataBlock(42, i16, (0,), (np.arange(498) * 7 - 1000).reshape(-1, 1))),
        Frame(10, 3000, DataBlock(3000, i16, (0,), np.zeros((200, 1), dtype=np.int16))),
        Frame(11, 4000, Event(EventKind.FAULT, 513, -7)),
    ]


def test_c_frames_decode_to_exact_values(emitted: bytes) -> None:
    dec = FrameDecoder()
    dec.feed(emitted)
    frames = []
    while (f := dec.next_frame()) is not NEED_DATA:
        frames.append(f)
    assert frames == expected_frames()
    assert dec.stats.rejected == 0 and dec.stats.garbage_bytes == 0


def test_c_and_python_encoders_agree_byte_for_byte(emitted: bytes) -> None:
    python = b"".join(encode_frame(f.message, f.seq, f.device_time_us) for f in expected_frames())
    assert emitted == python
    assert DOC_EXAMPLE in emitted


def test_c_hello_scales_data_to_physical_units(emitted: bytes) -> None:
    dec = FrameDecoder()
    dec.feed(emitted)
    hello, block = dec.next_frame(), dec.next_frame()
    assert isinstance(hello, Frame) and isinstance(hello.message, Hello)
    assert isinstance(block, Frame) and isinstance(block.message, DataBlock)
    values = to_physical(block.message, hello.message)
    np.testing.assert_allclose(values[0], [1.0, -15.0], rtol=1e-6)
