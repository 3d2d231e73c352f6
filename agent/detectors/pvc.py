"""Premature ventricular beats from a beat stream: how early the beat came and how unlike its QRS is.

A PVC arrives early (its RR interval is short against the preceding rhythm) and, starting in the
ventricle, is conducted abnormally: its QRS is wide and shaped unlike the patient's normal beats. The
detector watches an RR stream of one reading per beat (the stage `agent.ecg.rr_from_ecg` makes it from
a device's ECG) with two channels, in this order: the interval ending at the beat (s) and the beat's QRS
shape distance (``qrs_shape``: RMS of the beat window minus the patient's template of recent beats over
the template's RMS, from the same stage), and optionally a third, ``qrs_core`` (below). Each beat is
scored from past beats only:

    score = log(qrs_shape + SHAPE_FLOOR) + weight * log(1 / prematurity)

prematurity = the beat's RR over the mean of the `rr_history` (8) valid RR before it (below 1 = early,
clipped to [0.2, 5]). NaN rows in between are skipped, not waited out: on a beat stream they are no beats
but a quality-gated interval, a flagged-ECG reading, or the pipeline's gap fill after a pause longer than
2.5 nominal beats (a 2.8 s pause on MIT-BIH 108 left 8 beats unjudged before they were skipped). It is
the score of `tools/evaluate/pvc.py`, the evaluation-side reference on the annotated MIT-BIH beats
(pooled ROC-AUC 0.998 there). The defaults (`DEFAULT_*` below) come from
`python -m tools.evaluate.pvc_gateway`, which replays the beats the gateway itself finds in the raw
MIT-BIH ECG through the pipeline; docs/benchmarks.md has the figures.

No verdict (NaN) for a beat without a QRS shape (the stage's template needs 8 beats after a gap) or
without an interval of its own, nor before `rr_history` valid intervals. Prematurity alone is not used
for a beat without a shape: an early beat may as well be atrial (a PAC) or a false beat on noise, and the
shape is what tells a ventricular one apart; the score would also be on another scale than the threshold
it is judged against. Beats right after a gap are unjudged either way: prematurity needs the same 8
beats of history.

Every beat is judged: a block of several new beats (a burst of readings, a frame of several hops) is
scored beat by beat and reported by its worst beat (`judges_whole_frames`), so `hop_beats` > 1 only
makes the calls rarer. The `rr_history` RR before the block's beats are kept per stream (state
`history`, persisted like af's), so prematurity needs no warm-up after a restart (the shape does
while the stage's template refills, unless the stage keeps it).

**The QRS core (optional third channel ``qrs_core``).** qrs_shape's 0.65 s window takes in the
neighbouring beats' waves at fast rates: in AF ~14 % of beats look early and unlike the template, 26 %
right after an onset (CPSC-2021), so `frequent_pvcs` started at AF onsets. With ``channels = ["rr",
"qrs_shape", "qrs_core"]`` the shape part reads the QRS alone (-60 .. +100 ms around R, against the
template of the last 32 beats' cores; agent.ecg.beat_shape): a beat whose core is below `min_qrs_core`
(0.35) is scored as shaped like its template (qrs_shape read as 0: never a PVC), and above it qrs_shape
counts at most `CORE_SHAPE_RATIO` (1.5) times the core, so a window made odd by its neighbours' waves
weighs no more than its QRS allows. Normal beats' cores are ~0.16 (MIT-BIH, non-PVC median), narrow
fast-AF beats' 0.15-0.53, PVCs' 1.4 (median; 1st / 3rd / 5th percentiles 0.36 / 0.50 / 0.58). Both
constants were chosen on MIT-BIH alone (the beats the gateway finds; weight 4 and threshold 0.69 kept):
of the floors 0.25 / 0.3 / 0.35 / 0.4 and ratios 1.5 / 2 / 3 / none, the pair with the best Sp at 0.69
among those keeping Se >= 0.975 there (0.35 and 1.5: Se 0.975, Sp 0.992 against 0.983 / 0.988 without
the core; every floor of 0.4 gave Se 0.971). Then, held out, CPSC-2021's non-PVC beats flagged in AF
fell from 14.4 % to 7.6 %, 26.6 % to 7.2 % right after an onset (`tools.evaluate.pvc_af`). Re-run once
the core's template kept to beats that were not early: Se 0.978 / Sp 0.992, 7.6 % and 7.6 %. A beat
without a core (none yet after a gap) has no verdict, as one without a shape. The third channel can
only be qrs_core (channels are read by position; `check_beat_channels`, shared with ventricular_run).

Contributions say which part drove the score: each part's excess over a normal beat (the shape's over
`NORMAL_SHAPE`, the typical distance of a normal beat; prematurity's over 1; the core's over
`NORMAL_QRS_CORE` when given), as shares.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from agent.config.schema import DetectorConfig
from agent.detectors.base import (
    FloatArray,
    IntArray,
    ScoreBlock,
    StreamingDetector,
    WindowBlock,
    shares,
)
from agent.detectors.beat_history import HISTORY, BeatHistory
from agent.detectors.params import ParamReader
from agent.errors import ConfigError

SHAPE_FLOOR = 1e-3  # a beat identical to its template scores log(1e-3), not -inf
PREMATURITY_CLIP = (0.2, 5.0)  # a missed or doubled beat must not dominate the log
# Typical qrs_shape of a normal beat: the median over the non-PVC beats the gateway finds in the MIT-BIH
# subset (0.22; 0.13-0.49 by record). Only the contributions use it.
NORMAL_SHAPE = 0.22
# The choice on all 12 MIT-BIH records by `python -m tools.evaluate.pvc_gateway`: the weight with the best
# pooled ROC-AUC (4, as in each of the 12 leave-one-record-out folds), the threshold with the best Youden
# index at that weight (0.689; Se 0.984 / Sp 0.984 with both chosen leave-one-record-out).
DEFAULT_WEIGHT = 4.0
DEFAULT_THRESHOLD = 0.69
DEFAULT_RR_HISTORY = 8
QRS_CORE = "qrs_core"  # the optional third channel (agent.ecg.beat_shape)
NORMAL_QRS_CORE = 0.16  # a normal beat's typical qrs_core (MIT-BIH, non-PVC beats' median): contributions
# With the core channel (the module docstring; chosen on MIT-BIH): a beat whose core is below this is no
# PVC, and its qrs_shape counts at most this multiple of its core.
DEFAULT_MIN_QRS_CORE = 0.35
CORE_SHAPE_RATIO = 1.5


class PvcDetector(StreamingDetector):
    type_name = "pvc"
    quantity = "PVC score"
    judges_whole_frames = True

    def __init__(
        self,
        id: str,
        channels: tuple[str, ...],
        hop: int,
        threshold: float,
        weight: float = DEFAULT_WEIGHT,
        rr_history: int = DEFAULT_RR_HISTORY,
        min_qrs_core: float = DEFAULT_MIN_QRS_CORE,
    ) -> None:
        # The window is the new beats alone: older ones come from the per-stream history.
        super().__init__(id, channels, hop, hop, threshold)
        self.min_qrs_core = min_qrs_core  # used only with the third channel
        self.weight = weight
        self.rr_history = rr_history
        self._beats = BeatHistory(rr_history)  # each stream's RR intervals before its newest beat

    @classmethod
    def from_config(cls, config: DetectorConfig, rate_hz: float) -> PvcDetector:
        reader = ParamReader(config, rate_hz)
        hop, threshold, weight, history = read_pvc_params(reader)
        core = reader.bounded("min_qrs_core", DEFAULT_MIN_QRS_CORE, 0.0, 100.0)
        reader.finish()
        check_beat_channels(config, reader)  # after the params, so a typo is named whatever the channels
        return cls(config.id, config.channels, hop, threshold, weight, history, core)

    # -- scoring -----------------------------------------------------------------------------------------

    def parts(
        self, rr: FloatArray, shape: FloatArray, core: FloatArray | None = None
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(shape part, prematurity part, RR baseline) of the newest `n` beats of each row, given (S, H+n)
        RR intervals (the `rr_history` before them first) and (S, n) shapes (and QRS cores: the shape read
        through them, as the module docstring says); NaN where a part is missing.
        A beat's baseline is the mean of the `rr_history` valid intervals before it: NaN rows (a quality-
        gated interval, the pipeline's gap fill after a pause longer than 2.5 nominal beats) are skipped."""
        if core is not None:
            with np.errstate(invalid="ignore"):
                # NaN where either is; a narrow QRS reads as the template's shape, whatever the window holds
                shape = np.where(core >= self.min_qrs_core, np.minimum(shape, CORE_SHAPE_RATIO * core), 0.0)
                shape = np.where(np.isnan(core), np.nan, shape)
        h = self.rr_history
        n = shape.shape[1]
        compact, valid_before = _valid_first(rr)
        before = valid_before[:, h : h + n]  # valid intervals before each new beat
        take = before[:, :, None] - h + np.arange(h)  # (S, n, H) their positions in `compact`
        previous = np.take_along_axis(compact[:, None, :], np.maximum(take, 0), axis=2)
        baseline = np.where(before >= h, previous.mean(axis=2), np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            prematurity = rr[:, h:] / baseline
            early = self.weight * np.log(1.0 / np.clip(prematurity, *PREMATURITY_CLIP))
            odd = np.log(np.maximum(shape, 0.0) + SHAPE_FLOOR)
        return odd, early, baseline

    def score_hop(self, block: WindowBlock) -> ScoreBlock:
        n_streams = block.n_streams
        new = block.values[:, -min(block.hop, block.values.shape[1]) :, :]  # (S, n, 2 or 3)
        rr = self._context(block.slots, new[:, :, 0])
        core = new[:, :, 2] if new.shape[2] > 2 else None
        odd, early, baseline = self.parts(rr, new[:, :, 1], core)
        scores = odd + early  # NaN where either part is
        # The block's worst beat speaks for it (the newest among equals, as `worst_of` picks).
        key = np.where(np.isnan(scores), -np.inf, scores)[:, ::-1]
        pick = scores.shape[1] - 1 - np.argmax(key, axis=1)
        rows = np.arange(n_streams)
        score = scores[rows, pick]
        has = ~np.isnan(score)
        picked_core = None if core is None else core[rows, pick]
        excess = excess_over_normal(early[rows, pick], odd[rows, pick], picked_core)
        unset = np.full((n_streams, excess.shape[1] - 1), np.nan)  # no baseline of the shapes
        return ScoreBlock(
            scores=score,
            thresholds=self._thresholds(n_streams),
            contributions=np.where(has[:, None], shares(excess), 0.0),
            observed=score,
            limits=np.where(has, self.threshold, np.nan),
            baseline=np.concatenate([baseline[rows, pick][:, None], unset], axis=1),
        )

    # -- the RR history of each stream ---------------------------------------------------------------------

    def _context(self, slots: np.ndarray, new_rr: FloatArray) -> FloatArray:
        """(S, rr_history + n) RR: each stream's remembered intervals, then the block's new beats."""
        if slots.size == 0:
            return np.full((0, self.rr_history + new_rr.shape[1]), np.nan)
        self._beats.grow(int(slots.max()) + 1)
        context = np.concatenate([self._beats.rows[slots], new_rr], axis=1)
        compact, valid_before = _valid_first(context)
        keep = (
            valid_before[:, -1:] + np.isfinite(context[:, -1:]) - self.rr_history + np.arange(self.rr_history)
        )
        newest = np.take_along_axis(compact, np.maximum(keep, 0), axis=1)
        self._beats.rows[slots] = np.where(keep >= 0, newest, np.nan)  # the newest valid, NaN-padded in front
        return context

    def reset_streams(self) -> None:
        super().reset_streams()
        self._beats.clear()

    def stream_state(self) -> dict[str, Any]:
        out = super().stream_state()
        out[HISTORY] = self._beats.saved()
        return out

    def load_stream_state(self, state: Mapping[str, Any]) -> None:
        super().load_stream_state({k: v for k, v in state.items() if k != HISTORY})
        self._beats.load(state.get(HISTORY), f"state.detectors.{self.id}.streams.{HISTORY}")


def excess_over_normal(early: FloatArray, odd: FloatArray, core: FloatArray | None) -> FloatArray:
    """Each part's excess over a normal beat, one column per channel (the contributions' input): the
    prematurity term's over 0, the shape term's over `NORMAL_SHAPE` and, with the core, the core's log over
    `NORMAL_QRS_CORE`'s."""
    parts = [np.maximum(early, 0.0), odd - np.log(NORMAL_SHAPE + SHAPE_FLOOR)]
    if core is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            parts.append(np.log(np.maximum(core, 0.0) + SHAPE_FLOOR) - np.log(NORMAL_QRS_CORE))
    return np.stack(parts, axis=1)


def read_pvc_params(reader: ParamReader) -> tuple[int, float, float, int]:
    """(hop, threshold, weight, rr_history) of a detector that judges beats as `pvc` does."""
    history = reader.count("rr_history", DEFAULT_RR_HISTORY)
    if not 2 <= history <= 64:
        raise reader.fail("rr_history", f"expected 2 .. 64 beats, got {history}")
    # One call per beat by default; `hop_s` (at the stream's nominal beat rate) like other detectors.
    hop = reader.count("hop_beats", 0) or reader.samples("hop_s", 1.0 / reader.rate_hz)
    threshold = reader.bounded("threshold", DEFAULT_THRESHOLD)
    weight = reader.bounded("weight", DEFAULT_WEIGHT, 0.0, 64.0)
    return hop, threshold, weight, history


def check_beat_channels(config: DetectorConfig, reader: ParamReader) -> None:
    """rr and qrs_shape, then optionally qrs_core by that name: channels are read by position, so another
    third channel (hr, say) would be taken for the QRS core and could let every beat or none count. And
    `min_qrs_core` only with the core, where it configures something."""
    channels = config.channels
    where = f"detectors.{config.id}.channels"
    if len(channels) not in (2, 3):
        raise ConfigError(
            where,
            f'a {config.type} detector takes rr, qrs_shape and optionally "{QRS_CORE}", got'
            f" {len(channels)} channel(s)",
        )
    if len(channels) == 3 and channels[2] != QRS_CORE:
        raise ConfigError(
            f"{where}[2]",
            f'the third channel can only be "{QRS_CORE}" (the QRS alone, from the beats stream of'
            f' [devices.beats]), got "{channels[2]}"',
        )
    if len(channels) == 2 and "min_qrs_core" in config.params:
        raise reader.fail(
            "min_qrs_core",
            f'only with a third channel "{QRS_CORE}" (channels = ["rr", "qrs_shape", "{QRS_CORE}"])',
        )


def _valid_first(rr: FloatArray) -> tuple[FloatArray, IntArray]:
    """(each row's valid values first, in order, then NaN; how many valid values precede each column)."""
    valid = np.isfinite(rr)
    compact = np.take_along_axis(rr, np.argsort(~valid, axis=1, kind="stable"), axis=1)
    before: IntArray = np.cumsum(valid, axis=1) - valid
    return compact, before
