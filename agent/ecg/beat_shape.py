"""The shape of each beat found in an ECG against the patient's own recent beats (`qrs_shape`, `qrs_core`).

A premature ventricular beat is early *and* wide, differently shaped; RR alone sees only the first. For
each beat the stage (agent.ecg.rr_from_ecg) asks for its shape: the beat window (0.25 s before to 0.40 s
after the R peak, resampled to 64 points, median removed: `agent.inference.beats.beat_windows`, the
`ecg-beat` model's input) is compared with the point-wise median of the previous 32 windows
(`shape_distance`): about 0.1-0.3 for the patient's usual beat, above 1 for a PVC. So the shape of a beat is
known 0.40 s after its R peak at the earliest; the stage holds the beat's reading until then.

At fast rates that window holds more than the beat: at 170 bpm (RR 0.35 s) it takes in the previous T
wave and the next QRS, so a normal narrow beat of fast AF reads 0.7-1.6, like a PVC. The QRS core
(``qrs_core``, `core_distance`) looks only at -`CORE_BEFORE_S` .. +`CORE_AFTER_S` around the R peak, the
QRS itself (a narrow QRS lasts < 0.12 s; while the rate stays fast the QT shortens and the previous T
wave ends before it, but the first early beat after a slow one may land on its T wave: 0.3-0.5),
resampled to `CORE_POINTS` points, the core's own median removed, against the point-wise median of the
previous 32 admitted cores, aligned within +-`CORE_SHIFT_S`: about 0.16 for a normal beat and 1.4 for a
PVC (medians on MIT-BIH's 12 records), 0.2-0.5 for the narrow beats at the onset of fast AF (CPSC-2021).
`shape` gives both; they have a value for the same beats.

The core template is kept to the patient's normal beat by a criterion that does not read the template: a
beat's core is admitted only if the beat is not early, its RR at least `ADMIT_RR_RATIO` of the mean of the
`ADMIT_RR_BEATS` intervals before it (pvc's prematurity: agent.detectors.pvc). Admitting every beat let a
run of ventricular beats out of bigeminy (half the template PVCs) tip the median to the PVC after 1-3 run
beats, so the run's cores read normal and ventricular_run dropped them; admitting by the core itself
keeps a template once mixed mixed. PVCs come early (bigeminy's follow the short interval, the mean of
short and long being the sinus interval); a lead moved changes every beat at the same rate, so the
template follows within 32 beats; a beat without an interval (the first of a segment, after a hole) or
one with fewer than `ADMIT_RR_BEATS` intervals before it is admitted.

**A run's beats stay out of both templates** (`Admission`). An early beat whose core is at least
`RUN_CORE` unlike the template starts a *run*, and while it lasts "early" is judged against the mean before
the run, frozen at its first beat, not the recent one: a sustained VT's own intervals filled that mean by
its 8th beat, its cores then joined the template, and every beat joined the window's, so the VT became the
patient's "normal" beat, and a VT that came back after 2-12 sinus beats read normal and was not alarmed
(an outside review: MIT-BIH 106, 60 s of VT; `tools.evaluate.vt_recurrent`). The run ends at:
- its first beat that is not early against that mean and not unlike (sinus again). A beat that is not
  early but still unlike, in a run of `WINDOW_RUN_BEATS` or more, is a VT's missed beat (one interval of
  about 2 x the VT's, not early where the sinus before ran above 0.45 x the VT's rate: 67 bpm for a VT at
  150): the run goes on through it, and only a second such beat in a row ends it (a wide rhythm that
  slowed). Before, that beat ended the run, a new one froze at the VT's own mean and ended at its first
  jittered beat, and the VT was learnt (outside review: 1 of 22 second runs alarmed). A PVC's next beat
  in bigeminy ends its run of 1 as before;
- `RUN_PLAIN_BEATS` early beats in a row whose core is below `RUN_CORE` (fast narrow beats: AF after a
  PVC, whose beats then go on joining as they did);
- a run slower than VT: its own last `RUN_SLOW_BEATS` (32) intervals and its last 8 (missed beats left
  out) both average more than 60 / `RUN_MIN_BPM` s. A wide rhythm entered abruptly at < 100 bpm
  (rate-dependent bundle branch block) is then learnt from its 32nd beat instead of never while it lasts.
The window's template (``qrs_shape``) keeps every beat but a run's from its `WINDOW_RUN_BEATS`th on, so
single PVCs and couplets still join it as before. A moved lead brings no early beat, so no run: its beats
join as before. Limits: a real change of the QRS that starts with an early odd beat and stays faster than
100 bpm is not followed while it lasts (it reads unlike by its core; pvc flags its beats only while they
are early or where qrs_shape, capped at 1.5 x the core, exceeds 2); a VT less than 1 / `ADMIT_RR_RATIO`
(~11 %) faster than the sinus before it is not early, starts no run and is learnt as before.

The raw samples are kept only as long as a beat could still need them (the detector's delay plus the
window). A window with a NaN (a hole in the signal) or one that began before the current segment has no
shape (NaN) and does not enter the template; nor do beats before `MIN_TEMPLATE_BEATS`. `before` gives the
raw samples before a peak for its atrial activity (agent.ecg.p_wave), which reaches 0.35 s back.

`width` gives a beat's QRS width from the beat alone (agent.ecg.qrs_width) while the templates are young:
for the first `YOUNG_BEATS` beats of templates made `fresh` (the stream's first start, a start whose
templates were not handed over or restored, a lead-off, a long hole, a change of rate; the stage says
which), NaN otherwise and for templates `continued`. Those templates hold whatever came first, a VT under
way included; the width needs none.

`continued` starts the next segment of the same signal after a short hole (the stage's GAP restart): no
raw samples, but the window and core templates and the admission (its intervals, a run) go on, so the
beats after the hole have a shape at once instead of 8 beats later (a VT starting then would otherwise
build its own templates and read normal for its whole length). `saved` and `restored` carry the same
(the window rows float32 as computed, the cores rounded to float32) through the agent's state file to the
next start (agent.ecg.kept_shapes).

Each part is computed only if asked (`window`, `core`: the stage's channels that a detector reads, see
agent.ecg.rr_from_ecg); one not asked is NaN and keeps no template. Neither asked keeps no raw samples
either, but `ready` answers as before: the stage's readings leave at the same times whatever it computes.
Without the core no run is seen (it starts on an unlike core): the window's template then takes every beat.
"""

