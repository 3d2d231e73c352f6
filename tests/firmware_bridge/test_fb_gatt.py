"""Byte-exact vectors for the GATT decoders, written by hand from the Bluetooth SIG layouts."""

from __future__ import annotations

import math

import pytest

from firmware_bridge.errors import GattDecodeError
from firmware_bridge.gatt import DECODERS
from firmware_bridge.gatt.battery import decode_battery_level
from firmware_bridge.gatt.blood_pressure import BloodPressureStatus, decode_blood_pressure_measurement
from firmware_bridge.gatt.fields import DateTime
from firmware_bridge.gatt.heart_rate import HeartRateMeasurement, decode_heart_rate_measurement
from firmware_bridge.gatt.ieee11073 import (
    Special,
    decode_float,
    decode_sfloat,
    encode_float,
    encode_sfloat,
    float_special,
    sfloat_special,
)
from firmware_bridge.gatt.pulse_oximeter import (
    PlxDeviceSensorStatus,
    PlxMeasurementStatus,
    SpO2PR,
    decode_plx_continuous,
    decode_plx_spot_check,
)
from firmware_bridge.gatt.thermometer import TemperatureType, decode_temperature_measurement

STAMP = DateTime(2024, 11, 23, 20, 30, 0)  # e8 07 0b 17 14 1e 00


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# --- IEEE 11073 SFLOAT / FLOAT ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [(0x0062, 98.0), (0xF3DA, 98.6), (0x0FFB, -5.0), (0x200C, 1200.0), (0xF019, 2.5), (0x0000, 0.0)],
)
def test_sfloat_values(raw: int, value: float) -> None:
    assert decode_sfloat(raw) == value


@pytest.mark.parametrize(
    ("raw", "special", "is_nan", "inf_sign"),
    [
        (0x07FF, Special.NAN, True, 0),
        (0x0800, Special.NRES, True, 0),
        (0x0801, Special.RESERVED, True, 0),
        (0x07FE, Special.PLUS_INF, False, 1),
        (0x0802, Special.MINUS_INF, False, -1),
    ],
)
def test_sfloat_specials(raw: int, special: Special, is_nan: bool, inf_sign: int) -> None:
    value = decode_sfloat(raw)
    assert sfloat_special(raw) is special
    assert math.isnan(value) == is_nan
    if inf_sign:
        assert value == inf_sign * math.inf
    assert sfloat_special(0x0062) is None


@pytest.mark.parametrize(
    ("raw", "value"), [(0xFF00016D, 36.5), (0xFF0003DA, 98.6), (0x00FFFFD8, -40.0), (0x02000003, 300.0)]
)
def test_float_values(raw: int, value: float) -> None:
    assert decode_float(raw) == value


@pytest.mark.parametrize(
    ("raw", "special"),
    [
        (0x007FFFFF, Special.NAN),
        (0x00800000, Special.NRES),
        (0x00800001, Special.RESERVED),
        (0x007FFFFE, Special.PLUS_INF),
        (0x00800002, Special.MINUS_INF),
    ],
)
def test_float_specials(raw: int, special: Special) -> None:
    assert float_special(raw) is special
    value = decode_float(raw)
    assert math.isinf(value) if special in (Special.PLUS_INF, Special.MINUS_INF) else math.isnan(value)


def test_encoders_match_hand_vectors_and_reject_out_of_range() -> None:
    assert encode_sfloat(986, -1) == 0xF3DA
    assert encode_float(365, -1) == 0xFF00016D
    with pytest.raises(ValueError, match="SFLOAT"):
        encode_sfloat(5000, 0)


# --- Heart Rate Measurement 0x2A37 ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("00 48", HeartRateMeasurement(72, False, None, None, (), ())),
        ("16 48 00 04 cc 02", HeartRateMeasurement(72, True, True, None, (1.0, 716 / 1024), (1024, 716))),
        ("0d 2c 01 00 01", HeartRateMeasurement(300, True, False, 256, (), ())),
        ("1f 3c 00 e8 03 00 04 00 02", HeartRateMeasurement(60, True, True, 1000, (1.0, 0.5), (1024, 512))),
        ("02 48", HeartRateMeasurement(72, False, None, None, (), ())),  # contact bit without support
    ],
)
def test_heart_rate_vectors(value: str, expected: HeartRateMeasurement) -> None:
    assert decode_heart_rate_measurement(h(value)) == expected


@pytest.mark.parametrize("value", ["", "01 48", "10 48 00", "08 48", "09 48 00 01"])
def test_heart_rate_malformed(value: str) -> None:
    with pytest.raises(GattDecodeError, match="Heart Rate Measurement"):
        decode_heart_rate_measurement(h(value))


# --- Health Thermometer 0x2A1C ----------------------------------------------------------------


def test_temperature_celsius_minimal() -> None:
    m = decode_temperature_measurement(h("00 6d 01 00 ff"))
    assert (m.value, m.unit, m.timestamp, m.temperature_type) == (36.5, "°C", None, None)


def test_temperature_fahrenheit_with_stamp_and_type() -> None:
    m = decode_temperature_measurement(h("07 da 03 00 ff e8 07 0b 17 14 1e 00 02"))
    assert (m.value, m.unit, m.timestamp, m.temperature_type) == (98.6, "°F", STAMP, TemperatureType.BODY)
    assert m.celsius == pytest.approx(37.0)
    assert m.timestamp is not None and m.timestamp.to_datetime() is not None


