"""RR intervals from a device's ECG: the stage between a source and the pipeline that finds the beats.

A device that streams only ECG (a serial patch, a Polar H10's PMD stream, the simulator with
``ecg = true``) would otherwise give the RR-based detectors (`af`, limits on ``rr``) nothing. With a
``[devices.beats]`` table its ECG readings pass on unchanged and, beside them, every R peak the
`QrsDetector` finds becomes one reading of the RR stream, as a chest strap's own RR intervals arrive
over BLE: one sample, the interval in seconds (``rr``), stamped at the R peak that ends it, with the heart
rate a monitor would show beside it (``hr``, bpm: 60 / the mean of the last `HR_BEATS` intervals since
the last hole), so limits for tachycardia and bradycardia work on a device that sends only ECG, and the
beat's shape against the patient's recent beats (``qrs_shape``, agent.ecg.beat_shape) for the `pvc`
detector, and that of its QRS alone (``qrs_core``, the same module: it holds at fast rates, where the
beat window takes in the neighbouring beats) for `ventricular_run`, and for a beat of normal shape how
alike its pre-R segment is to the recent ones (``p_wave``, agent.ecg.p_wave: P waves present or not) for
the `af` detector, and for the first beats after the shape templates start again the QRS's width from the
beat alone (``qrs_width``, agent.ecg.qrs_width: no template, so a VT under way when a lead is put back,
which the new templates take for the normal beat, still reads wide) for `ventricular_run`. A beat's
reading leaves once its shape is known, 0.40 s after its R peak at the earliest.

- **A channel only when read.** ``rr`` and ``hr`` are the beat itself and always come; each of
  `OPTIONAL` (``qrs_shape``, ``qrs_core``, ``p_wave``, ``qrs_width``) is computed only if a detector on the RR
  stream reads it: the session asks for the set (`channels`, decided from the config by
  `agent.pipeline.wiring.beat_channels_read`, again at each reload), as an `af` with hr limits reads
  none of them and the window's shape, the core's and the pre-R segment together cost about half of the
  stage's CPU time (tools.bench.beats_chain). A channel not asked for is in none of the stream's readings
  (the "no value" ones included) and keeps no template; what the others need is still computed inside:
  ``p_wave`` is given only for beats of normal window shape, so it needs the window's shape even when
  ``qrs_shape`` is not emitted. The readings' times, stamps and ``rr`` / ``hr`` do not depend on the
  set (a beat's reading leaves when its window is complete, computed or not). The default (every
  channel) is for the evaluation tools that build a stage themselves.
- **Intervals by sample count.** An interval is the number of samples between two R peaks times the
  stream's period: the device's own clock, not the arrival stamps of its frames, which jitter by tens of
  ms over BLE. A peak's time stamp is taken from the block that holds it.
- **No interval across a hole.** A GAP flag (sources set it after lost frames, a sequence gap, a
  reconnect), a block starting more than `GAP_S` away from where the previous one ended (a backstop for
  a source that cannot tell; less is arrival jitter: BLE frames are stamped on arrival, and one that came
  late is followed by one that overlaps it), or a change of rate starts a fresh detector; a NaN sample (a
  value the device could not give) or a block whose quality says its samples are not valid (no contact,
  artifact, fault, motion: fed as NaN) ends the current interval, so the next peak after it starts a new
  one. A missed interval is a missing beat for the AF detector, which copes; an interval spanning a hole
  would be a false long RR.
- **A short hole keeps the beat shapes.** After a GAP or time jump shorter than `KEEP_SHAPES_S` at the
  same rate (a BLE drop: the strap was not moved in that time) the new segment goes on with the previous
  shape and core templates (agent.ecg.beat_shape.BeatShapes.continued), so its beats have ``qrs_shape``
  and ``qrs_core`` at once: a VT starting within 8 beats of the hole would otherwise build the templates
  of its own beats and read normal for its whole length. The detector still starts afresh (its filters
  need it). A longer hole, a change of rate, or a lead-off (no values: see below) starts the templates
  again; beats then carry ``qrs_width`` (when asked) for `YOUNG_BEATS` (32) beats, until the templates
  are made of beats after the break alone. So do the first beats of the stream (a patient connected
  while in VT: its first beats become the templates too) and those of a start whose templates were not
  handed over (a restart after `KEEP_SHAPES_S` or more). A new
  stage of the same device (a reload's session, a restart: `kept`, agent.ecg.kept_shapes) takes its
  predecessor's templates by the same rule at its first block (`handover` gives them).
- **No value is said, not silenced.** While the ECG is flagged or has no values at all (NaN: the empty
  fields of a csv patch), the RR stream receives one NaN reading per `TOLD_EVERY_S` of ECG with the
  ECG's flags, so the pipeline's quality gate and the technical alarms of the RR stream see the
  electrode off (`sensor_off`) or the values gone (`signal_poor`) rather than a stream gone quiet.
- **A pause is said while it lasts.** No beat on a valid ECG for more than `PAUSE_S` (asystole, a
  sinus arrest, or a lead off that the device does not flag) would otherwise be silence on the RR stream
  until the next beat. From then on, once a second, the stream receives a reading of ``hr`` alone, 60 /
  the seconds since the last beat (the other channels are missing, not "no value"), so a bradycardia or
  asystole limit on ``hr`` fires during the pause. It is stamped `delay_s` behind the newest sample (the
  detector's longest delay), the time up to which every beat has surely been reported, so the stream's
  times stay in order. The beat that ends a pause longer than `PAUSE_S` carries the pause's own rate
  (60 / its interval) instead of the 8-beat mean, so a pause of 3-5 s, over before the delay, is said too.
- **A beat without a shape yet** (the first 8 of a segment not continued from the last) leaves
  ``qrs_shape`` and ``qrs_core`` out of its reading (and every beat but the young ones ``qrs_width``)
  rather than NaN, which the quality gate would call
  "no value" (a slow heart would raise `signal_poor`); so does a beat without ``p_wave`` (an odd-shaped
  beat, the first 8 normal ones, one whose pre-R segment holds part of its QRS:
  agent.ecg.p_wave.holds_qrs) leave that out.
- **A rate the detector cannot work at** (outside 100-1000 Hz) leaves the ECG passed on without beats,
  told once in the log: a device misconfigured must not stop its own source.
- **The configured derivation wins.** Readings the device itself sends on the RR stream (the simulator's
  true intervals, a strap's RR) are dropped and counted, told once: two sources of RR interleaved in one
  stream would read as chaos to the AF detector.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from agent.config.schema import BeatsConfig
from agent.ecg.beat_shape import BeatShapes
from agent.ecg.kept_shapes import KEEP_SHAPES_S, KeptShapes
from agent.ecg.p_wave import (
    MIN_RR_S,
    NORMAL_SHAPE,
    AtrialActivity,
    holds_qrs,
    pre_r_segment,
    samples_after,
    samples_needed,
)
from agent.logs import device_name
from agent.readings import INVALIDATING_BITS, Quality, Reading, stream_id

log = logging.getLogger(__name__)

GAP_S = 1.0  # a block this far from where the previous one ended is not the same signal
TOLD_EVERY_S = 1.0  # at most one reading per second saying "no value" or "no beat yet"
PAUSE_S = 3.0  # no beat for this long on a valid ECG is a pause (monitors' asystole: 3-4 s)
KEEP_BLOCKS_S = 5.0  # block times kept beyond the detector's delay, to stamp late-decided peaks
HR_BEATS = 8  # the heart rate shown is over this many intervals, as bedside monitors average
CHANNELS = ("rr", "hr", "qrs_shape", "qrs_core", "p_wave", "qrs_width")
OPTIONAL = CHANNELS[2:]  # computed only when asked for (the module docstring)


class BeatFinder(Protocol):
    """What the stage needs of a beat detector (`agent.ecg.qrs.QrsDetector`)."""

    delay_s: float

    def feed(self, samples: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]: ...


def _qrs_detector(rate_hz: float) -> BeatFinder:
    from agent.ecg.qrs import QrsDetector  # here, so tests can give the stage a scripted finder instead

    return QrsDetector(rate_hz)


@dataclass(frozen=True, slots=True)
class _Beat:
    """A beat found, waiting for its shape; `rr` and `hr` NaN when no interval ends at it (after a hole)."""

    peak: int
    time: float
    rr: float
    hr: float
    monotonic: float


@dataclass(frozen=True, slots=True)
class _Block:
    start: int  # index of its first sample since the detector started
    wall_time: float
    period_s: float


class HoleEnds:
    """Where each run of non-finite samples ended (the first finite sample after it), as far back as a
    question can reach: an interval (previous, peak] spans a hole iff the newest end <= peak is after
    previous. Peaks are reported at most `reach` samples after they happen, so only the newest end
    before that reach and the ends within it are kept: bounded however long the signal has no beats."""

    def __init__(self) -> None:
        self._ends: deque[int] = deque()

    def add(self, start: int, finite: npt.NDArray[np.bool_]) -> None:
        """A block's samples from index `start`; a run still open at its end ends, for now, there."""
        if finite.all():
            return
        flips = np.flatnonzero(np.diff(finite.astype(np.int8)) == 1) + 1  # non-finite -> finite
        ends = [start + int(i) for i in flips]
        if not finite[-1]:
            ends.append(start + len(finite))
        if self._ends and not finite[0] and self._ends[-1] == start:
            self._ends.pop()  # the run goes on from the previous block
        self._ends.extend(ends)

    def spanned(self, previous: int, peak: int) -> bool:
        newest = bisect.bisect_right(self._ends, peak) - 1
        return newest >= 0 and self._ends[newest] > previous

    def newest(self) -> int:
        return self._ends[-1] if self._ends else 0

    def forget_before(self, reach_start: int) -> None:
        while len(self._ends) > 1 and self._ends[1] <= reach_start:
            self._ends.popleft()


