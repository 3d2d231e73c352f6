"""Heart Rate Measurement (0x2A37), Heart Rate Service 1.0.

Flags (u8): bit 0 value format (0 = u8, 1 = u16 bpm); bits 1-2 sensor contact (bit 2 = feature
supported, bit 1 = contact detected; meaningful only when supported); bit 3 energy expended present
(u16 kJ); bit 4 RR intervals present (u16 each, 1/1024 s, as many as fit in the value). Bits 5-7 RFU.
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware_bridge.gatt.fields import FieldReader, sig_uuid

HEART_RATE_MEASUREMENT_UUID = sig_uuid(0x2A37)
NAME = "Heart Rate Measurement"


@dataclass(frozen=True, slots=True)
class HeartRateMeasurement:
    bpm: int
    sensor_contact_supported: bool
    sensor_contact: bool | None  # None when the sensor does not support contact detection
    energy_expended_kj: int | None
    rr_intervals_s: tuple[float, ...]  # seconds, from 1/1024 s ticks
    rr_raw: tuple[int, ...]  # 1/1024 s ticks, exactly as sent


def decode_heart_rate_measurement(value: bytes | bytearray | memoryview) -> HeartRateMeasurement:
    r = FieldReader(NAME, value)
    flags = r.u8("flags")
    bpm = r.u16("heart rate (u16)") if flags & 0x01 else r.u8("heart rate (u8)")
    supported = bool(flags & 0x04)
    contact = bool(flags & 0x02) if supported else None
    energy = r.u16("energy expended") if flags & 0x08 else None
    rr: tuple[int, ...] = ()
    if flags & 0x10:
        rest = r.rest()
        if len(rest) % 2:
            raise r.error(f"RR interval field has odd length {len(rest)}")
        rr = tuple(int.from_bytes(rest[i : i + 2], "little") for i in range(0, len(rest), 2))
    return HeartRateMeasurement(
        bpm=bpm,
        sensor_contact_supported=supported,
        sensor_contact=contact,
        energy_expended_kj=energy,
        rr_intervals_s=tuple(t / 1024 for t in rr),
        rr_raw=rr,
    )
