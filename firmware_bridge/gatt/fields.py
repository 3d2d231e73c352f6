"""Bounds-checked reading of GATT characteristic values, shared by the profile decoders.

`FieldReader` walks a value left to right; any read past the end raises `GattDecodeError` naming the
characteristic, so decoders are straight-line code that mirrors the specification table. Octets after
the last defined field are ignored, as profiles may append fields in later versions. Also holds the
GATT Date Time (0x2A08) layout used by several health profiles.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass

from firmware_bridge.errors import GattDecodeError
from firmware_bridge.gatt.ieee11073 import decode_float, decode_sfloat

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_DATE_TIME = struct.Struct("<HBBBBB")


@dataclass(frozen=True, slots=True)
class DateTime:
    """GATT Date Time: year 0 or month/day 0 mean "not known" (kept as given, not validated away)."""

    year: int
    month: int
    day: int
    hours: int
    minutes: int
    seconds: int

    def to_datetime(self) -> dt.datetime | None:
        """Naive datetime (device local time), or None if the date is unknown or impossible."""
        try:
            return dt.datetime(self.year, self.month, self.day, self.hours, self.minutes, self.seconds)
        except ValueError:
            return None


class FieldReader:
    """Cursor over one characteristic value."""

    __slots__ = ("characteristic", "data", "pos")

    def __init__(self, characteristic: str, data: bytes | bytearray | memoryview) -> None:
        self.characteristic = characteristic
        self.data = bytes(data)
        self.pos = 0

    def error(self, reason: str) -> GattDecodeError:
        return GattDecodeError(self.characteristic, reason)

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise self.error(f"{what} needs bytes {self.pos}..{end - 1}, value has {len(self.data)}")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int(_U16.unpack(self.take(2, what))[0])

    def u24(self, what: str) -> int:
        return int.from_bytes(self.take(3, what), "little")

    def u32(self, what: str) -> int:
        return int(_U32.unpack(self.take(4, what))[0])

    def u64(self, what: str) -> int:
        return int.from_bytes(self.take(8, what), "little")

    def sfloat(self, what: str) -> float:
        return decode_sfloat(self.u16(what))

    def float32(self, what: str) -> float:
        return decode_float(self.u32(what))

    def date_time(self, what: str) -> DateTime:
        return DateTime(*_DATE_TIME.unpack(self.take(_DATE_TIME.size, what)))

    def rest(self) -> bytes:
        chunk = self.data[self.pos :]
        self.pos = len(self.data)
        return chunk

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos


def sig_uuid(short: int) -> str:
    """Full 128-bit UUID string of a Bluetooth SIG 16-bit UUID, as bleak names characteristics."""
    return f"0000{short:04x}-0000-1000-8000-00805f9b34fb"