from __future__ import annotations

import base64
import functools
import math
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.ecg.qrs_width import margin, qrs_width
from agent.inference.beats import (
    AFTER_S,
    BEFORE_S,
    MIN_TEMPLATE_BEATS,
    POINTS,
    TEMPLATE_BEATS,
    beat_windows,
    shape_distance,
)

CORE_BEFORE_S, CORE_AFTER_S = 0.06, 0.10  # the QRS core around the R peak
CORE_POINTS = 33  # 5 ms apart
CORE_SHIFT_S = 0.015  # the R peak's jitter between beats, a PVC's "R" placed elsewhere on its complex
ADMIT_RR_RATIO = 0.9  # a beat with an RR below this share of the recent mean is early: its core stays out
ADMIT_RR_BEATS = 8  # the intervals that mean is over (pvc's rr_history)
# An early beat whose core is at least this unlike the template starts a run (pvc's min_qrs_core: below
# it no PVC); the run goes on while its beats stay early against the mean before it (the module docstring).
RUN_CORE = 0.35
RUN_PLAIN_BEATS = 2  # this many early beats in a row without such a core end a run (fast AF after a PVC)
WINDOW_RUN_BEATS = 3  # from the run's 3rd beat on (VT: >= 3 beats) the window's template refuses it too
# A beat that is not early but still unlike (a VT beat after a missed one: one long interval) keeps a run
# of `WINDOW_RUN_BEATS` or more on; a second such beat in a row ends it (a wide rhythm that slowed).
RUN_PAUSE_BEATS = 1
# VT is faster: a run ends where both its own last `RUN_SLOW_BEATS` intervals and its last `ADMIT_RR_BEATS`
# (missed beats left out) are slower on average. Over 32 a VT at 105 bpm with +-8 % jitter does not read
# slower by chance; the last 8 keep a VT that follows slower beats of the same run out.
RUN_MIN_BPM = 100.0
RUN_SLOW_BEATS = TEMPLATE_BEATS
# Templates made afresh (a start, a break) hold the beats that come first, whatever they are: the width (no
# template) is given for this many beats, until the templates are made of later beats alone.
YOUNG_BEATS = TEMPLATE_BEATS
_STEP_S = (CORE_BEFORE_S + CORE_AFTER_S) / (CORE_POINTS - 1)
_SHIFT = round(CORE_SHIFT_S / _STEP_S)  # points each side
_ALIGNMENTS = np.arange(2 * _SHIFT + 1)[:, None] + np.arange(CORE_POINTS)[None, :]


