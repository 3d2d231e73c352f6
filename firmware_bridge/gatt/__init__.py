"""Pure decoders of BLE GATT characteristic values: bytes in, a typed frozen value out.

Each decoder raises `firmware_bridge.errors.GattDecodeError` (a `ValueError`) on a malformed value;
the agent's BLE source counts those per device. `DECODERS` maps the 128-bit characteristic UUIDs
(as bleak reports them) of the standard health profiles to their decoder.
"""

from __future__ import annotations

from collections.abc import Callable

from firmware_bridge.gatt.battery import BATTERY_LEVEL_UUID, decode_battery_level
from firmware_bridge.gatt.blood_pressure import (
    BLOOD_PRESSURE_MEASUREMENT_UUID,
    decode_blood_pressure_measurement,
)
from firmware_bridge.gatt.heart_rate import HEART_RATE_MEASUREMENT_UUID, decode_heart_rate_measurement
from firmware_bridge.gatt.polar_pmd import PMD_DATA_UUID, decode_pmd_data
from firmware_bridge.gatt.pulse_oximeter import (
    PLX_CONTINUOUS_UUID,
    PLX_SPOT_CHECK_UUID,
    decode_plx_continuous,
    decode_plx_spot_check,
)
from firmware_bridge.gatt.thermometer import TEMPERATURE_MEASUREMENT_UUID, decode_temperature_measurement

DECODERS: dict[str, Callable[[bytes], object]] = {
    HEART_RATE_MEASUREMENT_UUID: decode_heart_rate_measurement,
    PLX_CONTINUOUS_UUID: decode_plx_continuous,
    PLX_SPOT_CHECK_UUID: decode_plx_spot_check,
    TEMPERATURE_MEASUREMENT_UUID: decode_temperature_measurement,
    BLOOD_PRESSURE_MEASUREMENT_UUID: decode_blood_pressure_measurement,
    BATTERY_LEVEL_UUID: decode_battery_level,
    PMD_DATA_UUID: decode_pmd_data,
}

__all__ = ["DECODERS"]
