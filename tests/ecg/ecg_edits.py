"""Simulated ECG with a stretch replaced: a flat line (a pause), NaN (a lead without values)."""

from __future__ import annotations

import numpy as np

from agent.readings import Reading
from tests.simulation.simhelpers import START


def edited_ecg(
    readings: list[Reading], start: float, end: float, value: float, stream: str = "w1/ecg"
) -> list[Reading]:
    """`readings` with the samples of `stream` in [start, end) simulated seconds set to `value`."""
    out = []
    for r in readings:
        if r.stream == stream:
            t = r.wall_time - START + np.arange(r.n_samples) * r.period_s
            values = r.values.copy()
            values[(t >= start) & (t < end), 0] = value
            r = Reading(r.stream, r.channels, values, r.wall_time, r.monotonic, r.period_s, r.quality)
        out.append(r)
    return out
