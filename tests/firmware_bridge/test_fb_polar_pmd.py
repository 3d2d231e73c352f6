"""Polar PMD: control point requests/responses and data frames, vectors written from the layouts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge.errors import GattDecodeError
from firmware_bridge.gatt.polar_pmd import (
    PmdMeasurement,
    PmdOp,
    PmdSetting,
    PmdStatus,
    acc_start_request,
    decode_control_point_response,
    decode_pmd_data,
    decode_settings,
    ecg_start_request,
    settings_request,
    stop_request,
)

TS = "08 07 06 05 04 03 02 01"  # 0x0102030405060708 ns


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def test_start_requests_match_the_h10_byte_sequences() -> None:
    assert ecg_start_request(130, 14) == h("02 00 00 01 82 00 01 01 0e 00")
    assert acc_start_request(200, 16, 8) == h("02 02 00 01 c8 00 01 01 10 00 02 01 08 00")
    assert settings_request(PmdMeasurement.ECG) == h("01 00")
    assert stop_request(PmdMeasurement.ACC) == h("03 02")


def test_control_point_success_with_factor() -> None:
    r = decode_control_point_response(h("f0 02 02 00 00 05 01 00 00 00 3f"))
    assert (r.op, r.measurement, r.status, r.more, r.ok) == (
        PmdOp.REQUEST_MEASUREMENT_START,
        2,
        0,
        False,
        True,
    )
    assert decode_settings(r.parameters) == {PmdSetting.FACTOR: (0.5,)}


def test_control_point_settings_answer() -> None:
    r = decode_control_point_response(
        h("f0 01 02 00 00 00 02 19 00 c8 00 01 01 10 00 02 03 02 00 04 00 08 00")
    )
    assert decode_settings(r.parameters) == {
        PmdSetting.SAMPLE_RATE: (25, 200),
        PmdSetting.RESOLUTION: (16,),
        PmdSetting.RANGE: (2, 4, 8),
    }


def test_control_point_error_status() -> None:
    r = decode_control_point_response(h("f0 02 00 06"))
    assert (r.status, r.ok, r.more, r.parameters) == (PmdStatus.ALREADY_IN_STATE, False, False, b"")


@pytest.mark.parametrize("value", ["", "f1 02 00 00", "f0 02", "f0 01 00 00 00 09 01 00"])
def test_control_point_malformed(value: str) -> None:
    with pytest.raises(GattDecodeError, match="PMD control point"):
        r = decode_control_point_response(h(value))
        decode_settings(r.parameters)


def test_ecg_raw_frame_type_0() -> None:
    f = decode_pmd_data(h(f"00 {TS} 00 64 00 00 9c ff ff ff ff 7f"))
    assert (f.measurement, f.timestamp_ns, f.frame_type, f.compressed) == (
        PmdMeasurement.ECG,
        0x0102030405060708,
        0,
        False,
    )
    np.testing.assert_array_equal(f.samples, [[100], [-100], [8388607]])
    times = f.sample_timestamps_ns(130.0)
    assert times[-1] == float(0x0102030405060708)
    assert times[-1] - times[0] == pytest.approx(2e9 / 130, rel=1e-6)


@pytest.mark.parametrize(
    ("frame_type", "content", "expected"),
    [
        ("00", "01 ff 80", [[1, -1, -128]]),
        ("01", "f6 ff 14 00 e8 03 00 00 ff ff 18 fc", [[-10, 20, 1000], [0, -1, -1000]]),
        ("02", "01 00 00 fe ff ff 45 23 01", [[1, -2, 0x012345]]),
    ],
)
def test_acc_raw_frame_types(frame_type: str, content: str, expected: list[list[int]]) -> None:
    f = decode_pmd_data(h(f"02 {TS} {frame_type} {content}"))
    assert f.measurement is PmdMeasurement.ACC and not f.compressed
    np.testing.assert_array_equal(f.samples, expected)


def test_acc_delta_compressed_frame() -> None:
    # reference (100, -50, 1000); block of 2 samples × 4-bit deltas; block of 1 sample × 2-bit deltas
    f = decode_pmd_data(h(f"02 {TS} 81 64 00 ce ff e8 03 04 02 e1 f3 70 02 01 2d"))
    assert f.compressed and f.frame_type == 1
    np.testing.assert_array_equal(
        f.samples, [[100, -50, 1000], [101, -52, 1003], [100, -52, 1010], [101, -53, 1008]]
    )


@pytest.mark.parametrize(
    "value",
    [
        "",
        f"00 {TS}",  # no frame type
        f"00 {TS} 00 64 00 00 9c",  # ECG not a multiple of 3 bytes
        f"01 {TS} 00 00 00 00",  # PPG not supported
        f"00 {TS} 80 00 00 00",  # compressed ECG not supported
        f"07 {TS} 00",  # unknown measurement type
        f"02 {TS} 81 64 00 ce ff",  # delta reference cut short
        f"02 {TS} 81 64 00 ce ff e8 03 00 02",  # zero delta width
        f"02 {TS} 81 64 00 ce ff e8 03 04 02 e1",  # delta bits cut short
        f"02 {TS} 01 f6 ff 14 00",  # ACC not a multiple of 6 bytes
    ],
)
def test_pmd_data_malformed(value: str) -> None:
    with pytest.raises(GattDecodeError, match="PMD data"):
        decode_pmd_data(h(value))


def _delta_encode(samples: np.ndarray, block: int) -> bytes:
    """Test-side PMD delta encoder: 16-bit reference, then blocks of bit-packed signed deltas."""
    out = bytearray(samples[0].astype("<i2").tobytes())
    deltas = np.diff(samples, axis=0)
    for start in range(0, len(deltas), block):
        chunk = deltas[start : start + block]
        width = max(1, int(max(abs(int(chunk.min())), abs(int(chunk.max())) + 1)).bit_length() + 1)
        bits = ((chunk.reshape(-1, 1) >> np.arange(width)) & 1).astype(np.uint8).ravel()
        out += bytes((width, len(chunk))) + np.packbits(bits, bitorder="little").tobytes()
    return bytes(out)


@given(
    st.lists(st.tuples(*[st.integers(-8000, 8000)] * 3), min_size=1, max_size=60),
    st.integers(1, 20),
)
def test_acc_delta_frames_round_trip(rows: list[tuple[int, int, int]], block: int) -> None:
    samples = np.array(rows, dtype=np.int64)
    value = bytes.fromhex(f"02 {TS} 81") + _delta_encode(samples, block)
    np.testing.assert_array_equal(decode_pmd_data(value).samples, samples)
