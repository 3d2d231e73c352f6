"""Battery Level (0x2A19), Battery Service: one u8, state of charge in percent, 0-100.

Values above 100 are outside the characteristic's range and raise `GattDecodeError`.
"""

from __future__ import annotations

from firmware_bridge.gatt.fields import FieldReader, sig_uuid

BATTERY_LEVEL_UUID = sig_uuid(0x2A19)
NAME = "Battery Level"


def decode_battery_level(value: bytes | bytearray | memoryview) -> int:
    r = FieldReader(NAME, value)
    level = r.u8("battery level")
    if level > 100:
        raise r.error(f"battery level {level} % is above 100")
    return level
