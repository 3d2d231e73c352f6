"""Unit tests of the serial frame codec: exact bytes, each error class, sequence tracking, scaling."""

from __future__ import annotations

import numpy as np
import pytest
from cobs import cobs  # type: ignore[import-untyped]

from firmware_bridge.decoding import NEED_DATA
from firmware_bridge.errors import ChannelMapError
from firmware_bridge.frame_codec import (
    Frame,
    FrameDecoder,
    cobs_max_encoded,
    crc16_ccitt_false,
    encode_frame,
)
from firmware_bridge.frame_messages import (
    HEADER,
    MAX_FRAME_SIZE,
    ChannelSpec,
    DataBlock,
    Event,
    EventKind,
    Hello,
    PayloadError,
    SampleType,
)
from firmware_bridge.physical import channel_names, sample_times_us, to_physical


def drain(dec: FrameDecoder) -> list[Frame]:
    out = []
    while (f := dec.next_frame()) is not NEED_DATA:
        out.append(f)
    return out


def decode_all(data: bytes) -> tuple[list[Frame], FrameDecoder]:
    dec = FrameDecoder()
    dec.feed(data)
    return drain(dec), dec


def test_crc_check_value_of_ccitt_false() -> None:
    assert crc16_ccitt_false(b"123456789") == 0x29B1


def test_documented_byte_example_decodes_exactly() -> None:
    # the worked example in docs/serial-protocol.md: EVENT BATTERY_LOW, seq 7, t = 1_000_000 µs
    wire = bytes.fromhex("00 04 01 03 07 04 40 42 0f 01 01 01 01 03 03 0f 03 74 0e 01 03 80 a7 00")
    frames, dec = decode_all(wire)
    assert frames == [Frame(7, 1_000_000, Event(EventKind.BATTERY_LOW, 15, 3700))]
    assert encode_frame(Event(EventKind.BATTERY_LOW, 15, 3700), 7, 1_000_000) == wire
    assert dec.stats.frames == 1 and dec.stats.rejected == 0


def test_data_block_round_trip_and_zero_copy_view() -> None:
    block = DataBlock(123, SampleType.INT32, (2, 0), np.array([[1, -2], [2**31 - 1, -(2**31)]]))
    (frame,), _ = decode_all(encode_frame(block, 9, 10))
    assert frame.message == block
    assert isinstance(frame.message, DataBlock)
    assert frame.message.samples.dtype == np.dtype("<i4")
    assert not frame.message.samples.flags.writeable


def test_bad_crc_is_counted_and_next_frame_survives() -> None:
    good = encode_frame(Event(EventKind.FAULT, 3, 4), 0, 0)
    raw = bytearray(cobs.decode(good[1:-1]))
    raw[HEADER.size] ^= 0x01  # flip one payload bit, keep COBS valid
    bad = b"\x00" + cobs.encode(bytes(raw)) + b"\x00"
    frames, dec = decode_all(bad + encode_frame(Event(EventKind.FAULT, 3, 5), 1, 1))
    assert [f.message for f in frames] == [Event(EventKind.FAULT, 3, 5)]
    assert dec.stats.bad_crc == 1 and dec.stats.garbage_bytes == len(bad) - 2


def test_truncated_frame_then_valid_frame() -> None:
    a = encode_frame(Event(EventKind.BUTTON, 1, 2), 0, 0)
    b = encode_frame(Event(EventKind.BUTTON, 1, 3), 1, 1)
    frames, dec = decode_all(a[:9] + b)
    assert [f.message for f in frames] == [Event(EventKind.BUTTON, 1, 3)]
    assert dec.stats.truncated == 1


def test_oversized_chunk_is_skipped_to_next_delimiter_across_feeds() -> None:
    dec = FrameDecoder()
    junk = b"\x01" * (cobs_max_encoded(MAX_FRAME_SIZE) + 50)
    for i in range(0, len(junk), 100):  # arrives in pieces: detected before its end is seen
        dec.feed(junk[i : i + 100])
        assert dec.next_frame() is NEED_DATA
    dec.feed(encode_frame(Event(EventKind.BUTTON, 1, 1), 0, 0))
    assert [f.message for f in drain(dec)] == [Event(EventKind.BUTTON, 1, 1)]
    assert dec.stats.oversized == 1
    assert dec.stats.garbage_bytes == len(junk)
    assert dec.buffered == 0


def test_encoder_refuses_oversized_frame() -> None:
    with pytest.raises(ValueError, match="MAX_FRAME_SIZE"):
        encode_frame(DataBlock(0, SampleType.INT16, (0,), np.zeros((600, 1), dtype=np.int16)), 0, 0)


def test_bad_version_and_bad_payload_are_counted_separately() -> None:
    def frame_from_raw(body: bytes) -> bytes:
        raw = body + crc16_ccitt_false(body).to_bytes(2, "little")
        return b"\x00" + bytes(cobs.encode(raw)) + b"\x00"

    wrong_version = frame_from_raw(HEADER.pack(9, 3, 0, 0) + bytes(7))
    unknown_type = frame_from_raw(HEADER.pack(1, 0x55, 0, 0))
    short_event = frame_from_raw(HEADER.pack(1, 3, 0, 0) + b"\x01")
    frames, dec = decode_all(wrong_version + unknown_type + short_event)
    assert frames == []
    assert (dec.stats.bad_version, dec.stats.bad_payload) == (1, 2)


