"""Temperature Measurement (0x2A1C), Health Thermometer Service 1.0.

Flags (u8): bit 0 unit (0 = °C, 1 = °F); bit 1 time stamp present (Date Time, 7 bytes); bit 2
temperature type present (u8, location on the body). The temperature is an IEEE-11073 32-bit FLOAT.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from firmware_bridge.gatt.fields import DateTime, FieldReader, sig_uuid

TEMPERATURE_MEASUREMENT_UUID = sig_uuid(0x2A1C)
NAME = "Temperature Measurement"


class TemperatureType(enum.IntEnum):
    ARMPIT = 1
    BODY = 2
    EAR = 3
    FINGER = 4
    GASTRO_INTESTINAL = 5
    MOUTH = 6
    RECTUM = 7
    TOE = 8
    TYMPANUM = 9


@dataclass(frozen=True, slots=True)
class TemperatureMeasurement:
    value: float  # in `unit`; nan / ±inf for the FLOAT special values
    unit: str  # "°C" or "°F"
    timestamp: DateTime | None
    temperature_type: TemperatureType | int | None  # int when the code is not one the spec defines

    @property
    def celsius(self) -> float:
        return self.value if self.unit == "°C" else (self.value - 32.0) * 5.0 / 9.0


def decode_temperature_measurement(value: bytes | bytearray | memoryview) -> TemperatureMeasurement:
    r = FieldReader(NAME, value)
    flags = r.u8("flags")
    temperature = r.float32("temperature")
    stamp = r.date_time("time stamp") if flags & 0x02 else None
    kind: TemperatureType | int | None = None
    if flags & 0x04:
        code = r.u8("temperature type")
        kind = TemperatureType(code) if code in TemperatureType._value2member_map_ else code
    return TemperatureMeasurement(temperature, "°F" if flags & 0x01 else "°C", stamp, kind)
