"""Ventricular tachycardia from a beat stream: a run of `run_beats` ventricular beats in a row, fast.

VT is 3 or more consecutive ventricular beats at more than 100 bpm (AHA/ACC/HRS), sustained from 30 s;
bedside monitors announce it as a high-priority ("red") alarm from a run limit and a rate limit that the
user sets: Philips IntelliVue's defaults are 5 beats and 100 bpm (shorter runs at that rate are its
yellow "non-sustained VT"), the PhysioNet/CinC 2015 challenge on false ICU alarms defines its VT alarm the
same way (5 or more ventricular beats at more than 100 bpm); Mindray ships 6 beats at 130 bpm. The
defaults here are 5 and 100.

The detector watches the same RR stream as `pvc` (channels rr and qrs_shape, one reading per beat; a
third, qrs_core, below) and judges each beat with pvc's own score and threshold (`PvcDetector.parts`:
same weight, `rr_history` and params, no copy of its code). A beat is *ventricular* when that score
exceeds the threshold (and, with qrs_core, its QRS core is unlike the template's). Per stream
it counts the beats of the current run:

- a ventricular beat extends the run (a first one starts it);
- once the run has alarmed (below) it also goes on through any beat while the median of its last
  `run_beats` intervals, the beat's own included, is shorter than 60 / `run_rate_bpm` s, whatever pvc says
  of them (a median, so one missed beat, a doubled interval, does not end it), and it waits over a row
  without a beat (a gap, the pipeline's fill after a pause): inside a steady run pvc's prematurity tends
  to 1 (the mean of the last 8 RR becomes the run's own), so a long run stops reading as ventricular
  beat by beat (runs of 40 of MIT-BIH's own PVCs spliced into records 106, 119 and 200 at 110-240 bpm: pvc
  flags only their first 5 to 16 beats, `tools.evaluate.vt_runs`); its rate still tells it;
- any other beat ends it, and so does a NaN row before the run has alarmed. Ending an established run on
  one long interval or a gap lost sustained VT (an outside review: the alarm ended 10 s after one missed
  beat and never came back, for pvc no longer judged the adapted run's beats ventricular); the cost is
  that a run ends 2 beats after the rate falls.

**The QRS core (optional third channel ``qrs_core``).** pvc's shape is that of a 0.65 s window around the
R peak (agent.ecg.beat_shape), which at fast rates holds the neighbouring beats' waves: at the onset of
AF with a fast ventricular response (~170 bpm) the narrow beats come ~50 % early with qrs_shape 0.7-1.6,
and pvc judges them ventricular (CPSC-2021: 6 of the 8 false VT starts of the example). A floor on
qrs_shape itself cannot help (MIT-BIH 106's real PVCs have a median qrs_shape of 1.47). With
``channels = ["rr", "qrs_shape", "qrs_core"]`` a beat counts toward a run only if pvc judges it
ventricular *and* its QRS alone (-60 .. +100 ms around R, against the template of the last 32 cores of
beats that were not early: agent.ecg.beat_shape) is at least `min_qrs_core` (0.5) unlike the template:
about 0.16 for a normal beat on MIT-BIH (non-PVC median), 0.2-0.5 for the narrow beats of fast AF, 1.4
for a PVC (median; 97 % of MIT-BIH's PVCs >= 0.5). A beat without a core (none yet) does not count. The
established run's continuation (by rate) does not look at it. The stage keeps a run's beats out of its
core and window templates (agent.ecg.beat_shape, `Admission`): they adopted a sustained run by its 8th
to 16th beat, and a VT that came back after 2-12 sinus beats read normal and was missed (an outside
review; `tools.evaluate.vt_recurrent`). A missed beat inside a VT does not end that run (its core still
unlike), and a run slower than 100 bpm ends at its 32nd beat, so an abrupt wide rhythm below VT rates is
learnt; a VT less than ~11 % faster than the sinus before it is not early and is learnt as before.
A run out of bigeminy reads ventricular by its core:
the template holds no PVCs (early beats), where half of it did before and 1-3 run beats tipped it.
0.5 was chosen on MIT-BIH alone (`tools.evaluate.vt_runs`: the largest of 0.3, 0.4, 0.5, 0.6, 0.8 that
keeps >= 264 / 288 spliced runs of >= 5 beats at >= 150 bpm alarmed: 267 at 0.5, as without the core, 258
at 0.6); then CPSC-2021's false starts fell from 8 to 2 (both on noise). It costs irregular runs
(intervals +-30 %) 6 of their 217 alarms, each of which came only because the normal beat before the
run, its window holding the first PVC, counted as ventricular (its core does not count it) while the run
itself fell short (the QRS detector found 4 of 5 beats, or the last intervals were irregular, or pvc's
score fell); that beat also made 9 regular 5-beat runs at 240 bpm alarm a beat (0.2 s) early.

**Right after a break, the QRS width (optional fourth channel ``qrs_width``).** After a lead-off, a hole
of 60 s or more or a change of rate the stage starts its shape templates again (agent.ecg.rr_from_ecg):
the first 8 beats have no shape and the templates are then made of whatever came first, so a VT under way
when the lead is put back becomes the "normal" beat and never reads ventricular (`tools.evaluate.
vt_leadoff`: 0 of 576 such runs alarmed). Keeping the old templates as a reference alarmed them but also a
lead put back moved while the sinus rhythm was faster (38 false starts against 1). With
``channels = ["rr", "qrs_shape", "qrs_core", "qrs_width"]`` the stage gives, for the first 32 beats after
such a break and of a stream's start (its first, or one whose templates were not handed over: a patient
connected while in VT), each beat's width from the beat alone (agent.ecg.qrs_width, no template), and a beat
with one counts as ventricular, whatever pvc says, when it is wide (>= `min_qrs_width_s`, 0.09 s: the
equal-error point of MIT-BIH's PVCs against its other non-paced beats), fast (its own interval <= 60 /
`wide_rate_bpm`, 120 bpm) and early against pvc's RR baseline where that is known (RR < 0.9 x the mean
of the 8 valid intervals before it; NaN rows do not enter that history, so after a lead-off it is the
rhythm before the break; at a stream's first start there is none, and the first 8 intervals are judged
without it). The run then alarms as any other. A wide-complex tachycardia of unknown origin
is treated as VT, so a wide rhythm >= 120 bpm (bundle branch block, paced) right after a break alarms
too; a narrow one (a faster sinus rhythm with the lead moved) does not, nor a wide one below 120 bpm.

A beat's score is the length of the run it ends when the run is fast and regular, else 0 (NaN when pvc
has no verdict for it and no run goes on): fast, its rate (60 / the mean of its last `run_beats`
intervals, the first beat's coupling interval included while the run is that short) above
`run_rate_bpm`; regular, its last `run_beats` - 1 intervals (the coupling interval left out) within
`max_rr_ratio` (1.5; 0: not checked), longest over shortest. Monomorphic VT is regular (ICDs withhold VT
therapy in AF by this "stability", 40-80 ms at VT cycle lengths of 300-400 ms); false beats on noise
are not (MIT-BIH 105 and 108: intervals of 0.12 to 0.84 s in one "run"); 1.5 leaves room for
polymorphic VT. The threshold is `run_beats` - 1: the alarm rule sees a hop exceed as soon as a beat
ends a fast regular run of `run_beats`. A hop of several beats is judged beat by beat and reported by its
highest score (`judges_whole_frames`), so "N consecutive flagged hops" of an alarm rule is not needed
(nor wanted: min_duration_s = 0, confirm 1 of 1). The alarm's value is the run's rate in bpm against
`run_rate_bpm`.

Known limits: a false beat on noise is early and unlike the template, so noise that the QRS detector reads
as a fast run of `run_beats` is a false VT (as on bedside monitors); a run once established goes on while
the rate stays above the limit, so sinus tachycardia or fast AF right after a VT run keeps the alarm
(showing that rhythm's rate) until the rate falls; a run that restarts without its saved state (another
detector config, a state file set aside) is not re-established inside an adapted VT; at about 300 bpm the
QRS detector's refractory period finds every third beat (MIT-BIH 119 in a review: a rate of 100, no alarm;
270-285 bpm alarmed); `hop_beats` above 1 or readings in bursts delay the start and end; a run of
ventricular beats slower than `run_rate_bpm` (idioventricular rhythm) scores 0; an irregular run
(polymorphic VT with intervals more than 1.5 apart) waits until its last intervals agree. The RR history
and each stream's run (its length and last intervals) are kept per stream (state `history` and `run`), so
a restart neither warms up nor loses a run in progress."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from agent.config.schema import DetectorConfig
from agent.detectors.base import BoolArray, FloatArray, ScoreBlock, WindowBlock, shares
from agent.detectors.beat_history import BeatHistory
from agent.detectors.params import ParamReader
from agent.detectors.pvc import (
    DEFAULT_RR_HISTORY,
    DEFAULT_THRESHOLD,
    DEFAULT_WEIGHT,
    QRS_CORE,
    PvcDetector,
    check_beat_channels,
    excess_over_normal,
    read_pvc_params,
)
from agent.detectors.robust import nan_median
from agent.errors import ConfigError

DEFAULT_RUN_BEATS = 5  # IntelliVue's VTach run limit; PhysioNet/CinC 2015's VT alarm
DEFAULT_RUN_RATE_BPM = 100.0  # AHA/ACC/HRS; IntelliVue's VTach HR limit
# A run's intervals (its first beat's coupling interval left out) span at most this, longest over shortest
# (the module docstring).
DEFAULT_MAX_RR_RATIO = 1.5
# A beat counts toward a run only with a QRS core at least this unlike its template, when the channel is
# given (the module docstring: MIT-BIH's PVCs, the pooled 3rd percentile, 0.5).
DEFAULT_MIN_QRS_CORE = 0.5
# With the fourth channel (qrs_width, given only while the stage's templates are young after a break), a
# beat counts as ventricular without a template when at least this wide (s; agent.ecg.qrs_width: the
# equal-error point of MIT-BIH's PVCs against its other non-paced beats, rounded to 10 ms) ...
DEFAULT_MIN_QRS_WIDTH_S = 0.09
DEFAULT_WIDE_RATE_BPM = 120.0  # ... at least this fast (its own interval): a wide rhythm >= 120 bpm is VT
WIDE_EARLY_RATIO = 0.9  # ... and early, RR below this share of pvc's baseline where that is known
QRS_WIDTH = "qrs_width"
NORMAL_QRS_WIDTH_S = 0.067  # a normal beat's typical width (MIT-BIH, non-PVC non-paced median): contributions
# The per-stream state key: [run length, 1 once the run alarmed, its last `run_beats` intervals, newest last]
RUN = "run"
VENTRICULAR_RUN = "ventricular run"  # the quantity: agent.alarms.explain words its sentence


class VentricularRunDetector(PvcDetector):
    type_name = "ventricular_run"
    lowest_score = 0.0
    quantity = VENTRICULAR_RUN
    judges_whole_frames = True

    def __init__(
        self,
        id: str,
        channels: tuple[str, ...],
        hop: int,
        pvc_threshold: float = DEFAULT_THRESHOLD,
        weight: float = DEFAULT_WEIGHT,
        rr_history: int = DEFAULT_RR_HISTORY,
        run_beats: int = DEFAULT_RUN_BEATS,
        run_rate_bpm: float = DEFAULT_RUN_RATE_BPM,
        max_rr_ratio: float = DEFAULT_MAX_RR_RATIO,
        min_qrs_core: float = DEFAULT_MIN_QRS_CORE,
        min_qrs_width_s: float = DEFAULT_MIN_QRS_WIDTH_S,
        wide_rate_bpm: float = DEFAULT_WIDE_RATE_BPM,
    ) -> None:
        super().__init__(id, channels, hop, pvc_threshold, weight, rr_history)
        self.min_qrs_core = min_qrs_core  # used only with the third channel
        self.min_qrs_width_s, self.wide_rate_bpm = min_qrs_width_s, wide_rate_bpm  # only with the fourth
        # qrs_width comes only for the beats right after a break: its absence is no wiring problem
        self.sparse_channels = tuple(c for c in channels if c == QRS_WIDTH)
        self.pvc_threshold = pvc_threshold
        self.threshold = float(run_beats - 1)  # score = run length: exceeded from `run_beats` on
        self.run_beats = run_beats
        self.run_rate_bpm = run_rate_bpm
        self.max_rr_ratio = max_rr_ratio
        self._runs = BeatHistory(2 + run_beats)

    @classmethod
    def from_config(cls, config: DetectorConfig, rate_hz: float) -> VentricularRunDetector:
        reader = ParamReader(config, rate_hz)
        hop, threshold, weight, history = read_pvc_params(reader)
        run_beats = reader.count("run_beats", DEFAULT_RUN_BEATS)
        if not 2 <= run_beats <= 64:
            raise reader.fail("run_beats", f"expected 2 .. 64 beats, got {run_beats}")
        rate = reader.bounded("run_rate_bpm", DEFAULT_RUN_RATE_BPM, 30.0, 400.0)
        ratio = reader.bounded("max_rr_ratio", DEFAULT_MAX_RR_RATIO, 0.0, 10.0)
        if 0.0 < ratio < 1.0:
            raise reader.fail("max_rr_ratio", f"expected 0 (not checked) or a ratio >= 1, got {ratio:g}")
        core = reader.bounded("min_qrs_core", DEFAULT_MIN_QRS_CORE, 0.0, 100.0)
        width = reader.bounded("min_qrs_width_s", DEFAULT_MIN_QRS_WIDTH_S, 0.0, 1.0)
        wide_rate = reader.bounded("wide_rate_bpm", DEFAULT_WIDE_RATE_BPM, 30.0, 400.0)
        reader.finish()
        _check_channels(config, reader)
        return cls(
            config.id,
            config.channels,
            hop,
            threshold,
            weight,
            history,
            run_beats,
            rate,
            ratio,
            core,
            width,
            wide_rate,
        )

    def calibrate(self, normal: WindowBlock, target_false_alarms_per_hour: float, hop_seconds: float) -> None:
        """A run length is a clinical setting, not learned: nothing to calibrate."""

    def calibration_refusal(self) -> str:
        return "its threshold is a run length (params.run_beats), not learned from normal data"

    def score_hop(self, block: WindowBlock) -> ScoreBlock:
        n_streams = block.n_streams
        new = block.values[:, -min(block.hop, block.values.shape[1]) :, :]  # (S, n, 2 or 3)
        new_rr = new[:, :, 0]
        odd, early, baseline = self.parts(self._context(block.slots, new_rr), new[:, :, 1])
        core = new[:, :, 2] if new.shape[2] > 2 else None
        width = new[:, :, 3] if new.shape[2] > 3 else None
        with np.errstate(invalid="ignore"):
            pvc_scores = odd + early
            ventricular = pvc_scores > self.pvc_threshold
            if core is not None:
                # and a QRS of its own unlike the template's (a NaN core: not known, so not counted)
                ventricular &= core >= self.min_qrs_core
            if width is not None:
                # right after a break the templates hold whatever came first (a VT under way): a wide,
                # fast beat, early against the rhythm before where that is known, is ventricular alone
                wide = (width >= self.min_qrs_width_s) & (new_rr <= 60.0 / self.wide_rate_bpm)
                wide &= np.isnan(baseline) | (new_rr < WIDE_EARLY_RATIO * baseline)
                ventricular |= wide
        self._runs.grow(int(block.slots.max()) + 1 if block.slots.size else 0)
        state = self._runs.rows[block.slots]
        length = np.nan_to_num(state[:, 0]).astype(np.int64)
        established = np.nan_to_num(state[:, 1]) > 0
        intervals = state[:, 2:]
        scores: FloatArray = np.full(new_rr.shape, np.nan)
        rates: FloatArray = np.full(new_rr.shape, np.nan)
        for j in range(new_rr.shape[1]):  # beat by beat: a run may start, grow and end within a hop
            rr = new_rr[:, j]
            shifted = np.concatenate([intervals[:, 1:], rr[:, None]], axis=1)
            # An established run waits over a row without a beat (a gap, the pipeline's fill after a
            # pause) and goes on while the median of its last intervals is fast: one missed beat (a
            # doubled interval) or a gap must not end it, for inside a long run pvc no longer judges
            # its beats ventricular and nothing could start it again.
            held = established & np.isnan(rr)
            with np.errstate(invalid="ignore"):
                still_fast = established & (median_rates(shifted) > self.run_rate_bpm)
                goes_on = ventricular[:, j] | (still_fast & np.isfinite(rr))
            length = np.where(goes_on, length + 1, np.where(held, length, 0))
            intervals = np.where(goes_on[:, None], shifted, np.where(held[:, None], intervals, np.nan))
            rate = run_rates(intervals)
            with np.errstate(invalid="ignore"):
                starting = (rate > self.run_rate_bpm) & self._regular(intervals[:, 1:])
            fast = np.where(still_fast, True, starting)
            established = (goes_on | held) & (established | (fast & (length >= self.run_beats)))
            judged = (np.isfinite(pvc_scores[:, j]) | goes_on) & ~held
            scores[:, j] = np.where(judged, np.where(fast, length, 0.0), np.nan)
            rates[:, j] = rate
        self._runs.rows[block.slots] = np.concatenate(
            [length[:, None].astype(np.float64), established[:, None].astype(np.float64), intervals], axis=1
        )
        key = np.where(np.isnan(scores), -np.inf, scores)[:, ::-1]
        pick = scores.shape[1] - 1 - np.argmax(key, axis=1)  # the highest, the newest among equals
        rows = np.arange(n_streams)
        score = scores[rows, pick]
        rate_at = rates[rows, pick]
        picked_core = None if core is None else core[rows, pick]
        excess = excess_over_normal(early[rows, pick], odd[rows, pick], picked_core)
        if width is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                wider = np.log(width[rows, pick] / NORMAL_QRS_WIDTH_S)
            excess = np.concatenate([excess, np.where(np.isfinite(wider), wider, 0.0)[:, None]], axis=1)
        has = np.isfinite(rate_at)
        return ScoreBlock(
            scores=score,
            thresholds=self._thresholds(n_streams),
            contributions=np.where(has[:, None], shares(excess), 0.0),
            observed=rate_at,
            limits=np.where(has, self.run_rate_bpm, np.nan),
            baseline=np.full((n_streams, len(self.channels)), np.nan),
        )

    def _regular(self, intervals: FloatArray) -> BoolArray:
        """Rows whose known intervals span at most `max_rr_ratio` (longest / shortest); all when 0."""
        if not self.max_rr_ratio:
            return np.ones(len(intervals), dtype=bool)
        known = np.isfinite(intervals)
        longest = np.where(known, intervals, -np.inf).max(axis=1)
        shortest = np.where(known, intervals, np.inf).min(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out: BoolArray = ~known.any(axis=1) | (longest <= self.max_rr_ratio * shortest)
        return out

    # -- per-stream state: pvc's RR history and the run ---------------------------------------------------

    def reset_streams(self) -> None:
        super().reset_streams()
        self._runs.clear()

    def stream_state(self) -> dict[str, Any]:
        out = super().stream_state()
        out[RUN] = self._runs.saved()
        return out

    def load_state(self, state: Mapping[str, Any]) -> None:
        super().load_state(state)
        self.threshold = float(self.run_beats - 1)  # the configured run length, not a saved one

    def load_stream_state(self, state: Mapping[str, Any]) -> None:
        super().load_stream_state({k: v for k, v in state.items() if k != RUN})
        self._runs.load(state.get(RUN), f"state.detectors.{self.id}.streams.{RUN}")


def median_rates(intervals: FloatArray) -> FloatArray:
    """60 / the median of each row's known intervals, in bpm (NaN for a row without any): a doubled
    interval (a missed beat) among five does not move it."""
    median, _ = nan_median(intervals)
    with np.errstate(divide="ignore", invalid="ignore"):
        out: FloatArray = 60.0 / median
    return out


def run_rates(intervals: FloatArray) -> FloatArray:
    """60 / the mean of each row's known intervals, in bpm (NaN for a row without any)."""
    known = np.isfinite(intervals)
    total = np.where(known, intervals, 0.0).sum(axis=1)
    count = known.sum(axis=1)
    out: FloatArray = np.divide(60.0 * count, total, out=np.full(len(total), np.nan), where=total > 0)
    return out


def _check_channels(config: DetectorConfig, reader: ParamReader) -> None:
    """pvc's channels (rr, qrs_shape, optionally qrs_core), or those three and then qrs_width; the width's
    params only with it."""
    channels = config.channels
    if len(channels) == 4:
        if tuple(channels[2:]) != (QRS_CORE, QRS_WIDTH):
            raise ConfigError(
                f"detectors.{config.id}.channels",
                f'four channels are rr, qrs_shape, "{QRS_CORE}" and "{QRS_WIDTH}" (the beats stream of'
                f" [devices.beats]), got {list(channels)}",
            )
        return
    for key in ("min_qrs_width_s", "wide_rate_bpm"):
        if key in config.params:
            raise reader.fail(key, f'only with a fourth channel "{QRS_WIDTH}"')
    check_beat_channels(config, reader)