def test_sequence_gap_with_wraparound_and_hello_restart() -> None:
    ev = Event(EventKind.BUTTON, 0, 0)
    hello = Hello("d", (1, 0, 0), ())
    wire = (
        encode_frame(ev, 0xFFFE, 0)
        + encode_frame(ev, 0xFFFF, 0)
        + encode_frame(ev, 2, 0)  # 0 and 1 lost across the wrap
        + encode_frame(hello, 0, 0)  # reboot: no gap reported
        + encode_frame(ev, 1, 0)
        + encode_frame(ev, 1, 0)  # duplicate (same sequence number and time): dropped, not a gap
        + encode_frame(ev, 1, 7)  # the sequence went back with another time: a restart without HELLO
    )
    frames, dec = decode_all(wire)
    assert [(f.seq, f.gap_before) for f in frames] == [
        (0xFFFE, 0),
        (0xFFFF, 0),
        (2, 2),
        (0, 0),
        (1, 0),
        (1, 0),
    ]
    assert frames[-1].device_time_us == 7
    stats = dec.stats
    assert (stats.seq_gaps, stats.lost_frames, stats.seq_backwards, stats.duplicates) == (1, 2, 1, 1)
    assert stats.frames == 6 and stats.bytes_in == stats.frame_bytes + stats.delimiters


def test_to_physical_applies_scale_and_offset_per_channel() -> None:
    hello = Hello(
        "therm-7",
        (1, 0, 0),
        (
            ChannelSpec("temp", "°C", SampleType.INT16, 10.0, 0.5, -40.0),
            ChannelSpec("vib", "g", SampleType.INT16, 10.0, 0.25),
        ),
    )
    block = DataBlock(5_000_000, SampleType.INT16, (1, 0), np.array([[4, 100], [-8, 120]]))
    assert channel_names(block, hello) == ("vib", "temp")
    np.testing.assert_array_equal(to_physical(block, hello), [[1.0, 10.0], [-2.0, 20.0]])
    np.testing.assert_array_equal(sample_times_us(block, hello), [5_000_000.0, 5_100_000.0])


def test_to_physical_rejects_undeclared_channel_and_wrong_type() -> None:
    hello = Hello("dev", (1, 0, 0), (ChannelSpec("a", "u", SampleType.INT16, 1.0, 1.0),))
    with pytest.raises(ChannelMapError, match="channel 3"):
        to_physical(DataBlock(0, SampleType.INT16, (3,), np.zeros((1, 1), dtype=np.int16)), hello)
    with pytest.raises(ChannelMapError, match="INT32"):
        to_physical(DataBlock(0, SampleType.INT32, (0,), np.zeros((1, 1), dtype=np.int32)), hello)


def test_data_block_validates_samples_without_touching_the_callers_array() -> None:
    mine = np.array([[1, 2]], dtype=np.int16)
    block = DataBlock(0, SampleType.INT16, (0, 1), mine)
    assert mine.flags.writeable and not block.samples.flags.writeable
    with pytest.raises(PayloadError, match="range"):
        DataBlock(0, SampleType.INT16, (0,), np.array([[40000]]))
    with pytest.raises(PayloadError, match="integers"):
        DataBlock(0, SampleType.INT16, (0,), np.array([[1.5]]))
    with pytest.raises(PayloadError, match="twice"):
        DataBlock(0, SampleType.INT16, (1, 1), np.zeros((1, 2), dtype=np.int16))


def test_the_tail_of_a_frame_before_the_first_delimiter_is_resync_not_a_crc_error() -> None:
    """A port opened while the device streams (pyserial flushes the input at open, a pty or UART buffer
    full of a device that sent for a while) starts in the middle of a frame: every start of the
    emulated vibration node showed `bad_crc 1` (new-user review S3). Its tail is counted as resync."""
    block = DataBlock(0, SampleType.INT16, (0, 1, 2), np.arange(480).reshape(160, 3))
    first, second = encode_frame(block, 0, 0), encode_frame(block, 1, 100_000)
    tail = first[len(first) // 3 :]  # ends with the frame's closing delimiter
    frames, dec = decode_all(tail + second)
    assert [f.seq for f in frames] == [1]
    assert dec.stats.rejected == 0 and dec.stats.bad_crc == 0
    assert dec.stats.resync_bytes == len(tail) - 1 == dec.stats.garbage_bytes
    # Once in step, a damaged frame is an error again.
    raw = bytearray(cobs.decode(second[1:-1]))
    raw[HEADER.size] ^= 0x01
    dec.feed(b"\x00" + cobs.encode(bytes(raw)) + b"\x00")
    assert drain(dec) == [] and dec.stats.bad_crc == 1