class RrFromEcg:
    """One device's stage: `take(reading)` returns the reading itself plus any RR readings it completes."""

    def __init__(
        self,
        device_id: str,
        cfg: BeatsConfig,
        make_finder: Callable[[float], BeatFinder] = _qrs_detector,
        *,
        channels: Collection[str] = CHANNELS,
        kept: KeptShapes | None = None,
    ) -> None:
        """`channels`: those a detector reads (rr and hr come whatever it holds; see the module docstring);
        `kept`: a previous stage's templates of this device (a reload, a restart: agent.ecg.kept_shapes),
        gone on with if its first block is as after a short hole."""
        unknown = set(channels) - set(CHANNELS)
        if unknown:
            raise ValueError(f"the beats stage has no channel {sorted(unknown)} (it has {CHANNELS})")
        self._name = device_name(device_id)  # what log lines call the device
        self._channels = tuple(c for c in CHANNELS if c not in OPTIONAL or c in channels)
        self._p_wave = "p_wave" in channels
        # p_wave is given only for beats of normal window shape: it needs the window's shape.
        self._window = "qrs_shape" in channels or self._p_wave
        self._core = "qrs_core" in channels
        self._width = "qrs_width" in channels
        self._ecg = stream_id(device_id, cfg.ecg_stream)
        self._rr = stream_id(device_id, cfg.rr_stream)
        self._rr_name = cfg.rr_stream
        self._make_finder = make_finder
        self._finder: BeatFinder | None = None
        self._shapes: BeatShapes | None = None
        self._handed = kept  # until the first block: then gone on with, or not
        self._atria = AtrialActivity()
        self._waiting: deque[_Beat] = deque()  # beats found whose shape is not known yet
        self._period_s = 0.0
        self._unusable_period = 0.0  # a spacing the detector refused (told once)
        self._recent: deque[float] = deque(maxlen=HR_BEATS)  # intervals since the last hole
        self._fed = 0  # samples fed to the current detector
        self._blocks: deque[_Block] = deque()
        self._last_peak: int | None = None  # the newest R peak, while an interval may start there
        self._holes = HoleEnds()  # no interval spans one
        self._told_at = -math.inf  # wall time of the last "no value" or pause reading
        self.beats = 0  # R peaks found
        self.intervals = 0  # RR readings made
        self.restarts = 0  # fresh detectors after a gap or a change of rate
        self.unspaced = 0  # ECG readings of one sample without a spacing: unusable
        self.own_rr_dropped = 0  # the device's own readings on the RR stream, replaced

    def take(self, reading: Reading) -> list[Reading]:
        if reading.stream == self._ecg:
            return [reading, *self._beats_in(reading)]
        if reading.stream == self._rr:
            if not self.own_rr_dropped:
                log.info(
                    "%s: the device's own %r readings are replaced by the RR intervals found in its ECG "
                    "(devices.<id>.beats)",
                    self._name,
                    self._rr_name,
                )
            self.own_rr_dropped += 1
            return []
        return [reading]

    def _beats_in(self, reading: Reading) -> list[Reading]:
        period = reading.period_s
        if not period > 0:  # a lone sample of unknown spacing cannot be placed in the signal
            if not self.unspaced:
                log.warning(
                    "%s: ECG samples without a known spacing: no beats can be found in them; for csv or "
                    "jsonl lines set devices.<id>.serial.rate_hz (devices.<id>.beats)",
                    self._name,
                )
            self.unspaced += 1
            return []
        if period == self._unusable_period:
            return []
        made: list[Reading] = []
        if self._finder is None or period != self._period_s or self._is_gap(reading):
            made += self._shaped(everything=True)  # the old segment's last beats, shapes unknown
            self._restart(period, self._kept_shapes(reading, period))
        if self._finder is None or self._shapes is None:
            return made
        flagged = int(reading.quality) & INVALIDATING_BITS
        lead = reading.channels.index("ecg") if "ecg" in reading.channels else 0
        samples = np.asarray(reading.values[:, lead], dtype=np.float64)
        if flagged:
            samples = np.full(reading.n_samples, np.nan)
        finite = np.isfinite(samples)
        self._holes.add(self._fed, finite)
        self._blocks.append(_Block(self._fed, reading.wall_time, period))
        self._shapes.add(samples)
        peaks = self._finder.feed(samples)
        self._fed += reading.n_samples
        self._waiting.extend(self._beat(int(peak), reading.monotonic) for peak in peaks)
        self.beats += len(peaks)
        if not finite.any():  # no value at all: said on the RR stream, after the beats it ends
            made += self._shaped(everything=True)
            made += self._told(reading.wall_time, reading.monotonic, Quality(flagged))
            # The patient's beats after a lead-off may not be those before it (a new rhythm, the strap
            # put back elsewhere): the shape template starts again, and with it 8 beats without shape,
            # in which the pvc detector's RR history fills with the new rhythm.
            self._shapes = self._new_shapes(self._period_s, start=self._fed)
            self._atria = AtrialActivity()
        else:
            made += self._shaped()
            made += self._pause(reading.monotonic)
        self._forget_old()
        return made

    def _told(
        self, wall_time: float, monotonic: float, quality: Quality, hr: float | None = None
    ) -> list[Reading]:
        """One reading without an interval (at most one per `TOLD_EVERY_S`): every channel without a
        value (NaN, which the quality gate calls "no value"), or in a pause only the falling ``hr`` (the
        interval is not missing: it has not ended yet)."""
        if wall_time - self._told_at < TOLD_EVERY_S:
            return []
        self._told_at = wall_time
        if hr is not None:
            return [Reading(self._rr, ("hr",), np.array([[hr]]), wall_time, monotonic, quality=quality)]
        values = np.full((1, len(self._channels)), np.nan)
        return [Reading(self._rr, self._channels, values, wall_time, monotonic, quality=quality)]

    def _pause(self, monotonic: float) -> list[Reading]:
        """A reading whose hr falls while no beat comes on a valid signal (the module docstring)."""
        assert self._finder is not None
        surely_decided = self._fed - 1 - round(self._finder.delay_s / self._period_s)
        since = max(self._last_peak if self._last_peak is not None else 0, self._holes.newest())
        pause_s = (surely_decided - since) * self._period_s
        if pause_s <= PAUSE_S or self._waiting:
            return []
        return self._told(self._time_of(surely_decided), monotonic, Quality.OK, hr=60.0 / pause_s)

    def _hole_s(self, reading: Reading) -> float:
        """How far `reading` starts from where the previous block ended (negative: it overlaps)."""
        last = self._blocks[-1]
        return reading.wall_time - (last.wall_time + (self._fed - last.start) * last.period_s)

    def _is_gap(self, reading: Reading) -> bool:
        if Quality.GAP in reading.quality or not self._blocks:
            return True
        return abs(self._hole_s(reading)) > GAP_S

    def handover(self) -> KeptShapes | None:
        """This stage's templates for the next stage of the device (taken: this one is done), or None
        before it has any; templates handed to it and not used yet pass on."""
        if self._shapes is None or not self._blocks:
            return self._handed
        last = self._blocks[-1]
        return KeptShapes(
            self._shapes, self._period_s, last.wall_time + (self._fed - last.start) * last.period_s
        )

    def _kept_shapes(self, reading: Reading, period: float) -> BeatShapes | None:
        """The shapes to go on with after a hole: those of the same rate, the hole under `KEEP_SHAPES_S`;
        at the first block, those handed over by the same rule."""
        if self._handed is not None:
            return self._handed_shapes(self._handed, reading, period)
        if self._shapes is None or period != self._period_s or not self._blocks:
            return None
        return self._shapes if abs(self._hole_s(reading)) < KEEP_SHAPES_S else None  # a clock set back too

    def _handed_shapes(self, handed: KeptShapes, reading: Reading, period: float) -> BeatShapes | None:
        self._handed = None
        shapes = handed.shapes
        hole_s = reading.wall_time - handed.ended_at
        why = None
        if period != handed.period_s:
            why = f"its rate changed ({1.0 / handed.period_s:g} -> {1.0 / period:g} Hz)"
        elif (shapes.window, shapes.core) != (self._window, self._core):
            why = "the beat channels read changed"
        elif not abs(hole_s) < KEEP_SHAPES_S:
            why = (
                f"its ECG came back {hole_s:.0f} s after they were current (kept under {KEEP_SHAPES_S:.0f} s)"
            )
        if why is not None:
            log.info("%s: beat-shape templates start afresh: %s", self._name, why)
            return None
        log.info(
            "%s: beat-shape templates go on from the previous stage's (a %.1f s break)", self._name, hole_s
        )
        return shapes

    def _restart(self, period: float, kept: BeatShapes | None = None) -> None:
        """A fresh detector (and segment); the shape templates go on from `kept` if given."""
        if self._finder is not None:
            self.restarts += 1
        try:
            self._finder = self._make_finder(1.0 / period)
        except ValueError as exc:
            self._finder, self._shapes, self._unusable_period = None, None, period
            log.warning("%s: no beats found in its ECG: %s (devices.<id>.beats)", self._name, exc)
            return
        self._shapes = (
            BeatShapes.continued(kept, self._finder.delay_s) if kept is not None else self._new_shapes(period)
        )
        self._atria = AtrialActivity()
        self._period_s = period
        self._fed = 0
        self._blocks.clear()
        self._last_peak = None
        self._holes = HoleEnds()
        self._recent.clear()

    def _new_shapes(self, period: float, start: int = 0) -> BeatShapes:
        """Templates afresh (the stream's start, one not handed or kept, a break): young, so with a width."""
        assert self._finder is not None
        return BeatShapes(
            1.0 / period,
            self._finder.delay_s,
            start,
            window=self._window,
            core=self._core,
            width=self._width,
            fresh=True,
        )

    def _beat(self, peak: int, monotonic: float) -> _Beat:
        previous, self._last_peak = self._last_peak, peak
        time = self._time_of(peak)
        if previous is None or self._holes.spanned(previous, peak):
            self._recent.clear()
            return _Beat(peak, time, math.nan, math.nan, monotonic)
        rr = (peak - previous) * self._period_s
        self._recent.append(rr)
        # The beat that ends a pause carries the pause's own rate: a pause shorter than the detector's
        # delay ends before a pause reading could say it, and the 8-beat mean would hide it.
        hr = 60.0 / rr if rr > PAUSE_S else 60.0 * len(self._recent) / sum(self._recent)
        return _Beat(peak, time, rr, hr, monotonic)

    def _shaped(self, *, everything: bool = False) -> list[Reading]:
        """The readings of the waiting beats whose shape is known (all of them with `everything`: the
        segment ends, the rest get none); a beat without an interval only joins the template."""
        out: list[Reading] = []
        while self._waiting and self._shapes is not None:
            beat = self._waiting[0]
            if not self._shapes.ready(beat.peak) and not everything:
                break
            self._waiting.popleft()
            ready = self._shapes.ready(beat.peak)
            width = self._shapes.width(beat.peak) if ready and self._width else math.nan
            shape, core = self._shapes.shape(beat.peak, beat.rr) if ready else (math.nan, math.nan)
            # A short interval puts the previous beat's T wave in the pre-R segment: no reading of it.
            atrial = self._atrial(beat.peak, shape) if self._p_wave and beat.rr >= MIN_RR_S else math.nan
            if math.isnan(beat.rr):
                continue
            # A value not known is left out, not NaN (the quality gate's "no value", signal_poor); so is
            # one computed only for another's sake (qrs_shape for p_wave).
            parts = {"qrs_shape": shape, "qrs_core": core, "p_wave": atrial, "qrs_width": width}
            known = [(n, parts[n]) for n in self._channels[2:] if not math.isnan(parts[n])]
            names = (*self._channels[:2], *(n for n, _ in known))
            values = np.array([[beat.rr, beat.hr, *(v for _, v in known)]])
            out.append(Reading(self._rr, names, values, beat.time, beat.monotonic))
        self.intervals += len(out)
        return out

    def _atrial(self, peak: int, shape: float) -> float:
        """The beat's ``p_wave`` (NaN: an odd-shaped beat, or none yet); a normal beat joins the template."""
        if self._shapes is None or not shape <= NORMAL_SHAPE:
            return math.nan
        rate_hz = 1.0 / self._period_s
        after = samples_after(rate_hz)  # the shape is known, so the samples just after the peak are kept
        raw = self._shapes.before(peak + after, samples_needed(rate_hz) + after)
        # A segment holding part of the QRS repeats like a P wave: no value, and kept out of the template.
        if raw is None or holds_qrs(raw, rate_hz):
            return math.nan
        return self._atria.score(pre_r_segment(raw[: len(raw) - after], rate_hz))

    def _time_of(self, peak: int) -> float:
        block = self._blocks[max(bisect.bisect_right(self._blocks, peak, key=lambda b: b.start) - 1, 0)]
        return block.wall_time + (peak - block.start) * block.period_s

    def _forget_old(self) -> None:
        assert self._finder is not None
        keep = round((self._finder.delay_s + KEEP_BLOCKS_S) / self._period_s)
        while len(self._blocks) > 1 and self._blocks[1].start < self._fed - keep:
            self._blocks.popleft()
        self._holes.forget_before(self._fed - keep)
