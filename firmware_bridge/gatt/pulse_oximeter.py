"""PLX Spot-check (0x2A5E) and PLX Continuous (0x2A5F) Measurements, Pulse Oximeter Service 1.0.

Continuous flags (u8): bit 0 SpO2PR-Fast present, bit 1 SpO2PR-Slow present, bit 2 measurement
status present, bit 3 device and sensor status present, bit 4 pulse amplitude index present.
Fields: SpO2PR-Normal (SpO2 %, PR bpm: two SFLOATs), then Fast and Slow pairs, measurement status
(u16), device and sensor status (u24), pulse amplitude index (SFLOAT, %).

Spot-check flags (u8): bit 0 time stamp present, bit 1 measurement status present, bit 2 device and
sensor status present, bit 3 pulse amplitude index present, bit 4 device clock is not set.
Fields: SpO2, PR (SFLOAT), time stamp (Date Time), measurement status, device and sensor status, PAI.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from firmware_bridge.gatt.fields import DateTime, FieldReader, sig_uuid

PLX_SPOT_CHECK_UUID = sig_uuid(0x2A5E)
PLX_CONTINUOUS_UUID = sig_uuid(0x2A5F)


class PlxMeasurementStatus(enum.IntFlag):
    MEASUREMENT_ONGOING = 1 << 5
    EARLY_ESTIMATED_DATA = 1 << 6
    VALIDATED_DATA = 1 << 7
    FULLY_QUALIFIED_DATA = 1 << 8
    DATA_FROM_STORAGE = 1 << 9
    DATA_FOR_DEMONSTRATION = 1 << 10
    DATA_FOR_TESTING = 1 << 11
    CALIBRATION_ONGOING = 1 << 12
    MEASUREMENT_UNAVAILABLE = 1 << 13
    QUESTIONABLE_MEASUREMENT = 1 << 14
    INVALID_MEASUREMENT = 1 << 15


class PlxDeviceSensorStatus(enum.IntFlag):
    EXTENDED_DISPLAY_UPDATE_ONGOING = 1 << 0
    EQUIPMENT_MALFUNCTION = 1 << 1
    SIGNAL_PROCESSING_IRREGULARITY = 1 << 2
    INADEQUATE_SIGNAL = 1 << 3
    POOR_SIGNAL = 1 << 4
    LOW_PERFUSION = 1 << 5
    ERRATIC_SIGNAL = 1 << 6
    NONPULSATILE_SIGNAL = 1 << 7
    QUESTIONABLE_PULSE = 1 << 8
    SIGNAL_ANALYSIS_ONGOING = 1 << 9
    SENSOR_INTERFERENCE = 1 << 10
    SENSOR_UNCONNECTED_TO_USER = 1 << 11
    UNKNOWN_SENSOR_CONNECTED = 1 << 12
    SENSOR_DISPLACED = 1 << 13
    SENSOR_MALFUNCTIONING = 1 << 14
    SENSOR_DISCONNECTED = 1 << 15


@dataclass(frozen=True, slots=True)
class SpO2PR:
    spo2_percent: float
    pulse_rate_bpm: float


@dataclass(frozen=True, slots=True)
class PlxContinuousMeasurement:
    normal: SpO2PR
    fast: SpO2PR | None
    slow: SpO2PR | None
    measurement_status: PlxMeasurementStatus | None
    device_sensor_status: PlxDeviceSensorStatus | None
    pulse_amplitude_index: float | None


@dataclass(frozen=True, slots=True)
class PlxSpotCheckMeasurement:
    reading: SpO2PR
    timestamp: DateTime | None
    measurement_status: PlxMeasurementStatus | None
    device_sensor_status: PlxDeviceSensorStatus | None
    pulse_amplitude_index: float | None
    device_clock_not_set: bool


def _pair(r: FieldReader, which: str) -> SpO2PR:
    return SpO2PR(r.sfloat(f"{which} SpO2"), r.sfloat(f"{which} PR"))


def _tail(
    r: FieldReader, status: bool, sensor: bool, pai: bool
) -> tuple[PlxMeasurementStatus | None, PlxDeviceSensorStatus | None, float | None]:
    ms = PlxMeasurementStatus(r.u16("measurement status")) if status else None
    ds = PlxDeviceSensorStatus(r.u24("device and sensor status")) if sensor else None
    index = r.sfloat("pulse amplitude index") if pai else None
    return ms, ds, index


def decode_plx_continuous(value: bytes | bytearray | memoryview) -> PlxContinuousMeasurement:
    r = FieldReader("PLX Continuous Measurement", value)
    flags = r.u8("flags")
    normal = _pair(r, "normal")
    fast = _pair(r, "fast") if flags & 0x01 else None
    slow = _pair(r, "slow") if flags & 0x02 else None
    ms, ds, pai = _tail(r, bool(flags & 0x04), bool(flags & 0x08), bool(flags & 0x10))
    return PlxContinuousMeasurement(normal, fast, slow, ms, ds, pai)


def decode_plx_spot_check(value: bytes | bytearray | memoryview) -> PlxSpotCheckMeasurement:
    r = FieldReader("PLX Spot-check Measurement", value)
    flags = r.u8("flags")
    reading = _pair(r, "spot-check")
    stamp = r.date_time("time stamp") if flags & 0x01 else None
    ms, ds, pai = _tail(r, bool(flags & 0x02), bool(flags & 0x04), bool(flags & 0x08))
    return PlxSpotCheckMeasurement(reading, stamp, ms, ds, pai, bool(flags & 0x10))
