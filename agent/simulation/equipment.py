"""Simulated equipment (a pump motor): stream "machine" at 1 Hz (vibration_rms, bearing_temp, motor_current).

The motor runs load cycles: every cycle (a per-seed length of 4-10 min) has a load level drawn from the
seed and the cycle number, reached through a 10 s ramp from the previous level, plus small process
fluctuation. Motor current is linear in load (idle to full-load current, per seed). Vibration RMS is a
per-seed baseline of 1.0-2.2 mm/s (ISO 10816 zone A/B for a medium machine) rising mildly with load, with
multiplicative measurement noise. Bearing temperature is ambient (daily cycle plus drift) plus a
first-order thermal lag (time constant 10-20 min) of a load-dependent temperature rise; the lag state is
the only value carried between chunks. Episodes: bearing_wear multiplies vibration by up to 3-6x
(quadratic growth) and adds friction heat into the thermal lag; temperature_drift adds a linear drift of
8-15 °C to the bearing temperature reading; both end with the episode (the bearing is replaced, the sensor
recalibrated). A stopped episode switches the motor off: no current (sensor noise), vibration at the
sensor's floor, no heat input (the bearing cools to ambient); at its end the motor starts with an inrush
current and a run-up vibration that die out in seconds, and the load ramps up from 0 in 10 s. Dropout and
stuck sensors come from `faults`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.config.schema import DeviceConfig, EpisodeConfig
from agent.readings import FloatArray, Quality, Reading, stream_id
from agent.simulation.episodes import (
    TAG_EPISODE,
    TAG_LOAD,
    TAG_MACHINE,
    TAG_PARAMS,
    GroundTruth,
    ground_truth,
    inside,
    progress,
    seeded_rng,
    validate_simulator,
)
from agent.simulation.faults import Dropout, StuckChannels
from agent.simulation.processes import Drift, first_order_lag

CHUNK_S = 60.0
MACHINE_CHANNELS = ("vibration_rms", "bearing_temp", "motor_current")
LOAD_RAMP_S = 10.0
INRUSH_S = 1.5  # time constant of a start's inrush current (x5 full-load current at the start)
RUN_UP_S = 5.0  # time constant of a start's extra vibration (x2.5 at the start)
OFF_VIBRATION_MM_S = 0.02  # what a vibration sensor reads on a stopped machine
DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class MachineParams:
    vib_mm_s: float
    idle_a: float
    full_a: float
    rise_idle_c: float
    rise_full_c: float
    tau_s: float
    cycle_s: float
    ambient_c: float
    ambient_phase: float
    ambient_drift: Drift

    @classmethod
    def draw(cls, seed: int) -> MachineParams:
        rng = seeded_rng(seed, TAG_PARAMS, 3)
        return cls(
            vib_mm_s=float(rng.uniform(1.0, 2.2)),
            idle_a=float(rng.uniform(2.5, 4.0)),
            full_a=float(rng.uniform(10.0, 16.0)),
            rise_idle_c=float(rng.uniform(8.0, 12.0)),
            rise_full_c=float(rng.uniform(25.0, 35.0)),
            tau_s=float(rng.uniform(600.0, 1200.0)),
            cycle_s=float(rng.uniform(240.0, 600.0)),
            ambient_c=float(rng.uniform(19.0, 24.0)),
            ambient_phase=float(rng.uniform(0.0, 2.0 * np.pi)),
            ambient_drift=Drift.make(rng, 0.5, 1.0 / 7200.0, 1.0 / 600.0, n=4),
        )


@dataclass(frozen=True, slots=True)
class Fault:
    """A bearing_wear or temperature_drift episode with its drawn size."""

    config: EpisodeConfig
    vib_factor: float  # bearing_wear: vibration multiplier reached at the end of the episode
    heat_c: float  # extra steady-state temperature rise (wear) or sensor drift (temperature_drift)


class EquipmentGenerator:
    """Readings of one simulated machine, chunk by chunk (see the module docstring)."""

    chunk_s = CHUNK_S

    def __init__(self, device: DeviceConfig, start_time: float) -> None:
        validate_simulator(device)
        assert device.simulator is not None  # checked just above
        self.start_time = start_time
        self.seed = device.simulator.seed
        episodes = device.simulator.episodes
        self.params = MachineParams.draw(self.seed)
        self.faults: list[Fault] = []
        for i, ep in enumerate(episodes):
            rng = seeded_rng(self.seed, TAG_EPISODE, i)
            if ep.condition == "bearing_wear":
                self.faults.append(Fault(ep, float(rng.uniform(3.0, 6.0)), float(rng.uniform(8.0, 15.0))))
            elif ep.condition == "temperature_drift":
                self.faults.append(Fault(ep, 1.0, float(rng.uniform(8.0, 15.0))))
        self.stops = tuple(ep for ep in episodes if ep.condition == "stopped")
        self.dropout = Dropout.of(episodes)
        self.stuck = StuckChannels.of(self.seed, episodes, MACHINE_CHANNELS)
        self.ground_truth: list[GroundTruth] = ground_truth(
            device, start_time, self.stuck.channel_names(MACHINE_CHANNELS)
        )
        self.stream = stream_id(device.id, "machine")
        first = np.zeros(1)
        self._thermal = float(self._heat_input(first, self._load(first))[0])  # start warm, at steady state
        self._next_chunk = 0

    def _load(self, t: FloatArray) -> FloatArray:
        """Load in [0, 1]: a level per cycle, ramped from the previous cycle's level."""
        cycle = np.floor(t / self.params.cycle_s).astype(np.int64)
        numbers = np.unique(np.concatenate((cycle, cycle - 1)))  # two or three cycles per chunk
        levels = np.array([self._cycle_level(int(c)) for c in numbers])
        current = levels[np.searchsorted(numbers, cycle)]
        previous = levels[np.searchsorted(numbers, cycle - 1)]
        ramp = np.clip((t - cycle * self.params.cycle_s) / LOAD_RAMP_S, 0.0, 1.0)
        load: FloatArray = previous + (current - previous) * ramp
        return load

    def _cycle_level(self, cycle: int) -> float:
        if cycle < 0:
            cycle = 0  # before the start: as the first cycle
        rng = seeded_rng(self.seed, TAG_LOAD, cycle)
        # mostly working at part or full load, sometimes idling
        return float(rng.uniform(0.05, 0.15) if rng.uniform() < 0.15 else rng.uniform(0.4, 1.0))

    def _heat_input(self, t: FloatArray, load: FloatArray) -> FloatArray:
        p = self.params
        heat = p.rise_idle_c + (p.rise_full_c - p.rise_idle_c) * load
        for f in self.faults:
            if f.config.condition == "bearing_wear":
                heat = heat + f.heat_c * progress(t, f.config) ** 2
        return np.where(self._off(t), 0.0, heat)

    def _off(self, t: FloatArray) -> np.ndarray:
        """Where the motor is switched off (a stopped episode)."""
        off = np.zeros(len(t), dtype=bool)
        for stop in self.stops:
            off |= inside(t, stop)
        return off

    def _since_start(self, t: FloatArray) -> FloatArray:
        """Seconds since the end of the latest stop before each time (inf: none)."""
        since = np.full(len(t), np.inf)
        for stop in self.stops:
            dt = t - (stop.start_s + stop.duration_s)
            since = np.where((dt >= 0) & (dt < since), dt, since)
        return since

    def chunk(self, index: int) -> list[Reading]:
        """Every reading in simulated seconds [index * 60, (index + 1) * 60), in time order."""
        if index != self._next_chunk:
            raise ValueError(f"chunks must be generated in order: expected {self._next_chunk}, got {index}")
        self._next_chunk += 1
        p = self.params
        t: FloatArray = index * CHUNK_S + np.arange(CHUNK_S, dtype=np.float64)
        rng = seeded_rng(self.seed, TAG_MACHINE, index)
        load = np.clip(self._load(t) + rng.normal(0.0, 0.02, len(t)), 0.0, 1.1)
        current = p.idle_a + (p.full_a - p.idle_a) * load + rng.normal(0.0, 0.05, len(t))
        vibration = p.vib_mm_s * (0.7 + 0.3 * load) * rng.lognormal(0.0, 0.06, len(t))
        if self.stops:  # drawn only with stops, so a pump without them is as it always was
            off, since = self._off(t), self._since_start(t)
            load = load * np.clip(since / LOAD_RAMP_S, 0.0, 1.0)
            current = p.idle_a + (p.full_a - p.idle_a) * load + rng.normal(0.0, 0.05, len(t))
            current = current + 5.0 * p.full_a * np.exp(-since / INRUSH_S)
            vibration = vibration * (1.0 + 1.5 * np.exp(-since / RUN_UP_S))
            current = np.where(off, np.abs(rng.normal(0.0, 0.05, len(t))), current)
            vibration = np.where(off, OFF_VIBRATION_MM_S * rng.lognormal(0.0, 0.3, len(t)), vibration)
        ambient = p.ambient_c + 2.0 * np.sin(2.0 * np.pi * t / DAY_S + p.ambient_phase) + p.ambient_drift(t)
        rise = first_order_lag(self._heat_input(t, load), self._thermal, 1.0, p.tau_s)
        self._thermal = float(rise[-1])
        temp = ambient + rise + rng.normal(0.0, 0.05, len(t))
        for f in self.faults:
            if f.config.condition == "bearing_wear":
                vibration *= 1.0 + (f.vib_factor - 1.0) * progress(t, f.config) ** 2
            else:
                temp += f.heat_c * progress(t, f.config)
        values = np.column_stack((np.round(vibration, 2), np.round(temp, 1), np.round(current, 2)))
        self.stuck.apply(t, values)
        quality = np.zeros(len(t), dtype=np.int64)
        keep = self.dropout.apply(t, t - 1.0, quality)
        values.flags.writeable = False
        return [
            Reading(
                self.stream,
                MACHINE_CHANNELS,
                values[i : i + 1],
                self.start_time + float(t[i]),
                float(t[i]),
                0.0,
                Quality(int(quality[i])),
            )
            for i in np.flatnonzero(keep)
        ]
