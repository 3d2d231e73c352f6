"""BLE health profiles → readings: which characteristic each profile notifies, and how its decoded
values (firmware_bridge.gatt) become channels and quality flags.

Streams. The vital-sign profiles share one ``"vitals"`` stream, as the simulator's wearable does, so
detectors see one row per second with every channel: heart_rate → ``hr``; plx → ``spo2``, ``pr``;
thermometer → ``temp`` (°C). No profile paces the stream: the rows come once a second of the gateway's
clock (`ROW_PERIOD_S`, declared as the row's `period_s`), whatever the devices' notification rates, and
each holds every channel's newest value while it is younger than its profile's `hold_s` (3 s for HR and
SpO2: a 1 Hz notification lost or late; a per-beat strap down to 20 bpm). Until 2026-11-30 every
heart-rate notification made a row: only HR made rows, so SpO2 80 % from an oximeter whose HR had stopped
raised nothing, and a strap notifying per beat at 2 Hz made 2 rows a second, which the detectors count as
seconds (a 6 s dip alarmed as a 10 s desaturation; review of 2026-11-30, findings 2 and 4). A row is due
a second after the last (`row_due`, at most `ROW_EARLY_S` early, so notifications on a 1 Hz beat make one
row each); the source builds it when a notification finds it due, or at its own timer when none comes
(`agent.sources.ble`). A channel whose profile has not reported since the link came up, or whose newest
value is older than its `hold_s`, is left out of the row: the pipeline sees it as missing (no flag; the
source tells of a continuous profile that stops, `silent_profiles`), and no row is made while none is
fresh. A value the device itself reports as "no value" (an SFLOAT/FLOAT NaN, NRes or reserved value, PLX
"measurement unavailable") stays in the row as NaN, which the quality gate flags (signal_poor when it
lasts). So the row's channels vary; there are at most 2^(channels) tuples, each built once (`_subsets`).
RR intervals go to ``"rr"`` (one reading per interval, stamped back from the notification's arrival by
the later valid intervals; one outside `RR_RANGE_S`, 0 or 65535 ticks, is counted in `bad_rr` and
dropped, and how much of the last minute they were mostly such is measured for the `rr_invalid` alarm,
`agent.sources.rr_validity`), blood pressure to ``"bp"`` (one reading per cuff measurement). battery
only sets LOW_BATTERY below `LOW_BATTERY_PERCENT`. polar_pmd starts the Polar H10's ECG (130 Hz)
through the PMD control point after subscribing, and each data frame becomes one ``"ecg"`` block (mV;
the frame's last sample at its arrival time). Its accelerometer is not requested yet.

Quality. NO_CONTACT when the Heart Rate sensor-contact feature is supported and contact is not
detected, or PLX reports the sensor off/unconnected/displaced; every PLX status bit that says the
value is not to be trusted gates it (`_PLX_*`: DEVICE_FAULT for a malfunction or an unknown sensor,
ARTIFACT for a poor signal or a value that is not a settled live measurement, "measurement
unavailable" makes SpO2 and PR NaN); ARTIFACT for BP body movement / irregular pulse. A decode failure raises
`GattDecodeError`, which the source counts as a bad frame.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from agent.errors import ConfigError
from agent.readings import RR_RANGE_S, Quality, Reading, stream_id
from agent.sources.rr_validity import RrValidity
from firmware_bridge.gatt.battery import BATTERY_LEVEL_UUID, decode_battery_level
from firmware_bridge.gatt.blood_pressure import (
    BLOOD_PRESSURE_MEASUREMENT_UUID,
    BloodPressureStatus,
    decode_blood_pressure_measurement,
)
from firmware_bridge.gatt.heart_rate import HEART_RATE_MEASUREMENT_UUID, decode_heart_rate_measurement
from firmware_bridge.gatt.polar_pmd import (
    PMD_CONTROL_POINT_UUID,
    PMD_DATA_UUID,
    PmdMeasurement,
    decode_pmd_data,
    ecg_start_request,
)
from firmware_bridge.gatt.pulse_oximeter import (
    PLX_CONTINUOUS_UUID,
    PlxDeviceSensorStatus,
    PlxMeasurementStatus,
    SpO2PR,
    decode_plx_continuous,
)
from firmware_bridge.gatt.thermometer import TEMPERATURE_MEASUREMENT_UUID, decode_temperature_measurement

LOW_BATTERY_PERCENT = 15
ROW_PERIOD_S = 1.0  # one vitals row a second: the detectors' windows count rows as seconds
ROW_EARLY_S = 0.25  # a row may come this early, so a notification on a 1 Hz beat with jitter makes one
POLAR_ECG_HZ = 130
KPA_TO_MMHG = 7.500615
# What each PLX status bit (Pulse Oximeter Service 1.0, 3.2.1.3 and 3.2.1.4) means for the sample; the
# table with the reasons is in docs/sources.md ("PLX status bits"). Bits not named here inform only:
# measurement ongoing, validated / fully qualified data, extended display update ongoing, and low
# perfusion (oximeters stay usable at low perfusion and say poor/inadequate signal when they are not;
# gating it would blind SpO2 in shock or cold peripheries, when it matters most).
_PLX_NO_VALUE = PlxMeasurementStatus.MEASUREMENT_UNAVAILABLE  # spo2 and pr become NaN ("no value")
_PLX_NOT_MEASURED = (  # a value, but not a live, settled measurement of this patient: ARTIFACT
    PlxMeasurementStatus.EARLY_ESTIMATED_DATA
    | PlxMeasurementStatus.DATA_FROM_STORAGE
    | PlxMeasurementStatus.DATA_FOR_DEMONSTRATION
    | PlxMeasurementStatus.DATA_FOR_TESTING
    | PlxMeasurementStatus.CALIBRATION_ONGOING
    | PlxMeasurementStatus.QUESTIONABLE_MEASUREMENT
    | PlxMeasurementStatus.INVALID_MEASUREMENT
)
_PLX_BAD_SIGNAL = (  # the device doubts its own signal: ARTIFACT
    PlxDeviceSensorStatus.SIGNAL_PROCESSING_IRREGULARITY
    | PlxDeviceSensorStatus.INADEQUATE_SIGNAL
    | PlxDeviceSensorStatus.POOR_SIGNAL
    | PlxDeviceSensorStatus.ERRATIC_SIGNAL
    | PlxDeviceSensorStatus.NONPULSATILE_SIGNAL
    | PlxDeviceSensorStatus.QUESTIONABLE_PULSE
    | PlxDeviceSensorStatus.SIGNAL_ANALYSIS_ONGOING
    | PlxDeviceSensorStatus.SENSOR_INTERFERENCE
)
_PLX_OFF_SENSOR = (  # NO_CONTACT
    PlxDeviceSensorStatus.SENSOR_UNCONNECTED_TO_USER
    | PlxDeviceSensorStatus.SENSOR_DISCONNECTED
    | PlxDeviceSensorStatus.SENSOR_DISPLACED
)
_PLX_FAULT = (  # DEVICE_FAULT
    PlxDeviceSensorStatus.EQUIPMENT_MALFUNCTION
    | PlxDeviceSensorStatus.SENSOR_MALFUNCTIONING
    | PlxDeviceSensorStatus.UNKNOWN_SENSOR_CONNECTED
)
_BAD_BP = (
    BloodPressureStatus.BODY_MOVEMENT
    | BloodPressureStatus.IRREGULAR_PULSE
    | BloodPressureStatus.CUFF_TOO_LOOSE
)


@dataclass(frozen=True, slots=True)
class Update:
    """What one notification says: channel values (NaN = not measured) and quality."""

    values: Mapping[str, float] = field(default_factory=dict)
    quality: Quality = Quality.OK
    rr_s: tuple[float, ...] = ()
    battery_percent: int | None = None
    waveform: npt.NDArray[np.float64] | None = None  # (n, 1) block for the "ecg" stream
    waveform_rate_hz: float = 0.0


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    characteristic: str  # 128-bit UUID as bleak names it
    channels: tuple[str, ...]  # channels it contributes to "vitals" (or "bp")
    decode: Callable[[bytes], Update]  # raises GattDecodeError
    hold_s: float = 3.0  # a value older than this is missing from the row
    continuous: bool = False  # notifies all the time while measuring: silence means it stopped
    stream: str = "vitals"
    required: bool = True  # False: a device without it is still usable (battery)
    control_point: str = ""  # written with `start_command` after subscribing (Polar PMD)
    start_command: bytes = b""
    title: str = ""  # the characteristic as the spec names it, for the operator


def _heart_rate(value: bytes) -> Update:
    m = decode_heart_rate_measurement(value)
    no_contact = m.sensor_contact_supported and not m.sensor_contact
    return Update({"hr": float(m.bpm)}, Quality.NO_CONTACT if no_contact else Quality.OK, m.rr_intervals_s)


def _plx(value: bytes) -> Update:
    m = decode_plx_continuous(value)
    return _plx_update(m.normal, m.measurement_status, m.device_sensor_status)


def _plx_update(
    reading: SpO2PR, measurement: PlxMeasurementStatus | None, sensor: PlxDeviceSensorStatus | None
) -> Update:
    """SpO2 and pulse rate with the quality their status fields give them (see `_PLX_*` above)."""
    quality = Quality.OK
    ms = int(measurement or 0)
    ds = int(sensor or 0)
    if ds & _PLX_OFF_SENSOR:
        quality |= Quality.NO_CONTACT
    if ds & _PLX_FAULT:
        quality |= Quality.DEVICE_FAULT
    if ms & _PLX_NOT_MEASURED or ds & _PLX_BAD_SIGNAL:
        quality |= Quality.ARTIFACT
    if ms & _PLX_NO_VALUE:
        return Update({"spo2": math.nan, "pr": math.nan}, quality)
    return Update({"spo2": reading.spo2_percent, "pr": reading.pulse_rate_bpm}, quality)


def _thermometer(value: bytes) -> Update:
    return Update({"temp": decode_temperature_measurement(value).celsius})


def _blood_pressure(value: bytes) -> Update:
    m = decode_blood_pressure_measurement(value)
    k = KPA_TO_MMHG if m.unit == "kPa" else 1.0
    bad = m.status is not None and bool(m.status & _BAD_BP)
    values = {"systolic": m.systolic * k, "diastolic": m.diastolic * k, "map": m.mean_arterial * k}
    return Update(values, Quality.ARTIFACT if bad else Quality.OK)


def _polar_ecg(value: bytes) -> Update:
    frame = decode_pmd_data(value)
    if frame.measurement is not PmdMeasurement.ECG:
        return Update()  # another PMD stream someone else started: not ours to read
    return Update(waveform=frame.samples[:, :1] / 1000.0, waveform_rate_hz=float(POLAR_ECG_HZ))


def _battery(value: bytes) -> Update:
    return Update(battery_percent=decode_battery_level(value))


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            "heart_rate",
            HEART_RATE_MEASUREMENT_UUID,
            ("hr",),
            _heart_rate,
            continuous=True,
            title="Heart Rate Measurement (0x2A37)",
        ),
        Profile(
            "plx",
            PLX_CONTINUOUS_UUID,
            ("spo2", "pr"),
            _plx,
            continuous=True,
            title="PLX Continuous Measurement (0x2A5F)",
        ),
        Profile(
            "thermometer",
            TEMPERATURE_MEASUREMENT_UUID,
            ("temp",),
            _thermometer,
            hold_s=120.0,
            title="Temperature Measurement (0x2A1C)",
        ),
        Profile(
            "blood_pressure",
            BLOOD_PRESSURE_MEASUREMENT_UUID,
            ("systolic", "diastolic", "map"),
            _blood_pressure,
            stream="bp",
            title="Blood Pressure Measurement (0x2A35)",
        ),
        Profile("battery", BATTERY_LEVEL_UUID, (), _battery, required=False, title="Battery Level (0x2A19)"),
        Profile(
            "polar_pmd",
            PMD_DATA_UUID,
            (),
            _polar_ecg,
            stream="ecg",
            control_point=PMD_CONTROL_POINT_UUID,
            start_command=ecg_start_request(POLAR_ECG_HZ),
            continuous=True,
            title="Polar PMD control point and data",
        ),
    )
}


def profiles_for(names: Sequence[str], key: str) -> tuple[Profile, ...]:
    """The profiles named in the config, in order; raises ConfigError naming an unknown one."""
    unknown = [n for n in names if n not in PROFILES]
    if unknown:
        raise ConfigError(
            key, f"BLE profile(s) not supported: {', '.join(unknown)} (known: {', '.join(PROFILES)})"
        )
    return tuple(PROFILES[n] for n in dict.fromkeys(names))


class ProfileReadings:
    """Turns profile updates of one device into readings (see the module docstring)."""

    def __init__(self, device_id: str, profiles: Sequence[Profile]) -> None:
        self.device_id = device_id
        self._held: dict[str, tuple[float, float, Quality]] = {}  # channel → (value, monotonic, quality)
        self._contact = Quality.OK  # NO_CONTACT while the newest heart_rate update said the strap is off
        self._gap_streams: set[str] = set()
        self._had_data = False
        self._next_row = -math.inf  # monotonic time the next vitals row is due
        self.battery_percent: int | None = None
        self.gaps = 0
        self.bad_rr = 0  # RR intervals outside RR_RANGE_S, dropped
        self.rr_validity = RrValidity()  # how much of the last minute they were mostly impossible
        self.use(profiles)

    def use(self, profiles: Sequence[Profile]) -> None:
        """The profiles the device really has (set at each subscription): the `vitals` row holds only
        their channels, so a configured profile the device lacks is a missing channel (the pipeline's
        wiring check names it), not a "no value" that would raise signal_poor."""
        vitals = [p for p in profiles if p.stream == "vitals"]
        self.channels = tuple(c for p in vitals for c in p.channels)
        # the row's channels by bit mask of those present: the same tuple object for the same subset,
        # so the pipeline's per-tuple plan and batch check find it at once
        self._subsets: dict[int, tuple[str, ...]] = {(1 << len(self.channels)) - 1: self.channels}
        self._hold_s = {c: p.hold_s for p in vitals for c in p.channels}

    def link_restarted(self) -> None:
        """After a reconnect: the next reading of each stream carries GAP; held values are dropped."""
        self._held.clear()
        self._contact = Quality.OK
        self._next_row = -math.inf
        if self._had_data:
            self.gaps += 1
            self._gap_streams = {"vitals", "rr", "bp", "ecg"}

    def take(self, profile: Profile, update: Update, wall_time: float, monotonic: float) -> list[Reading]:
        if update.battery_percent is not None:
            self.battery_percent = update.battery_percent
        out: list[Reading] = []
        if profile.stream == "bp":
            out.append(
                self._reading(
                    "bp",
                    profile.channels,
                    [update.values[c] for c in profile.channels],
                    wall_time,
                    monotonic,
                    update.quality,
                )
            )
        elif profile.channels:
            for name, value in update.values.items():
                self._held[name] = (value, monotonic, update.quality)
        if update.rr_s:
            out += self._rr(update, wall_time, monotonic)
        if update.rr_s or "hr" in update.values:
            self._contact = update.quality & Quality.NO_CONTACT
        if update.waveform is not None and update.waveform.shape[0]:
            out.append(self._waveform(update.waveform, update.waveform_rate_hz, wall_time, monotonic))
        if out:
            self._had_data = True
        return out

    @property
    def next_row(self) -> float:
        """Monotonic time the next vitals row is due (-inf: at the first value)."""
        return self._next_row

    def row_due(self, monotonic: float) -> bool:
        """A vitals row is due (a second since the last, `ROW_EARLY_S` early at most) and has a value."""
        return monotonic >= self._next_row - ROW_EARLY_S and self._fresh(monotonic) != 0

    def row(self, wall_time: float, monotonic: float) -> Reading | None:
        """The vitals row of this moment: each channel's newest value younger than its `hold_s`; None
        when no channel has one. The next is due a second later."""
        present = self._fresh(monotonic)
        if not present:
            return None
        # on the same beat while rows come early or on time; a late one moves the beat (0.75 s apart at least)
        self._next_row = max(self._next_row + ROW_PERIOD_S, monotonic + ROW_PERIOD_S)
        row: list[float] = []
        quality = Quality.OK
        for bit, channel in enumerate(self.channels):
            if present >> bit & 1:
                value, _, q = self._held[channel]
                row.append(value)  # NaN when the device said "no value": flagged downstream
                quality |= q
        channels = self._subsets.get(present)
        if channels is None:
            channels = tuple(c for i, c in enumerate(self.channels) if present >> i & 1)
            self._subsets[present] = channels
        self._had_data = True
        return self._reading("vitals", channels, row, wall_time, monotonic, quality, ROW_PERIOD_S)

    def _fresh(self, monotonic: float) -> int:
        """Bit mask of the channels whose newest value is younger than its profile's `hold_s`."""
        present = 0
        for bit, channel in enumerate(self.channels):
            held = self._held.get(channel)
            if held is not None and monotonic - held[1] <= self._hold_s[channel]:
                present |= 1 << bit
        return present

    def _rr(self, update: Update, wall_time: float, monotonic: float) -> list[Reading]:
        # The intervals are the beats since the previous notification, oldest first: the newest ended at
        # (about) this notification, each earlier one a later interval before. One no heart gives (0
        # ticks, 65535: a strap's "no value" or a counter overflow) has no known length: counted and
        # dropped, it must not push the valid ones back in time (a 65535 moved them 64 s).
        low, high = RR_RANGE_S
        rr = [r for r in update.rr_s if low <= r <= high]
        invalid = len(update.rr_s) - len(rr)
        self.bad_rr += invalid
        if not update.quality & Quality.NO_CONTACT:  # off the skin: sensor_off tells, not rr_invalid
            self.rr_validity.note(monotonic, len(rr), invalid)
        if not rr:
            return []
        ends = wall_time - np.concatenate((np.cumsum(rr[::-1])[::-1][1:], [0.0]))
        return [
            self._reading("rr", ("rr",), [r], float(end), monotonic, update.quality & Quality.NO_CONTACT)
            for r, end in zip(rr, ends, strict=True)
        ]

    def _waveform(
        self, samples: npt.NDArray[np.float64], rate_hz: float, wall: float, mono: float
    ) -> Reading:
        period = 1.0 / rate_hz
        first = wall - (samples.shape[0] - 1) * period  # the frame's last sample arrived just now
        # PMD frames say nothing of the electrodes: the strap's own contact bit (heart_rate) does, and an
        # H10 off the skin streams noise that would read as beats (agent.ecg) if it were not flagged
        return self._reading("ecg", ("ecg",), samples, first, mono, self._contact, period)

    def _reading(
        self,
        stream: str,
        channels: tuple[str, ...],
        rows: Sequence[float] | npt.NDArray[np.float64],
        wall: float,
        mono: float,
        q: Quality,
        period: float = 0.0,
    ) -> Reading:
        if stream in self._gap_streams:
            self._gap_streams.discard(stream)
            q |= Quality.GAP
        if self.battery_percent is not None and self.battery_percent < LOW_BATTERY_PERCENT:
            q |= Quality.LOW_BATTERY
        values = np.array(rows, dtype=np.float64).reshape(-1, len(channels))
        values.flags.writeable = False
        return Reading(stream_id(self.device_id, stream), channels, values, wall, mono, period, q)
