"""Helpers for the simulator tests: device configs and per-stream arrays out of `simulate`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.config.schema import DeviceConfig, EpisodeConfig, SimulatorConfig
from agent.readings import FloatArray, Reading

START = 1_700_000_000.0


def wearable(
    seed: int = 1, *episodes: tuple[str, float, float], ecg: bool = False, speed: float = 1.0
) -> DeviceConfig:
    return DeviceConfig(
        "w1",
        "wearable",
        "simulator",
        simulator=SimulatorConfig(seed, speed, ecg, tuple(EpisodeConfig(*e) for e in episodes)),
    )


def equipment(seed: int = 1, *episodes: tuple[str, float, float], speed: float = 1.0) -> DeviceConfig:
    return DeviceConfig(
        "pump7",
        "equipment",
        "simulator",
        simulator=SimulatorConfig(seed, speed, False, tuple(EpisodeConfig(*e) for e in episodes)),
    )


@dataclass(frozen=True)
class Series:
    """One stream as arrays: simulated seconds `t` (first-sample times), stacked `values`, quality ints."""

    t: FloatArray
    values: FloatArray
    quality: np.ndarray
    channels: tuple[str, ...]

    def col(self, name: str) -> FloatArray:
        out: FloatArray = self.values[:, self.channels.index(name)]
        return out

    def between(self, a: float, b: float) -> Series:
        m = (self.t >= a) & (self.t < b)
        return Series(self.t[m], self.values[m], self.quality[m], self.channels)


def series(readings: list[Reading], stream: str) -> Series:
    mine = [r for r in readings if r.stream == stream]
    assert mine, f"no readings of {stream}"
    return Series(
        np.array([r.wall_time - START for r in mine]),
        np.vstack([r.values[:1] if r.n_samples > 1 else r.values for r in mine]),
        np.array([int(r.quality) for r in mine]),
        mine[0].channels,
    )
