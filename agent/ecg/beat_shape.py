"""The shape of each beat found in an ECG against the patient's own recent beats (`qrs_shape`).

A premature ventricular beat is early *and* wide, differently shaped; RR alone sees only the first. For
each beat the stage (agent.ecg.rr_from_ecg) asks for its shape: the beat window (0.25 s before to 0.40 s
after the R peak, resampled to 64 points, median removed: `agent.inference.beats.beat_windows`, the
`ecg-beat` model's input) is compared with the point-wise median of the previous 32 windows
(`shape_distance`): about 0.1-0.3 for the patient's usual beat, above 1 for a PVC. So the shape of a beat is
known 0.40 s after its R peak at the earliest; the stage holds the beat's reading until then.

The raw samples are kept only as long as a beat could still need them (the detector's delay plus the
window). A window with a NaN (a hole in the signal) or one that began before the current segment has no
shape (NaN) and does not enter the template; nor do beats before `MIN_TEMPLATE_BEATS`. `before` gives the
raw samples before a peak for its atrial activity (agent.ecg.p_wave), which reaches 0.35 s back.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

from agent.inference.beats import (
    AFTER_S,
    BEFORE_S,
    MIN_TEMPLATE_BEATS,
    TEMPLATE_BEATS,
    beat_windows,
    shape_distance,
)


class BeatShapes:
    """One ECG segment's raw samples and recent beat windows; `shape(peak)` once `ready(peak)`."""

    def __init__(self, rate_hz: float, delay_s: float, start: int = 0) -> None:
        """`start`: the index (in the stage's count of samples) of the first sample it will be given."""
        self.rate_hz = rate_hz
        self._before = round(BEFORE_S * rate_hz)
        self._after = round(AFTER_S * rate_hz)
        self._keep = round((delay_s + BEFORE_S + AFTER_S + 1.0) * rate_hz)
        self._raw: npt.NDArray[np.float64] = np.empty(0)
        self._raw_start = start  # index (since the segment began) of _raw[0]
        self._fed = start
        self._history: deque[npt.NDArray[np.float64]] = deque(maxlen=TEMPLATE_BEATS)

    def add(self, samples: npt.NDArray[np.float64]) -> None:
        self._raw = np.concatenate([self._raw, samples])
        self._fed += len(samples)
        extra = len(self._raw) - self._keep
        if extra > 0:
            self._raw = self._raw[extra:]
            self._raw_start += extra

    def ready(self, peak: int) -> bool:
        """The beat's window has all its samples."""
        return peak + self._after < self._fed

    def before(self, peak: int, count: int) -> npt.NDArray[np.float64] | None:
        """The `count` raw samples before the R peak and the peak's own (None: not all kept, or a NaN)."""
        lo = peak - count - self._raw_start
        segment = self._raw[max(lo, 0) : peak + 1 - self._raw_start]
        if lo < 0 or len(segment) != count + 1 or not np.isfinite(segment).all():
            return None
        return segment

    def shape(self, peak: int) -> float:
        """The beat's distance to the template of the previous beats (NaN: none); the beat then joins them."""
        lo = peak - self._before - self._raw_start
        segment = self._raw[max(lo, 0) : peak + self._after + 1 - self._raw_start]
        if lo < 0 or not np.isfinite(segment).all():
            return float("nan")
        windows, _ = beat_windows(segment, np.array([self._before]), self.rate_hz)
        beat = windows[0, :, 0].astype(np.float64)
        distance = (
            shape_distance(beat, np.array(self._history))
            if len(self._history) >= MIN_TEMPLATE_BEATS
            else float("nan")
        )
        self._history.append(beat)
        return distance