def core_distance(core: npt.NDArray[np.float64], history: npt.NDArray[np.float64]) -> float:
    """How unlike the previous cores `core` is: the RMS difference to their point-wise median over the
    median's RMS, minimised over alignments. Cores carry `_SHIFT` extra points each side; the template is
    compared over the centre span alone, with the beat shifted by up to that many points."""
    template = np.median(history, axis=0)[_SHIFT : _SHIFT + CORE_POINTS]
    aligned = core[_ALIGNMENTS]  # row j: the core shifted by j - _SHIFT points, in one gather
    best = float(np.min(np.sum((aligned - template) ** 2, axis=1)))
    return float(np.sqrt(best / (float(np.sum(template**2)) + 1e-9)))


@functools.cache
def _core_offsets(rate_hz: float) -> npt.NDArray[np.float64]:
    """The core's sample positions relative to the R peak, shift margin included (one per rate)."""
    margin = _SHIFT * _STEP_S
    return np.linspace(-(CORE_BEFORE_S + margin), CORE_AFTER_S + margin, CORE_POINTS + 2 * _SHIFT) * rate_hz


def qrs_core(segment: npt.NDArray[np.float64], peak: int, rate_hz: float) -> npt.NDArray[np.float64]:
    """The core around `segment[peak]` (with the shift margin), resampled, its centre's median removed."""
    core = np.interp(peak + _core_offsets(rate_hz), np.arange(len(segment)), segment)
    out: npt.NDArray[np.float64] = core - np.median(core[_SHIFT : _SHIFT + CORE_POINTS])
    return out


