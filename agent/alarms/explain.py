"""Readable explanations of alarm events: what crossed what, for how long, and which channels drove it.

Detectors that report a measured value and a limit in the channel's unit (limit, robust_z, ...) read as
"hr 142 bpm above limit 120 bpm for 12 s"; detectors without one fall back to score against threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from agent.detectors.base import FloatArray

TOP_CHANNELS = 3


def fmt(value: float) -> str:
    """Up to 4 significant digits, no trailing zeros: 142, 37.85, 0.0012."""
    return f"{value:.4g}"


def seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.3g} s"


def has_measure(observed: float, limit: float) -> bool:
    return math.isfinite(observed) and math.isfinite(limit)


def crossing(
    detector: str,
    channel: str,
    observed: float,
    limit: float,
    score: float,
    threshold: float,
    unit: str,
    quantity: str = "",
) -> str:
    """The core phrase, without duration: "hr 142 bpm above limit 120 bpm", "hr range 0 bpm below ..."."""
    if has_measure(observed, limit):
        side = "above" if observed > limit else "below"
        suffix = f" {unit}" if unit else ""
        what = f"{channel} {quantity}" if quantity else channel
        return f"{what} {fmt(observed)}{suffix} {side} limit {fmt(limit)}{suffix}"
    return f"{detector} score {fmt(score)} above threshold {fmt(threshold)}"


def top_channels(channels: tuple[str, ...], contributions: FloatArray) -> tuple[tuple[str, float], ...]:
    """The channels with a positive share, largest first, at most `TOP_CHANNELS`."""
    order = np.argsort(-np.nan_to_num(contributions, nan=0.0), kind="stable")
    picked = [(channels[i], float(contributions[i])) for i in order[:TOP_CHANNELS] if contributions[i] > 0]
    return tuple(picked)


def baseline_map(channels: tuple[str, ...], baseline: FloatArray) -> Mapping[str, float]:
    return {c: float(v) for c, v in zip(channels, baseline, strict=True) if math.isfinite(v)}
