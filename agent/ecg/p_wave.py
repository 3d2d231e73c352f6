"""Atrial activity before each beat (``p_wave``): how alike the pre-R segments of the recent beats are.

In sinus rhythm, with or without ventricular ectopy, each normally conducted beat is preceded by a P wave
at a stable PR interval, so the segment before its R peak repeats from beat to beat; in atrial
fibrillation there is no P wave, only a fibrillatory baseline, and the segment is noise. Bedside monitors
combine RR irregularity with this (Babaeizadeh et al. 2009, J Electrocardiol 42:522; Ladavich & Ghoraani
2015). Here, per beat of normal QRS shape:

1. the segment from `P_BEFORE_S` (0.30 s) to `P_AFTER_S` (0.08 s) before the R peak (the P wave of a PR
   interval of 0.12-0.25 s; the QRS onset left out), smoothed by a `SMOOTH_S` (40 ms) moving average
   (muscle noise, which otherwise dominated MIT-BIH record 200's small P waves), resampled to `POINTS`
   points and linearly detrended (baseline wander);
2. ``p_wave`` = its correlation (-1..1) with the mean of the previous `TEMPLATE_BEATS` (16) such segments:
   about 0.9-1 with P waves, about 0 in AF (CPSC-2021 AF, annotated beats: median 0.0-0.1 on subjects 8
   and 84, 0.3-0.65 on 92 and 101 before the `MIN_RR_S` rule), but only about 0.5 on MIT-BIH record 200,
   whose P waves are small beside its noise.

A segment that holds part of the QRS gets none either (fail safe: no value rather than a false "P waves
present"): in a wide or multiphasic QRS (bundle branch block, an R wave 40-100 ms before a deeper broad S,
RSR') the sample taken as the R peak (the largest deflection) comes late, so the segment's end holds the
start of the QRS, which repeats every beat and would read as P waves even in AF. Such a segment is known by
its slope: a P wave (at most ~0.25 mV over >= 40 ms) rises about 10x slower than a QRS (>= 0.5 mV over
20-40 ms), so a segment whose steepest raw step is more than `MAX_SLOPE_RATIO` (0.30, above the ~0.25 of
the tallest P beside a low-voltage QRS) of the steepest step within `QRS_HALF_S` (40 ms) of the R peak
carries QRS, not atrial activity (so does a segment with steep noise: MIT-BIH record 200 loses 184 of
its 1241 values, mostly low ones).

Beats of unusual QRS shape (a PVC: no P wave of its own), beats after an interval under `MIN_RR_S` (0.65 s:
the previous T wave would reach into the segment; fast AF's beats mostly) and the first
`MIN_TEMPLATE_BEATS` of a segment get none and do not join the template. Known limits: a fast sinus or
atrial tachycardia (intervals under 0.65 s) gets no value at all, so the AF detector is as without it;
a slow early part of a wide QRS (e.g. 0.6 mV over ~100 ms, 60-100 ms before a sharp 1.5 mV R: a slope
ratio of 0.2-0.25) passes the slope test and still reads as P waves; what repeats is "alike", not
necessarily a P wave (atrial flutter's regular F waves repeat too, and so does a T wave that reaches
into the segment at a steady rate); a lead in which the P wave is flat (some chest positions) or small
beside noise gives low values in sinus rhythm, which leaves the AF detector as it was (see
agent.detectors.af, `p_wave_present`).
"""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

P_BEFORE_S, P_AFTER_S = 0.30, 0.08  # the pre-R segment, seconds before the R peak
SMOOTH_S = 0.040  # moving-average length: keeps the P wave (80-120 ms), drops muscle noise
POINTS = 24  # the segment resampled to this many points, whatever the sample rate
TEMPLATE_BEATS = 16
MIN_TEMPLATE_BEATS = 8
NORMAL_SHAPE = 1.0  # qrs_shape above this: not a normally conducted beat (agent.ecg.beat_shape)
QRS_HALF_S = 0.040  # the R peak's neighbourhood whose steepest step is the QRS's
MAX_SLOPE_RATIO = 0.30  # a segment step steeper than this share of the QRS's: QRS in the segment, no value
# A beat after a shorter interval has the previous T wave in its segment (QT ~0.35 s + the 0.30 s): none.
MIN_RR_S = 0.65


def samples_needed(rate_hz: float) -> int:
    """Raw samples before the R peak the segment of one beat uses (its start plus the smoothing)."""
    return round(P_BEFORE_S * rate_hz) + _smooth_len(rate_hz) - 1


def samples_after(rate_hz: float) -> int:
    """Raw samples after the R peak `holds_qrs` needs (the QRS's neighbourhood)."""
    return round(QRS_HALF_S * rate_hz)


def holds_qrs(raw: npt.NDArray[np.float64], rate_hz: float) -> bool:
    """Whether the pre-R segment holds part of the QRS: its steepest raw step (the unsmoothed samples the
    segment averages) is steeper than `MAX_SLOPE_RATIO` of the steepest within `QRS_HALF_S` of the R
    peak. `raw`: the `samples_needed` samples before the R peak, the peak's and `samples_after` after it."""
    peak = samples_needed(rate_hz)
    half = samples_after(rate_hz)
    segment_steps = np.abs(np.diff(raw[: peak - round(P_AFTER_S * rate_hz) + 1]))
    qrs_steps = np.abs(np.diff(raw[peak - half : peak + half + 1]))
    return bool(segment_steps.max() > MAX_SLOPE_RATIO * qrs_steps.max())


def _smooth_len(rate_hz: float) -> int:
    return max(1, round(SMOOTH_S * rate_hz))


def pre_r_segment(raw: npt.NDArray[np.float64], rate_hz: float) -> npt.NDArray[np.float64]:
    """The beat's smoothed, resampled, detrended pre-R segment from `raw`: the `samples_needed` samples
    before its R peak and the samples up to it (so `raw[-1]` is the R peak's sample)."""
    width = _smooth_len(rate_hz)
    smoothed = np.convolve(raw, np.full(width, 1.0 / width), mode="valid")  # causal: no padded edges
    start = round(P_BEFORE_S * rate_hz)
    stop = round(P_AFTER_S * rate_hz)
    # smoothed[i] averages raw[i .. i + width - 1]: index the R peak's sample counts from the end.
    peak = len(smoothed) - 1
    segment = smoothed[peak - start : peak - stop + 1]
    resampled = np.interp(np.linspace(0.0, len(segment) - 1.0, POINTS), np.arange(len(segment)), segment)
    x = np.arange(POINTS) - (POINTS - 1) / 2.0
    centred = resampled - resampled.mean()
    return np.asarray(centred - x * float(x @ centred) / float(x @ x), dtype=np.float64)


class AtrialActivity:
    """One ECG segment's recent pre-R segments of normal beats; `score` per beat, in beat order."""

    def __init__(self) -> None:
        self._history: deque[npt.NDArray[np.float64]] = deque(maxlen=TEMPLATE_BEATS)

    def score(self, segment: npt.NDArray[np.float64]) -> float:
        """The correlation of a normal beat's `segment` with the template (NaN: no template yet, or a
        flat segment); the segment then joins the template."""
        value = float("nan")
        if len(self._history) >= MIN_TEMPLATE_BEATS:
            template = np.mean(np.array(self._history), axis=0)
            norm = float(np.linalg.norm(segment) * np.linalg.norm(template))
            if norm > 0.0:
                value = float(segment @ template) / norm
        if np.isfinite(segment).all():
            self._history.append(segment)
        return value