class BeatShapes:
    """One ECG segment's raw samples and recent beat windows; `shape(peak)` once `ready(peak)`."""

    def __init__(
        self,
        rate_hz: float,
        delay_s: float,
        start: int = 0,
        *,
        window: bool = True,
        core: bool = True,
        width: bool = False,
        fresh: bool = False,
    ) -> None:
        """`start`: the index (in the stage's count of samples) of the first sample it will be given;
        `window`, `core`: which distances `shape` computes (the other is NaN); `width`: whether `width`
        measures, and `fresh` whether these templates start afresh (the stream's first start, a start
        whose templates were not handed over or restored, a lead-off, a long hole, a change of rate), so
        that it does for their first `YOUNG_BEATS` beats."""
        self.rate_hz = rate_hz
        self.window, self.core, self.width_asked = window, core, width
        self._young = YOUNG_BEATS if fresh and width else 0  # beats left with a width
        self._before = round(BEFORE_S * rate_hz)
        self._after = round(AFTER_S * rate_hz)
        self._keep = round((delay_s + BEFORE_S + AFTER_S + 1.0) * rate_hz)
        self._raw: npt.NDArray[np.float64] = np.empty(0)
        self._raw_start = start  # index (since the segment began) of _raw[0]
        self._fed = start
        self._history: deque[npt.NDArray[np.float64]] = deque(maxlen=TEMPLATE_BEATS)
        self._cores: deque[npt.NDArray[np.float64]] = deque(maxlen=TEMPLATE_BEATS)
        self._whole = 0  # beats with a whole window (shaped or not): the templates are known from the 8th
        self._admission = Admission()

    @classmethod
    def continued(cls, previous: BeatShapes, delay_s: float) -> BeatShapes:
        """A new segment of `previous`'s signal (same rate, same electrodes): its templates and intervals
        carried over (taken, not copied: `previous` is done), no raw samples, indices from 0."""
        shapes = cls(previous.rate_hz, delay_s, window=previous.window, core=previous.core)
        shapes._history, shapes._cores, shapes._whole = previous._history, previous._cores, previous._whole
        shapes._admission = previous._admission
        shapes.width_asked, shapes._young = previous.width_asked, previous._young
        return shapes

    def saved(self) -> dict[str, Any]:
        """The templates and the admission as JSON-able values (the windows float32 as computed, the
        cores rounded to float32), for `restored` after an agent restart (agent.ecg.kept_shapes)."""
        return {
            "rate_hz": self.rate_hz,
            "window": self.window,
            "core": self.core,
            "whole": self._whole,
            "windows": _packed(list(self._history), POINTS),
            "cores": _packed(list(self._cores), CORE_POINTS + 2 * _SHIFT),
            "admission": self._admission.saved(),
        }

    @classmethod
    def restored(cls, saved: Mapping[str, Any]) -> BeatShapes:
        """What `saved` gave, to be `continued` (no raw samples); `ValueError` / `TypeError` / `KeyError`
        when it is not such a table (damaged, another version)."""
        rate_hz, whole = saved["rate_hz"], saved["whole"]
        window, core = saved["window"], saved["core"]
        if not (isinstance(rate_hz, float) and rate_hz > 0 and isinstance(whole, int) and whole >= 0):
            raise ValueError("rate_hz or whole out of range")
        if not (isinstance(window, bool) and isinstance(core, bool)):
            raise TypeError("window and core are booleans")
        shapes = cls(rate_hz, 0.0, window=window, core=core)
        shapes._whole = whole
        shapes._history.extend(_unpacked(saved["windows"], POINTS).astype(np.float64))
        shapes._cores.extend(_unpacked(saved["cores"], CORE_POINTS + 2 * _SHIFT).astype(np.float64))
        shapes._admission = Admission.restored(saved["admission"])
        return shapes

    def add(self, samples: npt.NDArray[np.float64]) -> None:
        self._fed += len(samples)
        if not (self.window or self.core or self.width_asked):  # nothing reads them: only the count
            return
        self._raw = np.concatenate([self._raw, samples])
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

    def width(self, peak: int) -> float:
        """The beat's QRS width (s, agent.ecg.qrs_width) while the templates are young after a break (NaN
        otherwise, or without its samples). Asked before `shape`, which counts the beat."""
        if not self._young:
            return float("nan")
        before, _ = margin(self.rate_hz)
        lo = max(peak - before - self._raw_start, 0)
        return qrs_width(
            self._raw[lo : peak + self._after + 1 - self._raw_start],
            peak - self._raw_start - lo,
            self.rate_hz,
        )

    def shape(self, peak: int, rr: float) -> tuple[float, float]:
        """The beat's (window, core) distances to the templates of the previous beats (NaN: none); the beat
        then joins the templates `Admission` lets it join. `rr`: the interval ending at the beat (s; NaN:
        none, after a hole)."""
        nan = float("nan")
        self._young = max(self._young - 1, 0)
        lo = peak - self._before - self._raw_start
        segment = self._raw[max(lo, 0) : peak + self._after + 1 - self._raw_start]
        if not (self.window or self.core) or lo < 0 or not np.isfinite(segment).all():
            self._admission.judge(rr, nan)  # its interval still joins the mean
            return nan, nan
        beat = self._window(segment) if self.window else None
        core = qrs_core(segment, self._before, self.rate_hz) if self.core else None
        known_window = known_core = nan
        if self._whole >= MIN_TEMPLATE_BEATS:
            if beat is not None and self._history:
                known_window = shape_distance(beat, np.array(self._history))
            # No core admitted yet (only early beats had whole windows): the core alone has no value.
            if core is not None and self._cores:
                known_core = core_distance(core, np.array(self._cores))
        self._whole += 1
        joins_core, joins_window = self._admission.judge(rr, known_core)
        if beat is not None and joins_window:
            self._history.append(beat)
        if core is not None and joins_core:
            self._cores.append(core)
        return known_window, known_core

    def _window(self, segment: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        windows, _ = beat_windows(segment, np.array([self._before]), self.rate_hz)
        return windows[0, :, 0].astype(np.float64)


def _packed(rows: list[npt.NDArray[np.float64]], points: int) -> str:
    """Rows of `points` values as base64 of little-endian float32 (a template's 32 rows: 8 kB, not 40 kB
    of JSON numbers): the state file is rewritten with every heartbeat."""
    block = np.asarray(rows, dtype="<f4").reshape(len(rows), points)
    return base64.b64encode(block.tobytes()).decode("ascii")


def _unpacked(text: Any, points: int) -> npt.NDArray[np.float32]:
    if not isinstance(text, str):
        raise TypeError("packed rows are text")
    data = base64.b64decode(text, validate=True)
    if len(data) % (4 * points) or len(data) > 4 * points * TEMPLATE_BEATS:
        raise ValueError("packed rows of the wrong size")
    rows = np.frombuffer(data, dtype="<f4").reshape(-1, points)
    if not np.isfinite(rows).all():
        raise ValueError("packed rows hold a non-finite value")
    return rows


class Admission:
    """Which templates each beat joins, from its interval and its core's distance (the module docstring):
    the core's template not an early beat, early against the mean of the `ADMIT_RR_BEATS` intervals
    before it, or inside a run against the mean before the run, nor a run's beat; the window's template
    every beat but a run's from its `WINDOW_RUN_BEATS`th on."""

    def __init__(self) -> None:
        self._intervals: deque[float] = deque(maxlen=ADMIT_RR_BEATS)  # every beat's RR
        self._before_run: float | None = None  # the mean interval before the current run (None: no run)
        self._run = 0  # the run's beats so far
        self._plain = 0  # its latest early beats in a row without an unlike core
        self._paused = 0  # its latest beats in a row that were not early but unlike (missed beats)
        self._run_intervals: deque[float] = deque(maxlen=RUN_SLOW_BEATS)  # the run's own, for its rate

    def saved(self) -> dict[str, Any]:
        return {
            "intervals": list(self._intervals),
            "before_run": self._before_run,
            "counts": [self._run, self._plain, self._paused],
            "run_intervals": list(self._run_intervals),
        }

    @classmethod
    def restored(cls, saved: Mapping[str, Any]) -> Admission:
        """What `saved` gave; `ValueError` / `TypeError` / `KeyError` when it is not such a table."""
        admission = cls()
        intervals, run_intervals = _intervals(saved["intervals"]), _intervals(saved["run_intervals"])
        before_run, counts = saved["before_run"], saved["counts"]
        if before_run is not None and not (isinstance(before_run, float) and 0 < before_run < math.inf):
            raise ValueError("before_run out of range")
        if not (
            isinstance(counts, list) and len(counts) == 3 and all(type(c) is int and c >= 0 for c in counts)
        ):
            raise ValueError("counts are three counts")
        admission._intervals.extend(intervals)
        admission._run_intervals.extend(run_intervals)
        admission._before_run = before_run
        admission._run, admission._plain, admission._paused = counts
        return admission

    def judge(self, rr: float, core: float) -> tuple[bool, bool]:
        """(joins the core's template, joins the window's) for a beat with interval `rr` (NaN: none, it
        joins both and leaves the run as it is) and core distance `core` (NaN: not known)."""
        if not math.isfinite(rr):
            return True, self._run < WINDOW_RUN_BEATS
        known = len(self._intervals) == ADMIT_RR_BEATS
        recent = sum(self._intervals) / ADMIT_RR_BEATS if known else None
        mean = self._before_run if self._before_run is not None else recent
        early = mean is not None and rr < ADMIT_RR_RATIO * mean
        unlike = core >= RUN_CORE
        self._intervals.append(rr)
        if self._before_run is None:
            if early and unlike:  # a run starts: its mean stays that of the rhythm before it
                self._before_run, self._run, self._plain, self._paused = mean, 1, 0, 0
                self._run_intervals.clear()
                self._run_intervals.append(rr)
            return not early, self._run < WINDOW_RUN_BEATS
        if early:
            self._run += 1
            self._plain = 0 if unlike else self._plain + 1
            self._paused = 0
        elif unlike and self._run >= WINDOW_RUN_BEATS and self._paused < RUN_PAUSE_BEATS:
            # a VT's missed beat, not its end (a PVC's next beat in bigeminy ends its run of 1, as before)
            self._run += 1
            self._plain = 0
            self._paused += 1
            return False, False
        else:  # sinus again (or a wide rhythm that slowed): over
            self._end_run()
            return True, True
        self._run_intervals.append(rr)
        if self._plain >= RUN_PLAIN_BEATS or self._slow():
            self._end_run()
        return False, self._run < WINDOW_RUN_BEATS

    def _slow(self) -> bool:
        """The run's own last `RUN_SLOW_BEATS` intervals are known, and they and the last `ADMIT_RR_BEATS`
        of them are slower than VT on average."""
        longest = 60.0 / RUN_MIN_BPM
        run = list(self._run_intervals)
        if len(run) < RUN_SLOW_BEATS:
            return False
        recent = run[-ADMIT_RR_BEATS:]
        return sum(run) / len(run) > longest and sum(recent) / len(recent) > longest

    def _end_run(self) -> None:
        self._before_run, self._run, self._plain, self._paused = None, 0, 0, 0


def _intervals(values: Any) -> list[float]:
    if not (isinstance(values, list) and len(values) <= RUN_SLOW_BEATS):
        raise ValueError("intervals are a short list")
    if not all(isinstance(v, float) and 0 < v < math.inf for v in values):
        raise ValueError("intervals are positive numbers")
    return values
