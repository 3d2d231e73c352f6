"""Simulated wearable: "vitals" (hr, spo2, skin_temp at 1 Hz), "rr" (one reading per beat), optional "ecg".

Generation is chunked: `chunk(i)` returns every reading in simulated seconds [60 i, 60 (i + 1)), sorted by
time, and chunks must be asked for in order. Beats (see `heart`) are generated one chunk ahead so that the
ECG templates of beats just after a chunk boundary are rendered, and kept ten seconds back so the reported
heart rate (a strap-like 4 s average of RR intervals, rounded to whole bpm) has history at chunk starts.
SpO2 is a per-seed baseline of 96.5-98.5 % with slow drift and sensor noise, quantised to whole percent;
skin temperature is 33.3-34.7 °C with a slow drift, reported to 0.01 °C. Contact loss zeroes hr and spo2,
lets skin temperature relax toward room temperature, stops RR reports, turns the ECG into electrode-off
noise and flags every reading NO_CONTACT. Dropout and stuck sensors are applied by `faults`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.config.schema import DeviceConfig, EpisodeConfig
from agent.readings import FloatArray, Quality, Reading, stream_id
from agent.simulation import ecg
from agent.simulation.episodes import (
    TAG_ECG,
    TAG_EPISODE,
    TAG_PARAMS,
    TAG_VITALS,
    GroundTruth,
    ground_truth,
    inside,
    plateau,
    seeded_rng,
    validate_simulator,
)
from agent.simulation.faults import Dropout, StuckChannels
from agent.simulation.heart import BeatGenerator
from agent.simulation.processes import Drift

CHUNK_S = 60.0
VITALS_CHANNELS = ("hr", "spo2", "skin_temp")
HR_WINDOW_S = 4.0  # the strap averages the RR intervals of the last few seconds
ECG_BLOCK = 25  # samples per ECG reading (0.1 s at 250 Hz)
ROOM_C = 25.0
SKIN_COOL_TAU_S = 120.0  # a detached temperature patch cools toward the room this fast


@dataclass(frozen=True, slots=True)
class Desaturation:
    config: EpisodeConfig
    drop_pct: float
    fall_s: float
    recover_s: float


@dataclass(frozen=True, slots=True)
class VitalsParams:
    spo2_base: float
    spo2_drift: Drift
    skin_base: float
    skin_drift: Drift

    @classmethod
    def draw(cls, seed: int) -> VitalsParams:
        rng = seeded_rng(seed, TAG_PARAMS, 2)
        return cls(
            spo2_base=float(rng.uniform(96.5, 98.5)),
            spo2_drift=Drift.make(rng, 0.4, 1.0 / 1800.0, 1.0 / 60.0),
            skin_base=float(rng.uniform(33.3, 34.7)),
            skin_drift=Drift.make(rng, 0.3, 1.0 / 7200.0, 1.0 / 300.0),
        )


class WearableGenerator:
    """Readings of one simulated wearable, chunk by chunk (see the module docstring)."""

    chunk_s = CHUNK_S

    def __init__(self, device: DeviceConfig, start_time: float) -> None:
        validate_simulator(device)
        assert device.simulator is not None  # checked just above
        self.device = device
        self.start_time = start_time
        self.seed = device.simulator.seed
        episodes = device.simulator.episodes
        self.with_ecg = device.simulator.ecg
        self.vitals = VitalsParams.draw(self.seed)
        self.ecg_params = ecg.EcgParams.draw(self.seed)
        self.heart = BeatGenerator.create(self.seed, episodes)
        self.desaturations = [
            Desaturation(
                ep, *seeded_rng(self.seed, TAG_EPISODE, i).uniform([4.0, 10.0, 10.0], [10.0, 30.0, 30.0])
            )
            for i, ep in enumerate(episodes)
            if ep.condition == "spo2_desaturation"
        ]
        self.contact_loss = [ep for ep in episodes if ep.condition == "contact_loss"]
        self.af = [ep for ep in episodes if ep.condition == "af"]
        self.dropout = Dropout.of(episodes)
        self.stuck = StuckChannels.of(self.seed, episodes, VITALS_CHANNELS)
        self.ground_truth: list[GroundTruth] = ground_truth(
            device, start_time, self.stuck.channel_names(VITALS_CHANNELS)
        )
        self.streams = {
            name: stream_id(device.id, name)
            for name in ("vitals", "rr", *(("ecg",) if self.with_ecg else ()))
        }
        # beats buffer: a warm-up chunk before time 0 gives the first beats a predecessor
        self._beats: FloatArray = self.heart.generate(-CHUNK_S, 0.0, -1)
        self._beats_until_chunk = 0  # next beat chunk to generate
        self._next_chunk = 0

    @property
    def buffered_beats(self) -> int:
        """Beats held between chunks (look-ahead plus history): bounded however long the run."""
        return len(self._beats)

    def chunk(self, index: int) -> list[Reading]:
        """Every reading in simulated seconds [index * 60, (index + 1) * 60), in time order."""
        if index != self._next_chunk:
            raise ValueError(f"chunks must be generated in order: expected {self._next_chunk}, got {index}")
        self._next_chunk += 1
        t0 = index * CHUNK_S
        t1 = t0 + CHUNK_S
        while self._beats_until_chunk <= index + 1:  # one chunk of look-ahead for the ECG templates
            c = self._beats_until_chunk
            new = self.heart.generate(c * CHUNK_S, (c + 1) * CHUNK_S, c)
            self._beats = np.concatenate((self._beats[self._beats >= t0 - 2 * HR_WINDOW_S - 2.0], new))
            self._beats_until_chunk += 1
        readings = self._vitals(t0) + self._rr(t0, t1)
        if self.with_ecg:
            readings += self._ecg(t0, index)
        readings.sort(key=lambda r: r.wall_time)
        return readings

    def _no_contact(self, t: FloatArray) -> np.ndarray:
        mask = np.zeros(t.shape, dtype=bool)
        for ep in self.contact_loss:
            mask |= inside(t, ep)
        return mask

    def _heart_rate(self, t: FloatArray) -> FloatArray:
        beats = self._beats
        last = np.searchsorted(beats, t, side="right") - 1
        first = np.searchsorted(beats, t - HR_WINDOW_S, side="right")
        first = np.minimum(first, last - 1)  # at least one interval, even at very low rates
        mean_rr = (beats[last] - beats[first]) / (last - first)
        hr: FloatArray = np.rint(60.0 / mean_rr)
        return hr

    def _vitals(self, t0: float) -> list[Reading]:
        t = t0 + np.arange(CHUNK_S)
        rng = seeded_rng(self.seed, TAG_VITALS, round(t0 / CHUNK_S))
        p = self.vitals
        spo2 = p.spo2_base + p.spo2_drift(t) + rng.normal(0.0, 0.35, len(t))
        for d in self.desaturations:
            spo2 -= d.drop_pct * plateau(t, d.config, d.fall_s, d.recover_s)
        skin = p.skin_base + p.skin_drift(t) + rng.normal(0.0, 0.02, len(t))
        values = np.column_stack((self._heart_rate(t), np.minimum(np.rint(spo2), 100.0), np.round(skin, 2)))
        self.stuck.apply(t, values)
        quality = np.zeros(len(t), dtype=np.int64)
        for ep in self.contact_loss:
            mask = inside(t, ep)
            cooling = np.exp(-(t[mask] - ep.start_s) / SKIN_COOL_TAU_S)
            values[mask, 0:2] = 0.0
            values[mask, 2] = np.round(ROOM_C + (values[mask, 2] - ROOM_C) * cooling, 2)
            quality[mask] |= int(Quality.NO_CONTACT)
        keep = self.dropout.apply(t, t - 1.0, quality)
        values.flags.writeable = False
        stream = self.streams["vitals"]
        return [
            Reading(
                stream,
                VITALS_CHANNELS,
                values[i : i + 1],
                self.start_time + float(t[i]),
                float(t[i]),
                0.0,
                Quality(int(quality[i])),
            )
            for i in np.flatnonzero(keep)
        ]

    def _rr(self, t0: float, t1: float) -> list[Reading]:
        beats = self._beats
        idx = np.flatnonzero((beats >= t0) & (beats < t1) & (np.arange(len(beats)) > 0))
        t = beats[idx]
        rr = beats[idx] - beats[idx - 1]
        quality = np.zeros(len(t), dtype=np.int64)
        # no RR while the strap has no contact; GAP marks the first beat after a dropout
        keep = ~self._no_contact(t) & self.dropout.apply(t, t - rr, quality)
        values = rr.reshape(-1, 1)
        values.flags.writeable = False
        stream = self.streams["rr"]
        return [
            Reading(
                stream,
                ("rr",),
                values[i : i + 1],
                self.start_time + float(t[i]),
                float(t[i]),
                0.0,
                Quality(int(quality[i])),
            )
            for i in np.flatnonzero(keep)
        ]

    def _ecg(self, t0: float, index: int) -> list[Reading]:
        n = round(CHUNK_S * ecg.ECG_HZ)
        t: FloatArray = t0 + np.arange(n, dtype=np.float64) * ecg.ECG_PERIOD_S
        rng = seeded_rng(self.seed, TAG_ECG, index)
        beats = self._beats[1:]
        rr = np.diff(self._beats)
        near = (beats > t0 - 1.0) & (beats < t0 + CHUNK_S + 1.0)
        beats, rr = beats[near], rr[near]
        af = np.zeros(n, dtype=bool)
        beat_af = np.zeros(len(beats), dtype=bool)
        for ep in self.af:
            af |= inside(t, ep)
            beat_af |= inside(beats, ep)
        signal = ecg.render(self.ecg_params, t, beats, rr, af, beat_af, rng)
        lead_off = self._no_contact(t)
        signal[lead_off] = rng.normal(0.0, 0.4, int(lead_off.sum())) + 2.0 * self.ecg_params.wander(
            t[lead_off]
        )
        blocks = np.round(signal, 4).reshape(-1, ECG_BLOCK)
        starts: FloatArray = t[::ECG_BLOCK]
        span = ECG_BLOCK * ecg.ECG_PERIOD_S
        quality = np.where(lead_off.reshape(-1, ECG_BLOCK).any(axis=1), int(Quality.NO_CONTACT), 0)
        keep = self.dropout.apply(starts, starts - span, quality, span_s=span)
        blocks.flags.writeable = False
        stream = self.streams["ecg"]
        return [
            Reading(
                stream,
                ("ecg",),
                blocks[i].reshape(-1, 1),
                self.start_time + float(starts[i]),
                float(starts[i]),
                ecg.ECG_PERIOD_S,
                Quality(int(quality[i])),
            )
            for i in np.flatnonzero(keep)
        ]
