"""A statistical per-beat PVC score from RR prematurity and QRS morphology, causal, for MIT-BIH.

Each beat is decided 400 ms after its R peak from past beats only. Two parts, both from
`agent.inference.beats` so the gateway's beat windows are used:
- prematurity: RR_prev over the mean of the previous 8 RR intervals (below 1 = early);
- morphology: the distance of the beat window (-0.25 s .. +0.40 s, 64 points, median removed) to a
  template, the point-wise median of the previous 32 beats, as RMS difference over the template's RMS,
  minimised over +-2 points of alignment jitter. A PVC is wide and differently shaped, so it stands out
  against a template dominated by the patient's normal beats.
The score is log(morphology) + w * log(1 / prematurity); the weight w is chosen on the other records
(leave-one-record-out) so every record's scores come from a rule fitted without it.
"""

from __future__ import annotations

import numpy as np

from agent.inference.beats import (
    MIN_TEMPLATE_BEATS,
    TEMPLATE_BEATS,
    beat_windows,
    prematurity,
    shape_distance,
)
from tools.evaluate.datasets import MITDB_FS, FloatArray, Series

WEIGHTS = (0.5, 1.0, 2.0, 4.0, 8.0)


def beat_parts(series: Series) -> tuple[FloatArray, FloatArray]:
    """(prematurity, morphology distance) per beat of a record; NaN until enough history."""
    ecg = series.extra["ecg"]
    peaks = series.extra["r_peak"].astype(np.int64)
    prem = prematurity(series.values[:, 0])
    windows, ok = beat_windows(ecg, peaks, MITDB_FS)
    beats = windows[:, :, 0].astype(np.float64)
    morph = np.full(len(beats), np.nan)
    history: list[FloatArray] = []
    for i, beat in enumerate(beats):
        if len(history) >= MIN_TEMPLATE_BEATS and ok[i]:
            morph[i] = shape_distance(beat, np.array(history))
        if ok[i]:
            history = [*history[-(TEMPLATE_BEATS - 1) :], beat]
    return prem, morph


def combined(prem: FloatArray, morph: FloatArray, weight: float) -> FloatArray:
    """log(morphology) + weight * log(1 / prematurity); a part without history counts as normal."""
    m = np.log(np.nan_to_num(morph, nan=1.0) + 1e-3)
    p = np.log(1.0 / np.clip(np.nan_to_num(prem, nan=1.0), 0.2, 5.0))
    out: FloatArray = m + weight * p
    return out
