"""IEEE 11073-20601 SFLOAT (16-bit) and FLOAT (32-bit) as used by the Bluetooth health profiles (GSS).

value = mantissa × 10^exponent, both two's complement: SFLOAT has a 4-bit exponent and a 12-bit
mantissa, FLOAT an 8-bit exponent and a 24-bit mantissa. Reserved raw values (exponent 0) encode
NaN, NRes (not at this resolution), +INF, −INF and one reserved code; they decode to `math.nan` or
`±math.inf`, and `sfloat_special` / `float_special` tell them apart when a caller must. Division by
a power of ten (rather than multiplying by 10^-n) gives the double nearest the decimal value, so
986 × 10⁻¹ decodes to exactly 98.6.
"""

from __future__ import annotations

import enum
import math


class Special(enum.Enum):
    NAN = "nan"
    NRES = "nres"
    PLUS_INF = "+inf"
    MINUS_INF = "-inf"
    RESERVED = "reserved"


_SFLOAT_SPECIALS = {
    0x07FF: Special.NAN,
    0x0800: Special.NRES,
    0x07FE: Special.PLUS_INF,
    0x0802: Special.MINUS_INF,
    0x0801: Special.RESERVED,
}
_FLOAT_SPECIALS = {
    0x007FFFFF: Special.NAN,
    0x00800000: Special.NRES,
    0x007FFFFE: Special.PLUS_INF,
    0x00800002: Special.MINUS_INF,
    0x00800001: Special.RESERVED,
}
_SPECIAL_VALUE = {
    Special.NAN: math.nan,
    Special.NRES: math.nan,
    Special.RESERVED: math.nan,
    Special.PLUS_INF: math.inf,
    Special.MINUS_INF: -math.inf,
}


def _scaled(mantissa: int, exponent: int) -> float:
    if exponent >= 0:
        return float(mantissa * 10**exponent)
    return float(mantissa / 10**-exponent)


def sfloat_special(raw: int) -> Special | None:
    return _SFLOAT_SPECIALS.get(raw & 0xFFFF)


def float_special(raw: int) -> Special | None:
    return _FLOAT_SPECIALS.get(raw & 0xFFFFFFFF)


def decode_sfloat(raw: int) -> float:
    """Value of a 16-bit SFLOAT given as an unsigned integer."""
    special = _SFLOAT_SPECIALS.get(raw)
    if special is not None:
        return _SPECIAL_VALUE[special]
    exponent = raw >> 12
    mantissa = raw & 0x0FFF
    exponent -= (exponent & 0x8) << 1
    mantissa -= (mantissa & 0x800) << 1
    return _scaled(mantissa, exponent)


def decode_float(raw: int) -> float:
    """Value of a 32-bit FLOAT given as an unsigned integer."""
    special = _FLOAT_SPECIALS.get(raw)
    if special is not None:
        return _SPECIAL_VALUE[special]
    exponent = raw >> 24
    mantissa = raw & 0xFFFFFF
    exponent -= (exponent & 0x80) << 1
    mantissa -= (mantissa & 0x800000) << 1
    return _scaled(mantissa, exponent)


def encode_sfloat(mantissa: int, exponent: int) -> int:
    """Raw SFLOAT for mantissa × 10^exponent (for emulators and test vectors)."""
    if not (-2048 <= mantissa <= 2047 and -8 <= exponent <= 7):
        raise ValueError(f"SFLOAT cannot hold {mantissa}e{exponent}")
    return ((exponent & 0xF) << 12) | (mantissa & 0xFFF)


def encode_float(mantissa: int, exponent: int) -> int:
    """Raw FLOAT for mantissa × 10^exponent (for emulators and test vectors)."""
    if not (-(2**23) <= mantissa < 2**23 and -128 <= exponent <= 127):
        raise ValueError(f"FLOAT cannot hold {mantissa}e{exponent}")
    return ((exponent & 0xFF) << 24) | (mantissa & 0xFFFFFF)
