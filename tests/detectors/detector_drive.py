"""Helpers for detector tests: configs for every registered type and a hop-by-hop runner."""

from __future__ import annotations

from typing import Any

import numpy as np

from agent.config.schema import DetectorConfig
from agent.detectors import ScoreBlock, StreamingDetector, WindowBlock, build_detector

T0 = 1_800_000_000.0
RATE = 1.0


def make(
    type_: str, channels: tuple[str, ...] = ("x",), rate: float = RATE, **params: Any
) -> StreamingDetector:
    return build_detector(DetectorConfig(f"{type_}_1", type_, "s", channels, params=params), rate)


def run(
    detector: StreamingDetector,
    values: np.ndarray,
    slots: np.ndarray | None = None,
    rate: float = RATE,
    frame: int | None = None,
) -> list[ScoreBlock]:
    """Feed the long series `values` (S, T, C) hop by hop, windows padded with NaN before the start.
    `frame`: new samples per call instead (a device frame longer than the hop); each block then holds
    the window plus the new samples beyond one hop, as the pipeline hands it over."""
    n, total, channels = values.shape
    slots = np.arange(n) if slots is None else slots
    step = frame or detector.hop
    length = detector.window + step - detector.hop
    padded = np.concatenate([np.full((n, length, channels), np.nan), values], axis=1)
    out = []
    for end in range(step, total + 1, step):
        window = padded[:, end : end + length]
        times = np.full(n, T0 + (end - 1) / rate)
        out.append(detector.score(WindowBlock(np.ascontiguousarray(window), slots, times, step)))
    return out


def scores_of(blocks: list[ScoreBlock]) -> np.ndarray:
    """(hops, S) scores."""
    return np.array([b.scores for b in blocks])


def normal_block(values: np.ndarray) -> WindowBlock:
    n = values.shape[0]
    return WindowBlock(values, np.arange(n), np.full(n, T0), 1)


def ar1(
    rng: np.random.Generator, shape: tuple[int, int, int], phi: float = 0.7, mean: float = 70.0
) -> np.ndarray:
    """Gaussian AR(1) noise with unit marginal variance around `mean`, along axis 1."""
    noise = rng.normal(0.0, np.sqrt(1 - phi**2), shape)
    out = np.empty(shape)
    out[:, 0] = rng.normal(0.0, 1.0, (shape[0], shape[2]))
    for t in range(1, shape[1]):
        out[:, t] = phi * out[:, t - 1] + noise[:, t]
    return mean + out
