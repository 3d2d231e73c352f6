"""Equipment vibration from a raw accelerometer window: time/frequency features and ISO 10816 zones.

Per window and axis: RMS, peak, crest factor (peak / RMS) and kurtosis of the acceleration (bearing
defects show up as impulsive peaks before the RMS moves), energy in configured frequency bands (one real
FFT per window), and the velocity RMS in the ISO 10816 band (10-1000 Hz by default), obtained by
integrating the spectrum (V = A / (2 pi f)) with a Hann window, scaled for the window's energy loss.

Severity follows ISO 10816-1: the A/B, B/C and C/D boundaries of velocity RMS (mm/s) depend on the machine
class (I small, II medium, III large rigid, IV large soft foundations) or are given explicitly. The score
is velocity RMS divided by the boundary of the alarm zone (`alarm_zone`, "C" by default: the B/C
boundary, "unsatisfactory for long-term operation"), so the threshold is 1.0 and the score says how far
into or below that zone the machine is. `zone()` maps velocities to 0..3 for A..D. The worst axis scores;
each axis's share of the velocity energy is its contribution. Stateless: each window stands alone.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from agent.config.schema import DetectorConfig
from agent.detectors.base import FloatArray, IntArray, ScoreBlock, StreamingDetector, WindowBlock, shares
from agent.detectors.params import ParamReader, show
from agent.errors import ConfigError
from agent.units import canonical, factor, names_of

# ISO 10816-1 zone boundaries (velocity RMS, mm/s): A/B, B/C, C/D.
ISO_10816_CLASSES: Mapping[str, tuple[float, float, float]] = MappingProxyType(
    {
        "I": (0.71, 1.8, 4.5),
        "II": (1.12, 2.8, 7.1),
        "III": (1.8, 4.5, 11.2),
        "IV": (2.8, 7.1, 18.0),
    }
)
ZONES = ("A", "B", "C", "D")
ACCELERATION_UNITS = names_of("acceleration")  # `unit`: any spelling of these (agent.units.canonical)
DEFAULT_UNIT = "g"


@dataclass(frozen=True, slots=True)
class VibrationFeatures:
    """Per stream and axis features of one window; (S, C) arrays, bands (S, C, B)."""

    rms: FloatArray  # acceleration RMS about the mean, in the input unit
    peak: FloatArray  # largest |acceleration - mean|
    crest: FloatArray  # peak / rms
    kurtosis: FloatArray  # 3 for Gaussian vibration, higher for impulsive (bearing) signals
    band_energy: FloatArray  # acceleration energy (mean square) per configured band
    velocity_rms: FloatArray  # mm/s in the ISO band


class VibrationDetector(StreamingDetector):
    type_name = "vibration"
    lowest_score = 0.0
    quantity = "velocity RMS"

    def __init__(
        self,
        id: str,
        channels: tuple[str, ...],
        window: int,
        hop: int,
        rate_hz: float,
        boundaries: tuple[float, float, float],
        alarm_zone: str = "C",
        unit: str = "g",
        iso_band: tuple[float, float] = (10.0, 1000.0),
        bands: tuple[tuple[float, float], ...] = (),
    ) -> None:
        super().__init__(id, channels, window, hop, threshold=1.0)
        self.rate_hz = rate_hz
        self.boundaries = boundaries
        self.alarm_zone = alarm_zone
        to_m_s2 = factor(unit, "m/s2")
        if to_m_s2 is None:
            raise ValueError(f"not an acceleration unit: {unit!r}")
        self.to_m_s2 = to_m_s2
        self.iso_band = iso_band
        self.bands = bands
        freqs = np.fft.rfftfreq(window, 1.0 / rate_hz)
        taper = np.hanning(window)
        self._taper = taper
        self._taper_power = float(np.mean(taper**2))
        self._freqs = freqs
        in_band = (freqs >= iso_band[0]) & (freqs <= iso_band[1]) & (freqs > 0)
        # m/s2 -> mm/s per spectral line, zero outside the ISO band
        self._to_velocity = np.where(in_band, 1000.0 / (2 * np.pi * np.where(freqs > 0, freqs, 1.0)), 0.0)
        self._band_masks = [(freqs >= lo) & (freqs < hi) for lo, hi in bands]

    @classmethod
    def from_config(cls, config: DetectorConfig, rate_hz: float) -> VibrationDetector:
        reader = ParamReader(config, rate_hz)
        reader.channel_count()
        window, hop = reader.window_and_hop(1.0, 1.0, min_window=16)
        machine = reader.text("machine_class", "II", choices=tuple(ISO_10816_CLASSES))
        boundaries = ISO_10816_CLASSES[machine]
        custom = reader._get("zone_boundaries")
        if custom is not None:
            ok = (
                isinstance(custom, list)
                and len(custom) == 3
                and all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in custom)
                and custom[0] < custom[1] < custom[2]
            )
            if not ok:
                raise reader.fail("zone_boundaries", f"expected 3 increasing mm/s values, got {custom!r}")
            boundaries = (float(custom[0]), float(custom[1]), float(custom[2]))
        alarm_zone = reader.text("alarm_zone", "C", choices=("B", "C", "D"))
        reader.text("unit", DEFAULT_UNIT)  # a string; its spelling is checked by `input_unit`
        unit = input_unit(config)
        nyquist = reader.rate_hz / 2
        low = reader.positive("iso_low_hz", 10.0)
        high = min(reader.positive("iso_high_hz", 1000.0), nyquist)
        if high <= low:
            raise reader.fail(
                "iso_high_hz", f"must exceed iso_low_hz ({low:g}) and Nyquist allows {nyquist:g}"
            )
        bands = _bands(reader, config, nyquist)
        reader.finish()
        return cls(
            config.id,
            config.channels,
            window,
            hop,
            reader.rate_hz,
            boundaries,
            alarm_zone,
            unit,
            (low, high),
            bands,
        )

    def features(self, values: FloatArray) -> VibrationFeatures:
        """Features of (S, W, C) acceleration windows (NaN samples are treated as the window mean)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN axis has no mean
            mean = np.nanmean(values, axis=1, keepdims=True)
        centred = np.nan_to_num(values - mean)
        rms = np.sqrt(np.mean(centred**2, axis=1))
        peak = np.max(np.abs(centred), axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            crest = np.where(rms > 0, peak / rms, np.nan)
            kurtosis = np.where(rms > 0, np.mean(centred**4, axis=1) / rms**4, np.nan)
        spectrum = np.fft.rfft(centred * self._taper[None, :, None], axis=1)  # (S, F, C)
        # one-sided power per line, normalised so the sum over lines is the mean square of the signal
        power = np.abs(spectrum) ** 2 / (self.window**2 * self._taper_power)
        power[:, 1:] *= 2.0
        if self.window % 2 == 0:
            power[:, -1] /= 2.0
        band_energy = (
            np.stack([power[:, m].sum(axis=1) for m in self._band_masks], axis=-1)
            if self.bands
            else np.zeros((*rms.shape, 0))
        )
        velocity_power = power * (self.to_m_s2 * self._to_velocity[None, :, None]) ** 2
        velocity_rms = np.sqrt(velocity_power.sum(axis=1))
        return VibrationFeatures(rms, peak, crest, kurtosis, band_energy, velocity_rms)

    def zone(self, velocity_rms: FloatArray) -> IntArray:
        """ISO 10816 zone index (0=A .. 3=D) of velocity RMS values in mm/s."""
        zones: IntArray = np.searchsorted(np.asarray(self.boundaries), velocity_rms, side="right").astype(
            np.int64
        )
        return zones

    def score_hop(self, block: WindowBlock) -> ScoreBlock:
        n = block.n_streams
        values = block.values[:, -self.window :, :]
        enough = (~np.isnan(values)).mean(axis=(1, 2)) >= 0.9  # a gappy window has no spectrum
        feats = self.features(values)
        worst = np.max(feats.velocity_rms, axis=1)
        limit = self.boundaries[ZONES.index(self.alarm_zone) - 1]
        scores = np.where(enough, worst / limit, np.nan)
        return ScoreBlock(
            scores=scores,
            thresholds=self._thresholds(n),
            contributions=shares(feats.velocity_rms**2),
            observed=np.where(enough, worst, np.nan),
            limits=np.where(enough, limit, np.nan),
            baseline=np.full((n, len(self.channels)), np.nan),
        )

    def calibrate(self, normal: WindowBlock, target_false_alarms_per_hour: float, hop_seconds: float) -> None:
        """ISO zones are a standard's settings, not learned: nothing to calibrate."""

    def calibration_refusal(self) -> str:
        return "its ISO 10816 zone boundaries are a standard's settings, never learned"


def input_unit(config: DetectorConfig) -> str:
    """The canonical unit (agent.units) the detector takes its samples in: params `unit`, "g" by default.
    The serial source converts a HELLO's other acceleration unit to it (agent.sources.serial_units)."""
    raw = config.params.get("unit", DEFAULT_UNIT)
    unit = canonical(raw) if isinstance(raw, str) else None
    if unit is None or unit not in ACCELERATION_UNITS:
        raise ConfigError(
            f"detectors.{config.id}.params.unit",
            f"expected an acceleration unit ({', '.join(ACCELERATION_UNITS)}, or another spelling of one"
            f' such as "m/s^2"), got {show(raw)}',
            ACCELERATION_UNITS,
        )
    return unit


def _bands(reader: ParamReader, config: DetectorConfig, nyquist: float) -> tuple[tuple[float, float], ...]:
    """`bands = [[lo, hi], ...]` in Hz, each inside (0, Nyquist]."""
    raw = reader._get("bands")
    if raw is None:
        edges = [e for e in (10.0, 100.0, 1000.0, 5000.0) if e < nyquist] + [nyquist]
        return tuple(itertools.pairwise(edges))
    out: list[tuple[float, float]] = []
    if not isinstance(raw, list):
        raise reader.fail("bands", f"expected a list of [low_hz, high_hz] pairs, got {raw!r}")
    for i, band in enumerate(raw):
        ok = (
            isinstance(band, list)
            and len(band) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in band)
            and 0 <= band[0] < band[1] <= nyquist
        )
        if not ok:
            where = f"detectors.{config.id}.params.bands[{i}]"
            raise ConfigError(
                where, f"expected [low_hz, high_hz] with 0 <= low < high <= {nyquist:g}, got {band!r}"
            )
        out.append((float(band[0]), float(band[1])))
    return tuple(out)
