"""Injected episodes: which conditions exist, validating them, their ground truth and their time envelopes.

An episode is configured as ``EpisodeConfig(condition, start_s, duration_s)`` in simulated seconds from the
start of the simulation. Each generator turns its episodes into smooth envelopes in [0, 1] evaluated on any
array of simulated times, so a chunk can be generated without knowing the chunks before it. Random episode
parameters (target heart rate, depth of a desaturation, ramp lengths) are drawn from a generator seeded by
``(seed, episode index)``, so they do not depend on how the simulation is chunked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from agent.config.schema import DeviceConfig, EpisodeConfig
from agent.errors import ConfigError
from agent.readings import FloatArray

WEARABLE_CONDITIONS = frozenset(
    {
        "tachycardia",
        "bradycardia",
        "af",
        "spo2_desaturation",
        "contact_loss",
        "dropout",
        "stuck_sensor",
    }
)
# "stopped" is no fault: the machine switched off (a standby pump, a duty rotation), then started again.
EQUIPMENT_CONDITIONS = frozenset({"bearing_wear", "temperature_drift", "stuck_sensor", "dropout", "stopped"})

CONDITIONS_BY_KIND: Mapping[str, frozenset[str]] = MappingProxyType(
    {"wearable": WEARABLE_CONDITIONS, "equipment": EQUIPMENT_CONDITIONS}
)

# Streams of one seed are decorrelated by mixing one of these tags into the seed sequence.
TAG_PARAMS = 1
TAG_EPISODE = 2
TAG_BEATS = 3
TAG_VITALS = 4
TAG_ECG = 5
TAG_MACHINE = 6
TAG_LOAD = 7


def seeded_rng(seed: int, *words: int) -> np.random.Generator:
    """A generator for one purpose of one seed; any int seed (negative too) is accepted."""
    return np.random.default_rng([abs(seed), int(seed < 0), *words])


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """One injected episode in wall time: what a perfect detector would report for `device`."""

    condition: str
    device: str
    start: float
    end: float
    channel: str = ""  # stuck_sensor: the channel that froze; "" for the others


def validate_simulator(device: DeviceConfig) -> None:
    """Raise `ConfigError` naming the key of the first bad simulator setting of `device`."""
    sim = device.simulator
    if sim is None:
        raise ConfigError(f"devices.{device.id}.simulator", "missing: a simulated device needs [simulator]")
    prefix = f"devices.{device.id}.simulator"
    if sim.speed < 0 or not np.isfinite(sim.speed):
        raise ConfigError(f"{prefix}.speed", f"must be >= 0 (0: as fast as possible), got {sim.speed}")
    if sim.ecg and device.kind != "wearable":
        raise ConfigError(f"{prefix}.ecg", f"only wearables have an ECG, device kind is {device.kind!r}")
    valid = CONDITIONS_BY_KIND.get(device.kind)
    if valid is None:
        raise ConfigError(f"devices.{device.id}.kind", f"cannot simulate kind {device.kind!r}")
    for i, episode in enumerate(sim.episodes):
        key = f"{prefix}.episodes[{i}]"
        if episode.condition not in valid:
            raise ConfigError(
                f"{key}.condition",
                f"unknown condition {episode.condition!r} for a {device.kind}; "
                f"valid: {', '.join(sorted(valid))}",
            )
        if not (np.isfinite(episode.start_s) and episode.start_s >= 0):
            raise ConfigError(f"{key}.start_s", f"must be >= 0, got {episode.start_s}")
        if not (np.isfinite(episode.duration_s) and episode.duration_s > 0):
            raise ConfigError(f"{key}.duration_s", f"must be > 0, got {episode.duration_s}")


def ground_truth(
    device: DeviceConfig, start_time: float, stuck_channels: list[str] | None = None
) -> list[GroundTruth]:
    """The configured episodes of `device` as wall-time ground truth, in configuration order.

    `stuck_channels` names the frozen channel of each stuck_sensor episode, in order.
    """
    episodes = device.simulator.episodes if device.simulator else ()
    stuck = iter(stuck_channels or ())
    return [
        GroundTruth(
            e.condition,
            device.id,
            start_time + e.start_s,
            start_time + e.start_s + e.duration_s,
            next(stuck, "") if e.condition == "stuck_sensor" else "",
        )
        for e in episodes
    ]


def inside(t: FloatArray, episode: EpisodeConfig) -> np.ndarray:
    """Boolean mask of the simulated times `t` inside `episode` (start inclusive, end exclusive)."""
    return (t >= episode.start_s) & (t < episode.start_s + episode.duration_s)


def plateau(t: FloatArray, episode: EpisodeConfig, rise_s: float, fall_s: float) -> FloatArray:
    """Envelope in [0, 1]: raised-cosine rise over `rise_s`, hold, fall over `fall_s`, all inside the episode.

    Ramps are shortened proportionally when the episode is shorter than both together.
    """
    start, end = episode.start_s, episode.start_s + episode.duration_s
    total = rise_s + fall_s
    if total > episode.duration_s:
        rise_s, fall_s = rise_s * episode.duration_s / total, fall_s * episode.duration_s / total
    up = np.clip((t - start) / max(rise_s, 1e-9), 0.0, 1.0)
    down = np.clip((end - t) / max(fall_s, 1e-9), 0.0, 1.0)
    level = np.minimum(up, down)
    env: FloatArray = 0.5 - 0.5 * np.cos(np.pi * level)
    return env


def progress(t: FloatArray, episode: EpisodeConfig) -> FloatArray:
    """0 before the episode, rising linearly to 1 at its end, 0 again after it (the fault is repaired)."""
    frac = (t - episode.start_s) / episode.duration_s
    out: FloatArray = np.where(inside(t, episode), frac, 0.0)
    return out
