"""Beat-centred windows and RR prematurity for the `ecg-beat` model, shared by training and the gateway.

A beat window runs from 0.25 s before to 0.40 s after the R peak, so a beat can be decided 400 ms after
its R peak; it is linearly resampled to 64 points (the model's input length, independent of the ECG's
sample rate) and the window median is subtracted (baseline wander). Prematurity is RR_prev divided by
the mean of the previous 8 RR intervals: past beats only, below 1 for an early beat.
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.typing import NDArray

BEFORE_S, AFTER_S = 0.25, 0.40
POINTS = 64
RR_HISTORY = 8


def beat_windows(
    signal: NDArray[np.float64], r_peaks: NDArray[np.int64], fs: float
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """(N, 64, 1) windows around the R peaks; `ok` is False where a window would leave the signal."""
    before, after = round(BEFORE_S * fs), round(AFTER_S * fs)
    grid = np.linspace(-before, after, POINTS)
    base = np.arange(-before, after + 1)
    ok = (r_peaks - before >= 0) & (r_peaks + after < len(signal))
    out = np.zeros((len(r_peaks), POINTS), np.float32)
    for i in np.flatnonzero(ok):
        resampled = np.interp(grid, base, signal[r_peaks[i] - before : r_peaks[i] + after + 1])
        out[i] = resampled - np.median(resampled)
    return out[:, :, None], ok


TEMPLATE_BEATS = 32  # the template is the point-wise median of this many previous beats
MIN_TEMPLATE_BEATS = 8  # no shape before this many
SHIFTS = range(-2, 3)  # alignment jitter of the R peak, in points of the 64


def shape_distance(beat: NDArray[np.float64], history: NDArray[np.float64]) -> float:
    """How unlike the patient's recent beats `beat` is: the RMS difference between the beat window and
    the point-wise median of `history` (previous beat windows, one per row), over the median's RMS,
    minimised over +-2 points of alignment. A PVC is wide and differently shaped, so it stands out
    against a template dominated by the patient's normal beats."""
    template = np.median(history, axis=0)
    shifted = beat[_rolls(len(beat))]  # row i: np.roll(beat, SHIFTS[i]), in one gather
    best = float(np.min(np.sum((shifted - template) ** 2, axis=1)))
    return float(np.sqrt(best / (float(np.sum(template**2)) + 1e-9)))


@functools.cache
def _rolls(points: int) -> NDArray[np.intp]:
    """Indices that give np.roll(beat, k) for every k of SHIFTS as the rows of one array."""
    rolls: NDArray[np.intp] = (np.arange(points)[None, :] - np.array(SHIFTS)[:, None]) % points
    return rolls


def prematurity(rr_prev: NDArray[np.float64]) -> NDArray[np.float64]:
    """RR_prev / mean of the previous RR_HISTORY intervals; NaN until that history exists."""
    out = np.full(len(rr_prev), np.nan)
    for i in range(RR_HISTORY, len(rr_prev)):
        history = rr_prev[i - RR_HISTORY : i]
        if np.isfinite(history).all() and np.isfinite(rr_prev[i]):
            out[i] = rr_prev[i] / history.mean()
    return out