def test_temperature_special_and_unknown_type() -> None:
    m = decode_temperature_measurement(h("04 ff ff 7f 00 2a"))
    assert math.isnan(m.value) and m.temperature_type == 42


@pytest.mark.parametrize("value", ["", "00 6d 01 00", "02 6d 01 00 ff e8 07", "04 6d 01 00 ff"])
def test_temperature_malformed(value: str) -> None:
    with pytest.raises(GattDecodeError):
        decode_temperature_measurement(h(value))


# --- Blood Pressure 0x2A35 --------------------------------------------------------------------


def test_blood_pressure_all_fields() -> None:
    m = decode_blood_pressure_measurement(h("1e 78 00 50 00 a5 f3 e8 07 0b 17 14 1e 00 48 00 01 05 00"))
    assert (m.systolic, m.diastolic, m.mean_arterial, m.unit) == (120.0, 80.0, 93.3, "mmHg")
    assert (m.timestamp, m.pulse_rate_bpm, m.user_id) == (STAMP, 72.0, 1)
    assert m.status == BloodPressureStatus.BODY_MOVEMENT | BloodPressureStatus.IRREGULAR_PULSE


def test_blood_pressure_kpa_with_nan_map() -> None:
    m = decode_blood_pressure_measurement(h("01 a0 f0 6b f0 ff 07"))
    assert (m.systolic, m.diastolic, m.unit) == (16.0, 10.7, "kPa")
    assert math.isnan(m.mean_arterial)
    assert (m.timestamp, m.pulse_rate_bpm, m.user_id, m.status) == (None, None, None, None)


@pytest.mark.parametrize("value", ["", "00 78 00 50 00", "04 78 00 50 00 a5 f3", "10 78 00 50 00 a5 f3 05"])
def test_blood_pressure_malformed(value: str) -> None:
    with pytest.raises(GattDecodeError, match="Blood Pressure"):
        decode_blood_pressure_measurement(h(value))


# --- PLX 0x2A5F / 0x2A5E ----------------------------------------------------------------------


def test_plx_continuous_minimal() -> None:
    m = decode_plx_continuous(h("00 62 00 48 00"))
    assert m.normal == SpO2PR(98.0, 72.0)
    assert (m.fast, m.slow, m.measurement_status, m.device_sensor_status, m.pulse_amplitude_index) == (
        None,
        None,
        None,
        None,
        None,
    )


def test_plx_continuous_all_fields() -> None:
    m = decode_plx_continuous(h("1f 61 00 41 00 60 00 42 00 cf f3 40 00 80 00 20 00 00 19 f0"))
    assert (m.normal, m.fast, m.slow) == (SpO2PR(97.0, 65.0), SpO2PR(96.0, 66.0), SpO2PR(97.5, 64.0))
    assert m.measurement_status == PlxMeasurementStatus.VALIDATED_DATA
    assert m.device_sensor_status == PlxDeviceSensorStatus.LOW_PERFUSION
    assert m.pulse_amplitude_index == 2.5


def test_plx_spot_check_all_fields() -> None:
    m = decode_plx_spot_check(h("1f 62 00 46 00 e8 07 0b 17 14 1e 00 00 01 00 80 00 ff 07"))
    assert (m.reading, m.timestamp) == (SpO2PR(98.0, 70.0), STAMP)
    assert m.measurement_status == PlxMeasurementStatus.FULLY_QUALIFIED_DATA
    assert m.device_sensor_status == PlxDeviceSensorStatus.SENSOR_DISCONNECTED
    assert m.pulse_amplitude_index is not None and math.isnan(m.pulse_amplitude_index)
    assert m.device_clock_not_set


def test_plx_spot_check_minimal() -> None:
    m = decode_plx_spot_check(h("00 62 00 46 00"))
    assert (m.reading, m.timestamp, m.device_clock_not_set) == (SpO2PR(98.0, 70.0), None, False)


@pytest.mark.parametrize("value", ["", "00 62 00", "01 62 00 48 00 60 00", "08 62 00 48 00 20 00"])
def test_plx_continuous_malformed(value: str) -> None:
    with pytest.raises(GattDecodeError, match="PLX Continuous"):
        decode_plx_continuous(h(value))


@pytest.mark.parametrize("value", ["", "01 62 00 46 00 e8 07 0b", "02 62 00 46 00 01"])
def test_plx_spot_check_malformed(value: str) -> None:
    with pytest.raises(GattDecodeError, match="PLX Spot-check"):
        decode_plx_spot_check(h(value))


# --- Battery Level 0x2A19 ---------------------------------------------------------------------


def test_battery_level_range() -> None:
    assert [decode_battery_level(bytes((v,))) for v in (0, 55, 100)] == [0, 55, 100]
    for bad in (b"", b"\x65", b"\xff"):
        with pytest.raises(GattDecodeError, match="Battery Level"):
            decode_battery_level(bad)


def test_decoder_registry_uses_bleak_uuid_strings() -> None:
    assert DECODERS["00002a37-0000-1000-8000-00805f9b34fb"] is decode_heart_rate_measurement
    assert DECODERS["00002a19-0000-1000-8000-00805f9b34fb"](b"\x37") == 55
    assert issubclass(GattDecodeError, ValueError)
