"""Synthetic pump windows for parity and detector tests (not SKAB data: GPL, it stays out of tests)."""

from __future__ import annotations

import numpy as np

from agent.inference.card import ModelCard


def synthetic_pump_windows(card: ModelCard, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Normal windows (card mean + half a standard deviation of noise) and, for half of them, a step of
    3-8 standard deviations on one to three channels over the second half of the window. Not SKAB data."""
    rng = np.random.default_rng(seed)
    mean, scale = np.asarray(card.mean), np.asarray(card.scale)
    w, c = card.window, len(card.channels)
    x = mean + 0.5 * scale * rng.standard_normal((n, w, c))
    anomalous = np.arange(n) % 2 == 1
    for i in np.flatnonzero(anomalous):
        chans = rng.choice(c, rng.integers(1, 4), replace=False)
        x[i, w // 2 :, chans] += (
            rng.uniform(3, 8, len(chans)) * rng.choice([-1, 1], len(chans)) * scale[chans]
        )[:, None]
    return x, anomalous
