"""How wide a beat's QRS is, from that beat alone (``qrs_width``, s): no template, no other beat.

The shape distances (agent.ecg.beat_shape) say how unlike the patient's recent beats a beat is, so they
need recent beats of a known kind: right after the templates start afresh (a lead-off, a long hole) the
first beats *are* the template, and a VT under way then reads normal. A ventricular beat is also wide on
its own (a normal QRS lasts < 120 ms, a PVC's or a VT's more), which this measures without a template.

The measure: the ECG from `BEFORE_S` before to `AFTER_S` after the R peak, smoothed by two boxcars of
1/50 s and 1/60 s (the QRS detector's slope band without its high-pass: mains and muscle noise out, a
PVC's slow slopes kept), and its slope d; the width is the slope's participation ratio
(sum |d|)^2 / (sum d^2) / rate, the duration over which a slope of constant size would give the same total
variation and slope energy. A triangle of width W reads W; a narrow QRS, whose energy sits in its steep R
upstroke and downstroke, about 50-70 ms; a PVC about 100 ms. Sign and scale drop out (a lead put back
inverted or smaller reads the same), baseline wander is nearly flat over 200 ms, and a T wave after
`AFTER_S` is outside. It is not a clinical QRS duration (onset to offset): its scale is its own.

On MIT-BIH's 12 records (the QRS detector's peaks matched to the annotations) it tells PVCs from the
other beats with a ROC-AUC of 0.946 (peak-to-peak over the steepest slope, or the total variation over
it, 0.78-0.86): median 67 ms for the beats neither PVC nor paced (95th percentile 95 ms, wider on noisy
records and those whose normal QRS is wide: 105, 108, 114, 121 medians 83-87 ms), 106 ms for PVCs (5th
percentile 83 ms), 90 ms for the paced beats of 102 and 104 (docs/benchmarks.md).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import numpy.typing as npt

BEFORE_S, AFTER_S = 0.08, 0.12  # the span measured around the R peak (a PVC's R may sit early in it)
SMOOTHING_S = (1.0 / 50.0, 1.0 / 60.0)  # boxcar lengths: 50 and 60 Hz nulled, the QRS's slopes kept


@functools.cache
def _kernel(rate_hz: float) -> npt.NDArray[np.float64]:
    """The two boxcars in one kernel, at `rate_hz` (one per rate)."""
    kernel = np.ones(1)
    for seconds in SMOOTHING_S:
        n = max(1, round(seconds * rate_hz))
        kernel = np.convolve(kernel, np.ones(n) / n)
    return kernel


def margin(rate_hz: float) -> tuple[int, int]:
    """(samples before, after) the peak that `qrs_width` reads, the kernel's reach included."""
    reach = len(_kernel(rate_hz)) // 2 + 1
    return round(BEFORE_S * rate_hz) + reach, round(AFTER_S * rate_hz) + reach


def qrs_width(segment: npt.NDArray[np.float64], peak: int, rate_hz: float) -> float:
    """The width (s) of the beat whose R peak is `segment[peak]`; NaN when the segment does not hold the
    samples `margin` asks for, holds a non-finite one, or is flat."""
    before, after = margin(rate_hz)
    if peak < before or peak + after >= len(segment):
        return math.nan
    around = segment[peak - before : peak + after + 1]
    if not np.isfinite(around).all():
        return math.nan
    kernel = _kernel(rate_hz)
    smooth = np.convolve(around, kernel, mode="valid")  # centred: `reach` - 1 .. samples dropped each side
    start = before - len(kernel) // 2 - round(BEFORE_S * rate_hz)
    span = smooth[start : start + round((BEFORE_S + AFTER_S) * rate_hz) + 1]
    slope = np.diff(span)
    energy = float(np.sum(slope * slope))
    if not energy > 0.0:
        return math.nan
    return float(np.sum(np.abs(slope))) ** 2 / energy / rate_hz
