"""A single-lead ECG synthesised from beat times: a sum-of-Gaussians P-QRS-T template per beat.

The morphology follows McSharry et al.'s ECGSYN (IEEE TBME 2003): five Gaussian waves P, Q, R, S, T placed
relative to the R peak, the T wave moving later and widening with the RR interval (sqrt-RR, Bazett-like)
so the QT interval shortens at high rates. The R wave is centred exactly on the beat time, so R peaks
line up with the "rr" stream. In AF the P wave is replaced by low-amplitude fibrillatory waves (4-9 Hz).
Baseline wander (respiration, 0.05-0.5 Hz) and white noise are added. Rendering is vectorised: every beat's
template is evaluated on a fixed window of samples around it and summed with one `np.bincount`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.readings import FloatArray
from agent.simulation.episodes import TAG_PARAMS, seeded_rng
from agent.simulation.processes import Drift

ECG_HZ = 250.0
ECG_PERIOD_S = 1.0 / ECG_HZ
WINDOW_BEFORE_S = 0.36  # the template lives in [R - 0.36 s, R + 0.64 s]
WINDOW_AFTER_S = 0.64


@dataclass(frozen=True, slots=True)
class EcgParams:
    """Per-seed morphology: amplitudes (mV) of P, Q, R, S, T; wander and noise levels (mV)."""

    amps: FloatArray
    wander: Drift
    f_waves: Drift
    noise_mv: float

    @classmethod
    def draw(cls, seed: int) -> EcgParams:
        rng = seeded_rng(seed, TAG_PARAMS, 1)
        amps = np.array(
            [
                rng.uniform(0.08, 0.2),  # P
                -rng.uniform(0.05, 0.2),  # Q
                rng.uniform(0.8, 1.6),  # R
                -rng.uniform(0.15, 0.4),  # S
                rng.uniform(0.2, 0.45),  # T
            ]
        )
        return cls(
            amps=amps,
            wander=Drift.make(rng, 0.06, 0.05, 0.5, n=5),
            f_waves=Drift.make(rng, 0.04, 4.0, 9.0, n=8),
            noise_mv=float(rng.uniform(0.01, 0.025)),
        )


# offset from R (s) and width (s) of P, Q, R, S at RR = 1 s; T scales with sqrt(RR)
OFFSETS_S = np.array([-0.17, -0.03, 0.0, 0.03, 0.27])
WIDTHS_S = np.array([0.022, 0.008, 0.009, 0.009, 0.05])


def render(
    params: EcgParams,
    t: FloatArray,
    beats: FloatArray,
    rr: FloatArray,
    af: np.ndarray,
    beat_af: np.ndarray,
    rng: np.random.Generator,
) -> FloatArray:
    """ECG (mV) at evenly spaced times `t` (period ECG_PERIOD_S) from `beats` and their RR intervals.

    `af` masks the samples in AF (fibrillatory waves), `beat_af` the beats in AF (no P wave).
    """
    n = len(t)
    signal = params.wander(t) + rng.normal(0.0, params.noise_mv, n)
    signal += np.where(af, params.f_waves(t), 0.0)
    if len(beats) == 0:
        return signal
    offsets = np.arange(-round(WINDOW_BEFORE_S * ECG_HZ), round(WINDOW_AFTER_S * ECG_HZ) + 1)
    nearest = np.rint((beats - t[0]) / ECG_PERIOD_S).astype(np.int64)
    idx = nearest[:, None] + offsets[None, :]  # (beats, window)
    tau = t[0] + idx * ECG_PERIOD_S - beats[:, None]  # time since each R peak
    scale = np.sqrt(np.clip(rr, 0.3, 2.0))[:, None]
    amps = np.broadcast_to(params.amps, (len(beats), 5)).copy()
    amps[beat_af, 0] = 0.0  # no organised atrial activity in AF
    wave = np.zeros(idx.shape)
    for k in range(5):
        centre = OFFSETS_S[k] * (scale if k == 4 else 1.0)
        width = WIDTHS_S[k] * (scale if k == 4 else 1.0)
        wave += amps[:, k : k + 1] * np.exp(-0.5 * ((tau - centre) / width) ** 2)
    valid = (idx >= 0) & (idx < n)
    signal += np.bincount(idx[valid], weights=wave[valid], minlength=n)
    return signal
