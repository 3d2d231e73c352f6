"""Polar Measurement Data (PMD) service of the Polar H10 and other Polar sensors.

Layouts follow Polar's public BLE SDK (polarofficial/polar-ble-sdk, the Android `PmdDataFrame`,
`PmdSetting`, `PmdControlPointResponse` and `EcgData` / `AccData` parsers):

* Control point requests: ``op | measurement type | settings…`` where each setting is
  ``setting type | count (1) | value`` little-endian; field sizes: sample rate, resolution and range
  u16, range in milli-units u32, channels u8, factor f32.
  Start ECG 130 Hz, 14 bit: ``02 00 00 01 82 00 01 01 0E 00``.
* Control point response: ``F0 | op | measurement type | status | more | parameters…``; the
  parameters of a GET_MEASUREMENT_SETTINGS answer, or of a start answer (the scale factor), are
  again a settings list, with a count of values per setting.
* Data notification: ``measurement type | timestamp u64 ns (of the last sample, epoch 2000-01-01)
  | frame type | samples…``. Bit 7 of the frame type marks a delta-compressed frame.
  ECG raw type 0: 3-byte signed samples in µV. ACC raw types 0/1/2: x, y, z of 1/2/3 signed bytes
  in mG. ACC compressed types 0x80/0x81: a 16-bit reference sample per axis, then blocks of
  ``delta bit width u8 | sample count u8 | deltas``, bit-packed LSB first, each delta signed and
  added to the previous sample. Compressed samples are raw counts: multiply by the factor from the
  start response.

Decoding is vectorised with numpy; anything malformed or not supported raises `GattDecodeError`.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from firmware_bridge.errors import GattDecodeError
from firmware_bridge.gatt.fields import FieldReader

PMD_SERVICE_UUID = "fb005c80-02e7-f387-1cad-8acd2d8df0c8"
PMD_CONTROL_POINT_UUID = "fb005c81-02e7-f387-1cad-8acd2d8df0c8"
PMD_DATA_UUID = "fb005c82-02e7-f387-1cad-8acd2d8df0c8"
CP_RESPONSE_CODE = 0xF0
DATA_NAME = "PMD data"
CP_NAME = "PMD control point"


class PmdMeasurement(enum.IntEnum):
    ECG = 0
    PPG = 1
    ACC = 2
    PPI = 3
    GYRO = 5
    MAG = 6


class PmdOp(enum.IntEnum):
    GET_MEASUREMENT_SETTINGS = 1
    REQUEST_MEASUREMENT_START = 2
    STOP_MEASUREMENT = 3


class PmdSetting(enum.IntEnum):
    SAMPLE_RATE = 0
    RESOLUTION = 1
    RANGE = 2
    RANGE_MILLIUNIT = 3
    CHANNELS = 4
    FACTOR = 5


class PmdStatus(enum.IntEnum):
    SUCCESS = 0
    INVALID_OP_CODE = 1
    INVALID_MEASUREMENT_TYPE = 2
    NOT_SUPPORTED = 3
    INVALID_LENGTH = 4
    INVALID_PARAMETER = 5
    ALREADY_IN_STATE = 6
    INVALID_RESOLUTION = 7
    INVALID_SAMPLE_RATE = 8
    INVALID_RANGE = 9
    INVALID_MTU = 10
    INVALID_NUMBER_OF_CHANNELS = 11
    INVALID_STATE = 12
    DEVICE_IN_CHARGER = 13
    DISK_FULL = 14


_FIELD_SIZE = {
    PmdSetting.SAMPLE_RATE: 2,
    PmdSetting.RESOLUTION: 2,
    PmdSetting.RANGE: 2,
    PmdSetting.RANGE_MILLIUNIT: 4,
    PmdSetting.CHANNELS: 1,
    PmdSetting.FACTOR: 4,
}


def start_request(measurement: PmdMeasurement, settings: Mapping[PmdSetting, int]) -> bytes:
    """Control point write that starts `measurement` with the given settings (one value each)."""
    out = bytearray((PmdOp.REQUEST_MEASUREMENT_START, measurement))
    for setting, value in settings.items():
        if setting is PmdSetting.FACTOR:
            raise ValueError("FACTOR is reported by the sensor, never requested")
        out += bytes((setting, 1)) + value.to_bytes(_FIELD_SIZE[setting], "little")
    return bytes(out)


def ecg_start_request(sample_rate_hz: int = 130, resolution_bits: int = 14) -> bytes:
    return start_request(
        PmdMeasurement.ECG, {PmdSetting.SAMPLE_RATE: sample_rate_hz, PmdSetting.RESOLUTION: resolution_bits}
    )


def acc_start_request(sample_rate_hz: int = 200, resolution_bits: int = 16, range_g: int = 8) -> bytes:
    return start_request(
        PmdMeasurement.ACC,
        {
            PmdSetting.SAMPLE_RATE: sample_rate_hz,
            PmdSetting.RESOLUTION: resolution_bits,
            PmdSetting.RANGE: range_g,
        },
    )


def settings_request(measurement: PmdMeasurement) -> bytes:
    return bytes((PmdOp.GET_MEASUREMENT_SETTINGS, measurement))


def stop_request(measurement: PmdMeasurement) -> bytes:
    return bytes((PmdOp.STOP_MEASUREMENT, measurement))


@dataclass(frozen=True, slots=True)
class PmdControlPointResponse:
    op: int
    measurement: int
    status: PmdStatus | int  # int for a status code newer than this decoder
    more: bool
    parameters: bytes

    @property
    def ok(self) -> bool:
        return self.status == PmdStatus.SUCCESS


def decode_control_point_response(value: bytes | bytearray | memoryview) -> PmdControlPointResponse:
    r = FieldReader(CP_NAME, value)
    code = r.u8("response code")
    if code != CP_RESPONSE_CODE:
        raise r.error(f"response code 0x{code:02x}, expected 0x{CP_RESPONSE_CODE:02x}")
    op, measurement, status_code = r.u8("op code"), r.u8("measurement type"), r.u8("status")
    status: PmdStatus | int = (
        PmdStatus(status_code) if status_code in PmdStatus._value2member_map_ else status_code
    )
    more, params = False, b""
    if status_code == PmdStatus.SUCCESS and r.remaining:
        more = r.u8("more") != 0
        params = r.rest()
    return PmdControlPointResponse(op, measurement, status, more, params)


def decode_settings(parameters: bytes) -> dict[PmdSetting, tuple[float, ...]]:
    """Settings list of a response: each setting with all its values (FACTOR as a float)."""
    r = FieldReader(CP_NAME, parameters)
    out: dict[PmdSetting, tuple[float, ...]] = {}
    while r.remaining:
        code = r.u8("setting type")
        if code not in PmdSetting._value2member_map_:
            raise r.error(f"unknown setting type {code}")
        setting = PmdSetting(code)
        count = r.u8("setting count")
        values: list[float] = []
        for _ in range(count):
            if setting is PmdSetting.FACTOR:
                values.append(struct.unpack("<f", r.u32("factor").to_bytes(4, "little"))[0])
            elif _FIELD_SIZE[setting] == 1:
                values.append(r.u8(setting.name))
            elif _FIELD_SIZE[setting] == 2:
                values.append(r.u16(setting.name))
            else:
                values.append(r.u32(setting.name))
        out[setting] = tuple(values)
    return out


@dataclass(frozen=True, slots=True, eq=False)
class PmdDataFrame:
    """`samples[i, c]`: sample i of channel c (ECG: 1 channel µV; ACC: x, y, z in mG or raw counts)."""

    measurement: PmdMeasurement
    timestamp_ns: int  # time of the last sample, ns since 2000-01-01 (sensor clock)
    frame_type: int  # without the compression bit
    compressed: bool
    samples: npt.NDArray[np.int32] = field(repr=False)

    def sample_timestamps_ns(self, sample_rate_hz: float) -> npt.NDArray[np.float64]:
        n = self.samples.shape[0]
        offsets: npt.NDArray[np.float64] = (n - 1 - np.arange(n, dtype=np.float64)) * (1e9 / sample_rate_hz)
        return np.float64(self.timestamp_ns) - offsets


def _signed_le(content: bytes, width: int, channels: int) -> npt.NDArray[np.int32]:
    if len(content) % (width * channels):
        raise GattDecodeError(
            DATA_NAME, f"{len(content)} sample bytes is not a multiple of {width * channels}"
        )
    if width in (1, 2):
        arr: npt.NDArray[Any] = np.frombuffer(content, dtype="<i1" if width == 1 else "<i2")
        return arr.astype(np.int32).reshape(-1, channels)
    b = np.frombuffer(content, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
    v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
    return ((v ^ 0x800000) - 0x800000).reshape(-1, channels)


def _delta_decode(content: bytes, channels: int, resolution_bits: int) -> npt.NDArray[np.int32]:
    r = FieldReader(DATA_NAME, content)
    ref_width = (resolution_bits + 7) // 8
    ref = _signed_le(r.take(ref_width * channels, "reference sample"), ref_width, channels)[0]
    rows: list[npt.NDArray[np.int64]] = [ref.astype(np.int64)[None, :]]
    while r.remaining:
        width, count = r.u8("delta bit width"), r.u8("delta sample count")
        if not 1 <= width <= 32:
            raise r.error(f"delta bit width {width} outside 1..32")
        n_bits = width * count * channels
        packed = r.take((n_bits + 7) // 8, "delta bits")
        bits = np.unpackbits(np.frombuffer(packed, dtype=np.uint8), bitorder="little")[:n_bits]
        weights = np.left_shift(np.int64(1), np.arange(width, dtype=np.int64))
        deltas = bits.reshape(-1, width).astype(np.int64) @ weights
        deltas -= (deltas >> (width - 1) & 1) << width  # sign-extend
        rows.append(deltas.reshape(count, channels))
    totals = np.cumsum(np.concatenate(rows), axis=0)
    if totals.size and (totals.min() < -(2**31) or totals.max() >= 2**31):
        raise GattDecodeError(DATA_NAME, "delta-decoded samples overflow 32 bits")
    return totals.astype(np.int32)


_RAW_LAYOUTS = {  # (measurement, frame type) → (bytes per value, channels)
    (PmdMeasurement.ECG, 0): (3, 1),
    (PmdMeasurement.ACC, 0): (1, 3),
    (PmdMeasurement.ACC, 1): (2, 3),
    (PmdMeasurement.ACC, 2): (3, 3),
}
_COMPRESSED_LAYOUTS = {  # (measurement, frame type) → (channels, reference resolution bits)
    (PmdMeasurement.ACC, 0): (3, 16),
    (PmdMeasurement.ACC, 1): (3, 16),
}


def decode_pmd_data(value: bytes | bytearray | memoryview) -> PmdDataFrame:
    r = FieldReader(DATA_NAME, value)
    code = r.u8("measurement type")
    if code not in PmdMeasurement._value2member_map_:
        raise r.error(f"unknown measurement type {code}")
    measurement = PmdMeasurement(code)
    timestamp = r.u64("timestamp")
    type_byte = r.u8("frame type")
    frame_type, compressed = type_byte & 0x7F, bool(type_byte & 0x80)
    content = r.rest()
    key = (measurement, frame_type)
    if compressed and key in _COMPRESSED_LAYOUTS:
        channels, resolution = _COMPRESSED_LAYOUTS[key]
        samples = _delta_decode(content, channels, resolution)
    elif not compressed and key in _RAW_LAYOUTS:
        width, channels = _RAW_LAYOUTS[key]
        samples = _signed_le(content, width, channels)
    else:
        kind = "compressed" if compressed else "raw"
        raise r.error(f"{measurement.name} {kind} frame type {frame_type} is not supported")
    samples.flags.writeable = False
    return PmdDataFrame(measurement, timestamp, frame_type, compressed, samples)
