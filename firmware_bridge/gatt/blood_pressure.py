"""Blood Pressure Measurement (0x2A35), Blood Pressure Service 1.0.

Flags (u8): bit 0 unit (0 = mmHg, 1 = kPa); bit 1 time stamp present; bit 2 pulse rate present;
bit 3 user id present; bit 4 measurement status present. Fields in order: systolic, diastolic, mean
arterial pressure (SFLOAT each), time stamp (Date Time), pulse rate (SFLOAT, bpm), user id (u8,
255 = unknown user), measurement status (u16 bit field).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from firmware_bridge.gatt.fields import DateTime, FieldReader, sig_uuid

BLOOD_PRESSURE_MEASUREMENT_UUID = sig_uuid(0x2A35)
NAME = "Blood Pressure Measurement"


class BloodPressureStatus(enum.IntFlag):
    BODY_MOVEMENT = 0x0001
    CUFF_TOO_LOOSE = 0x0002
    IRREGULAR_PULSE = 0x0004
    PULSE_RATE_EXCEEDS_UPPER = 0x0008  # bits 3-4 = 01: above upper limit
    PULSE_RATE_BELOW_LOWER = 0x0010  # bits 3-4 = 10: below lower limit
    IMPROPER_POSITION = 0x0020


@dataclass(frozen=True, slots=True)
class BloodPressureMeasurement:
    systolic: float
    diastolic: float
    mean_arterial: float
    unit: str  # "mmHg" or "kPa"
    timestamp: DateTime | None
    pulse_rate_bpm: float | None
    user_id: int | None
    status: BloodPressureStatus | None


def decode_blood_pressure_measurement(value: bytes | bytearray | memoryview) -> BloodPressureMeasurement:
    r = FieldReader(NAME, value)
    flags = r.u8("flags")
    systolic, diastolic, mean = r.sfloat("systolic"), r.sfloat("diastolic"), r.sfloat("mean arterial")
    stamp = r.date_time("time stamp") if flags & 0x02 else None
    pulse = r.sfloat("pulse rate") if flags & 0x04 else None
    user = r.u8("user id") if flags & 0x08 else None
    status = BloodPressureStatus(r.u16("measurement status")) if flags & 0x10 else None
    unit = "kPa" if flags & 0x01 else "mmHg"
    return BloodPressureMeasurement(systolic, diastolic, mean, unit, stamp, pulse, user, status)
