"""Sensor and link faults applied on top of the physics: dropout and stuck sensors, for every device kind.

Both are applied per chunk after the signals are generated. Dropout removes every reading overlapping the
span and sets `Quality.GAP` on the first reading of each stream after it, as a source that counts sequence
numbers would; whether a reading follows a dropout is decided from its predecessor's time, so no state is
needed. A stuck sensor freezes one channel at the last value it had before the episode; that value is the
only state carried between chunks, which is why chunks must be generated in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agent.config.schema import EpisodeConfig
from agent.readings import FloatArray, Quality
from agent.simulation.episodes import TAG_EPISODE, inside, seeded_rng


def overlaps(t: FloatArray, span_s: float, episode: EpisodeConfig) -> np.ndarray:
    """Mask of readings starting at `t` and covering `span_s` seconds (0: a point) that touch `episode`."""
    if span_s <= 0:
        return inside(t, episode)
    return (t < episode.start_s + episode.duration_s) & (t + span_s > episode.start_s)


@dataclass(frozen=True, slots=True)
class Dropout:
    """The dropout episodes of one device."""

    episodes: tuple[EpisodeConfig, ...]

    @classmethod
    def of(cls, episodes: tuple[EpisodeConfig, ...]) -> Dropout:
        return cls(tuple(e for e in episodes if e.condition == "dropout"))

    def lost(self, t: FloatArray, span_s: float = 0.0) -> np.ndarray:
        mask = np.zeros(t.shape, dtype=bool)
        for ep in self.episodes:
            mask |= overlaps(t, span_s, ep)
        return mask

    def apply(
        self, t: FloatArray, previous: FloatArray, quality: np.ndarray, span_s: float = 0.0
    ) -> np.ndarray:
        """Mask of readings to keep; sets GAP in `quality` after a lost reading (the one at `previous`)."""
        keep = ~self.lost(t, span_s)
        after_gap = keep & self.lost(previous, span_s)
        quality[after_gap] |= int(Quality.GAP)
        return keep


@dataclass(slots=True)
class StuckChannels:
    """Freezes one channel per stuck_sensor episode; the channel is drawn per episode from the seed."""

    episodes: list[tuple[EpisodeConfig, int]]
    frozen: dict[int, float] = field(default_factory=dict)  # episode number -> frozen value

    @classmethod
    def of(cls, seed: int, episodes: tuple[EpisodeConfig, ...], channels: tuple[str, ...]) -> StuckChannels:
        chosen = [
            (ep, int(seeded_rng(seed, TAG_EPISODE, i, 1).integers(len(channels))))
            for i, ep in enumerate(episodes)
            if ep.condition == "stuck_sensor"
        ]
        return cls(chosen)

    def channel_names(self, channels: tuple[str, ...]) -> list[str]:
        """The frozen channel of each stuck_sensor episode, in order."""
        return [channels[ch] for _, ch in self.episodes]

    def apply(self, t: FloatArray, values: FloatArray) -> None:
        """Freeze `values[:, channel]` in place over each episode; `t` must be increasing."""
        for number, (ep, ch) in enumerate(self.episodes):
            before = np.flatnonzero(t < ep.start_s)
            if len(before):  # the last healthy sample so far; chunks come in order, so the last one wins
                self.frozen[number] = float(values[before[-1], ch])
            mask = inside(t, ep)
            if not mask.any():
                continue
            if number not in self.frozen:  # the episode starts with the simulation: freeze the first value
                self.frozen[number] = float(values[np.flatnonzero(mask)[0], ch])
            values[mask, ch] = self.frozen[number]
