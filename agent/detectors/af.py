"""Atrial fibrillation from RR intervals: short-window irregularity after ectopic/artifact removal.

Follows the structure of Petrėnas, Marozas & Sörnmo (2015), "Low-complexity detection of atrial
fibrillation in continuous long-term monitoring" (Comput. Biol. Med. 65:184-191): ectopic beat
filtering, characterisation of RR irregularity as the median of successive RR differences over a
short (8-beat) window, normalised by the heart-rate trend, and one threshold. What is implemented here:

1. Artifacts: RR outside [min_rr_s, max_rr_s] (a missed or doubled beat, 24-240 bpm by default) or
   quality-gated (NaN) is dropped, together with the differences that touch it.
2. Heart-rate trend: the median RR of the context (`window_beats`, 16 by default) — robust to the
   ectopic beats themselves, so no recursion is needed.
3. Ectopic beats: a premature beat followed by a compensatory pause (RR ratio to the trend below
   1 - `ectopic_prematurity`, the next above 1 + it, the two summing to about two trend intervals) is the
   signature of a PVC/PAC; both intervals are removed from the irregularity estimate. Bigeminy then
   leaves no differences at all, which gives no verdict rather than a false AF call. Alternation the
   pair rule misses (Petrėnas' bigeminal suppression): when the median lag-2 difference is below
   `bigeminy_ratio` (0.3) times the lag-1 one, the rhythm is bigeminal, not random, and gets no verdict.
4. Two-level rhythms: blocked premature beats, intermittent block or trigeminy switch the RR between two
   discrete levels in an irregular order, which neither rule above catches. The context's RR ratios are
   split into the two clusters that minimise the within-cluster variance (an exact 1-D 2-means over the
   sorted values); when that leaves less than `two_level_fraction` (0.12) of the variance, at least
   `TWO_LEVEL_MIN_BEATS` intervals sit in each level and the rhythm switches level at least
   `TWO_LEVEL_MIN_SWITCHES` times, the irregularity is measured on the residuals from the two levels
   (what is left once the pattern is explained), not on the raw intervals. AF spreads its intervals
   continuously, so its residual irregularity stays high; 0 turns the rule off. The rule and its
   constants were designed looking at the CPSC-2021 sample (its subject 35), see docs/evaluation.md.
5. Irregularity: the median of |ΔRR| / trend over the last `irregularity_beats` (8) clean differences.
   The median of 8 makes a lone surviving ectopic or artifact unable to move the score.
6. Heart rate: AF conducts fast and RSA is larger at slow rates, so the score may weigh the rate:
   irregularity x (0.8 s / trend) ** `rate_exponent` (0 by default: no weighting), minus an optional
   `bias` (the typical sinus irregularity, 0 by default) scaled by trend/0.8 s. `rate_exponent` and the
   threshold are fitted by `python -m tools.evaluate.af_fit` (tools/evaluate/af_fit.py), leave one
   subject out, on the CPSC-2021 sample; docs/benchmarks.md has the numbers.

7. Rate steps (`rate_step`, 0 = off): AF in paroxysms starts with an abrupt shortening of the RR and
   ends with a pause and a slower sinus rhythm, and a 16-beat context straddling the change keeps the old
   rhythm's trend and differences for about 8 beats (the lag behind each boundary). When the median of
   `RATE_STEP_BEATS` (3) intervals differs from the median of the 3 before them by more than `rate_step`
   in log ratio (0.5: a 65 % change), the beats before the newest such step are dropped and the score
   (trend, ectopic pairs, irregularity, weighting) is measured on the beats after it alone. A clean step
   is seen at three beats in a row and the newest is kept, so the new rhythm's first beat is dropped too.
   The whole context is used, as without the rule, when fewer than `min_differences` clean differences
   follow the step, or when the whole context shows an ectopic pattern that explains a step (an ectopic
   pair among the newest `irregularity_beats` intervals, bigeminal alternation, a two-level rhythm).
   `rate_step` is fitted with `rate_exponent` by af_fit, leave one subject out; the rule, its medians of
   3 and its veto were designed looking at the CPSC-2021 sample (docs/benchmarks.md).

8. Atrial activity (optional second channel, ``p_wave`` of agent.ecg.p_wave: how alike each normal
   beat's pre-R segment is to the recent ones, about 1 with P waves and about 0 in AF). When the channels
   are ``["rr", "p_wave"]``, a beat whose newest `p_wave_context` (16) beats hold at least `p_wave_beats`
   (4) values with a median of at least `p_wave_present` (0.5) is scored 0: the P waves before the
   normal beats say the irregularity is ectopy in sinus rhythm, not AF. Odd-shaped beats (PVCs) and beats
   after short intervals carry no value, so dense ectopy leaves the normal beats' P waves to decide. The
   values before the newest rate step (rule 7, whether or not the score used the step) are left out, so
   the sinus beats before an AF onset do not veto it (with `rate_step` = 0 there is no step to cut
   at, so they can). Without the channel nothing changes (and a gateway finding beats in an ECG does
   not compute it: agent.ecg.rr_from_ecg makes it only for a stream a detector reads it on). The constants
   were chosen looking at MIT-BIH (records 106, 200) and the CPSC-2021 sample, the data they are
   measured on (docs/benchmarks.md): not an independent test.

9. ΔRR distribution (`ks_beats`, 0 = off): after Tateno & Glass (2001), the Kolmogorov-Smirnov distance
   D of the newest `ks_beats` (32) intervals' ΔRR / mean RR from an AF reference, Normal(0, `ks_scale`)
   (agent.detectors.rr_distribution), divides the score: score / D ** `ks_exponent`, with the threshold
   fitted for it. A window whose differences are spread like AF's (D ~0.1) gains far more than a regular
   one (all ΔRR near 0: D ~0.5) or an ectopic one (a few large ΔRR among small ones). The distance
   sees the raw in-range intervals (no ectopic removal, no rate-step cut: the score has those) and
   needs 2 differences; fewer leave the score as it is. The context kept per stream is
   then `ks_beats` long while the rules above still measure the newest `window_beats`. The family, the
   window and the combination were chosen offline on the CPSC-2021 sample, leave one subject out
   (tools/evaluate/af_density.py); `ks_scale` and `ks_exponent` are fitted by af_fit --ks
   (docs/benchmarks.md).
10. Bigeminal windows with AF's spread (`ks_bigeminy`, 0 = off; only with `ks_beats`): rule 3's bigeminal
   suppression gives no verdict to alternating short-long intervals, and AF alternates so by chance for a
   few beats. Bigeminy's ΔRR are two-point (±a: D about 0.3-0.4), AF's stay continuous (D about 0.1), so a
   bigeminal window whose D is below `ks_bigeminy` is scored by rules 1-7 without the suppression (the
   bigeminy still vetoes a rate step's cut). 0.15, with the threshold chosen by the issue's goal instead
   of Youden, was `python -m tools.evaluate.af_boost`'s variant E (docs/benchmarks.md); it also scores
   some irregular slow bigeminy (CPSC subject 35, MIT-BIH 200).

Verdicts start after `verdict_beats` beats (`min_differences` + 1 = 3 by default): that is the
detector's window, so the pipeline scores a stream from its 3rd beat; the older beats of the
`window_beats` context are kept per stream (state `history`, persisted like other detector state). Until
the context is full the trend and the two-level test see fewer beats. `verdict_beats = window_beats` gives
the earlier stateless behaviour (no verdict before 16 beats). The history assumes each call's window
continues the previous one by `hop` beats, as the pipeline delivers them. A verdict needs
`min_differences` clean differences (2 by default), while later beats still use the full context.

Parameters (all optional), with the defaults fitted on the CPSC-2021 sample (`DEFAULT_*` below):
`threshold` 0.057, `rate_exponent` 2, `rate_step` 0.5, `min_differences` 2, `verdict_beats`
min_differences + 1, `window_beats` 16, `irregularity_beats` 8, `hop_beats` 1, `ectopic_prematurity` 0.12,
`bigeminy_ratio` 0.3, `two_level_fraction` 0.12, `bias` 0, `min_rr_s` 0.25, `max_rr_s` 2.5; with a
second channel `p_wave_present` 0.5, `p_wave_beats` 4 and `p_wave_context` 16; `ks_beats` 0 (off),
`ks_scale` 0.34, `ks_exponent` 1.5, `ks_bigeminy` 0 (off).
Migration: every key keeps its meaning, but the defaults changed on 2026-11-29. The previous defaults
(unweighted, verdicts from the 9th beat) are `threshold = 0.04, rate_exponent = 0, rate_step = 0,
min_differences = 4, verdict_beats = 9`; the first detector's also had `verdict_beats = window_beats` and
`two_level_fraction = 0`.

The score of a call is that of the newest beat, computed from the context's past beats only, so each
beat is decided from past RR as it arrives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.config.schema import DetectorConfig
from agent.detectors.base import (
    BoolArray,
    FloatArray,
    IntArray,
    ScoreBlock,
    StreamingDetector,
    WindowBlock,
)
from agent.detectors.beat_history import HISTORY, BeatHistory
from agent.detectors.params import ParamReader
from agent.detectors.robust import nan_median
from agent.detectors.rr_distribution import af_distance
from agent.errors import ConfigError

REFERENCE_RR_S = 0.8  # the bias and the rate weighting are stated at 75 bpm
TWO_LEVEL_MIN_BEATS = 3  # intervals in the smaller level before a two-level rhythm is believed
TWO_LEVEL_MIN_SWITCHES = 4  # level changes in the context: a pattern, not one step in rate
RATE_STEP_BEATS = 3  # a rate step compares the median of this many intervals with the same before them
P_WAVE = "p_wave"  # the beats stream's atrial-activity channel (agent.ecg.p_wave), the optional second
P_WAVE_KEYS = ("p_wave_present", "p_wave_beats", "p_wave_context")
P_WAVE_HISTORY = "p_wave_history"  # the per-stream state key of the atrial-activity context
DEFAULT_P_WAVE_PRESENT = 0.5
DEFAULT_P_WAVE_BEATS = 4
DEFAULT_P_WAVE_CONTEXT = 16
# Config defaults: the settings fitted on the CPSC-2021 sample by tools/evaluate/af_fit.py (all six
# subjects; configs/cpsc.toml). Leave-one-subject-out they gave Se 93.9 % / Sp 95.7 %, and 0 false AF
# starts in 12 simulated wearable-hours, against 8 with the earlier defaults (threshold 0.04, no rate
# weighting, verdicts from the 9th beat). docs/benchmarks.md has the figures.
DEFAULT_THRESHOLD = 0.057
DEFAULT_RATE_EXPONENT = 2.0
DEFAULT_RATE_STEP = 0.5
DEFAULT_MIN_DIFFERENCES = 2  # verdicts from the 3rd beat (min_differences + 1)
DEFAULT_KS_SCALE = 0.34  # AF's ΔRR / mean RR spread (the CPSC-2021 sample's, all six subjects)
DEFAULT_KS_EXPONENT = 1.5
KS_FLOOR = 1e-3  # a distance below this is as AF-like as it gets: bounds the score's boost


class AtrialFibrillationDetector(StreamingDetector):
    type_name = "af"
    quantity = "RR irregularity"

    def __init__(
        self,
        id: str,
        channels: tuple[str, ...],
        window: int,
        hop: int,
        threshold: float,
        irregularity_beats: int = 8,
        ectopic_prematurity: float = 0.12,
        bias: float = 0.0,
        bigeminy_ratio: float = 0.3,
        min_rr_s: float = 0.25,
        max_rr_s: float = 2.5,
        context_beats: int | None = None,
        two_level_fraction: float = 0.12,
        rate_exponent: float = 0.0,
        min_differences: int | None = None,
        rate_step: float = 0.0,
        p_wave_present: float = DEFAULT_P_WAVE_PRESENT,
        p_wave_beats: int = DEFAULT_P_WAVE_BEATS,
        p_wave_context: int = DEFAULT_P_WAVE_CONTEXT,
        ks_beats: int = 0,
        ks_scale: float = DEFAULT_KS_SCALE,
        ks_exponent: float = DEFAULT_KS_EXPONENT,
        ks_bigeminy: float = 0.0,
    ) -> None:
        super().__init__(id, channels, window, hop, threshold)
        self.irregularity_beats = irregularity_beats
        self.ectopic_prematurity = ectopic_prematurity
        self.bias = bias
        # a median of |ΔRR| is never negative; a `bias` subtracted from it can make it so
        self.lowest_score = 0.0 if bias <= 0 else -math.inf
        self.bigeminy_ratio = bigeminy_ratio
        self.min_rr_s = min_rr_s
        self.max_rr_s = max_rr_s
        # The rules measure the newest `score_beats`; the ΔRR distribution may look further back.
        self.score_beats = window if context_beats is None else max(context_beats, window)
        self.context_beats = max(self.score_beats, ks_beats)
        self.ks_beats = ks_beats
        self.ks_scale = ks_scale
        self.ks_exponent = ks_exponent
        self.ks_bigeminy = ks_bigeminy
        self.two_level_fraction = two_level_fraction
        self.rate_exponent = rate_exponent
        self.min_differences = (irregularity_beats + 1) // 2 if min_differences is None else min_differences
        self.rate_step = rate_step
        self._beats = BeatHistory(self.context_beats)  # each stream's context beyond the window
        self.p_wave_present = p_wave_present
        self.p_wave_beats = p_wave_beats
        self.p_wave_context = min(p_wave_context, self.score_beats)
        # The second channel, when given: the atrial activity of each beat, its context kept the same way.
        self._p_waves = BeatHistory(self.context_beats) if len(channels) > 1 else None
        self.sparse_channels = tuple(channels[1:])  # p_wave: only normal beats after long intervals

    @classmethod
    def from_config(cls, config: DetectorConfig, rate_hz: float) -> AtrialFibrillationDetector:
        reader = ParamReader(config, rate_hz)
        reader.channel_count()
        _check_channels(config)
        irregularity = reader.count("irregularity_beats", 8)
        if irregularity < 3:
            raise reader.fail("irregularity_beats", f"expected at least 3, got {irregularity}")
        context = reader.count("window_beats", 16)
        if context < irregularity + 2:
            raise reader.fail("window_beats", f"must exceed irregularity_beats + 1, got {context}")
        needed = reader.count("min_differences", DEFAULT_MIN_DIFFERENCES)
        if not 2 <= needed <= irregularity:
            span = f"2 .. irregularity_beats ({irregularity})"
            raise reader.fail("min_differences", f"expected {span}, got {needed}")
        verdict = reader.count("verdict_beats", needed + 1)
        if not needed + 1 <= verdict <= context:
            span = f"min_differences + 1 ({needed + 1}) .. window_beats ({context})"
            raise reader.fail("verdict_beats", f"expected {span}, got {verdict}")
        # One score per beat by default; `hop_s` (at the stream's nominal beat rate) like other detectors.
        hop = reader.count("hop_beats", 0) or reader.samples("hop_s", 1.0 / reader.rate_hz)
        if not 1 <= hop <= verdict:
            raise reader.fail("hop_beats", f"expected 1..verdict_beats ({verdict}), got {hop}")
        min_rr = reader.positive("min_rr_s", 0.25)
        max_rr = reader.positive("max_rr_s", 2.5)
        if max_rr <= min_rr:
            raise reader.fail("max_rr_s", f"must exceed min_rr_s ({min_rr:g}), got {max_rr:g}")
        two_level = reader.number("two_level_fraction", 0.12) or 0.0
        if not 0.0 <= two_level < 1.0:
            raise reader.fail("two_level_fraction", f"expected 0 (off) .. below 1, got {two_level:g}")
        exponent = reader.number("rate_exponent", DEFAULT_RATE_EXPONENT) or 0.0
        if not 0.0 <= exponent <= 4.0:
            raise reader.fail("rate_exponent", f"expected 0 .. 4, got {exponent:g}")
        present = reader.number("p_wave_present", DEFAULT_P_WAVE_PRESENT)
        present = DEFAULT_P_WAVE_PRESENT if present is None else present
        if not -1.0 <= present <= 1.0:
            raise reader.fail("p_wave_present", f"expected -1 .. 1 (a correlation), got {present:g}")
        p_context = reader.count("p_wave_context", DEFAULT_P_WAVE_CONTEXT)
        if not 1 <= p_context <= context:
            raise reader.fail("p_wave_context", f"expected 1 .. window_beats ({context}), got {p_context}")
        p_beats = reader.count("p_wave_beats", DEFAULT_P_WAVE_BEATS)
        if not 1 <= p_beats <= p_context:
            raise reader.fail("p_wave_beats", f"expected 1 .. p_wave_context ({p_context}), got {p_beats}")
        if len(config.channels) == 1:  # the veto's keys without its channel would configure nothing
            for key in P_WAVE_KEYS:
                if key in config.params:
                    raise reader.fail(
                        key, f'only with a second channel "{P_WAVE}" (channels = ["rr", "{P_WAVE}"])'
                    )
        step = reader.number("rate_step", DEFAULT_RATE_STEP) or 0.0
        if not 0.0 <= step <= 2.0:
            raise reader.fail("rate_step", f"expected 0 (off) .. 2 (log ratio), got {step:g}")
        ks_beats = reader.count("ks_beats", 0)
        if ks_beats and not context <= ks_beats <= 256:
            raise reader.fail(
                "ks_beats", f"expected 0 (off) or window_beats ({context}) .. 256, got {ks_beats}"
            )
        ks_scale = reader.positive("ks_scale", DEFAULT_KS_SCALE)
        ks_exponent = reader.number("ks_exponent", DEFAULT_KS_EXPONENT)
        ks_exponent = DEFAULT_KS_EXPONENT if ks_exponent is None else ks_exponent
        if not 0.0 <= ks_exponent <= 4.0:
            raise reader.fail("ks_exponent", f"expected 0 .. 4, got {ks_exponent:g}")
        # Off with the distance (ks_beats = 0 turns rules 9 and 10 off together, as the tools do).
        ks_bigeminy = reader.number("ks_bigeminy", 0.0) or 0.0
        if not 0.0 <= ks_bigeminy < 1.0:
            span = "0 (off) .. below 1 (a KS distance)"
            raise reader.fail("ks_bigeminy", f"expected {span}, got {ks_bigeminy:g}")
        detector = cls(
            config.id,
            config.channels,
            verdict,
            hop,
            threshold=reader.positive("threshold", DEFAULT_THRESHOLD),
            irregularity_beats=irregularity,
            ectopic_prematurity=reader.fraction("ectopic_prematurity", 0.12),
            bias=reader.number("bias", 0.0) or 0.0,
            bigeminy_ratio=reader.number("bigeminy_ratio", 0.3) or 0.0,
            min_rr_s=min_rr,
            max_rr_s=max_rr,
            context_beats=context,
            two_level_fraction=two_level,
            rate_exponent=exponent,
            min_differences=needed,
            rate_step=step,
            p_wave_present=present,
            p_wave_beats=p_beats,
            p_wave_context=p_context,
            ks_beats=ks_beats,
            ks_scale=ks_scale,
            ks_exponent=ks_exponent,
            ks_bigeminy=ks_bigeminy,
        )
        reader.finish()
        return detector

    # -- scoring -----------------------------------------------------------------------------------------

    def irregularity(self, rr: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(score, RR trend) of the newest beat of each row of (S, W) RR intervals in seconds (W: the
        context, `context_beats`; the rules use its newest `score_beats`)."""
        score, trend, _ = self._irregularity(rr)
        return score, trend

    def _irregularity(self, rr: FloatArray) -> tuple[FloatArray, FloatArray, BoolArray]:
        """`irregularity`, and the beats before each row's newest rate step (NaN-free: left out)."""
        wide = np.where((rr >= self.min_rr_s) & (rr <= self.max_rr_s), rr, np.nan)
        rr = wide[:, -self.score_beats :]
        score, trend, left_out = self._rules(rr)
        if self.ks_beats > 0:
            distance = np.nan_to_num(af_distance(wide[:, -self.ks_beats :], self.ks_scale), nan=1.0)
            # Rule 10: a bigeminal-looking window whose differences are spread like AF's is scored.
            lift = np.isnan(score) & (distance < self.ks_bigeminy)
            if lift.any():
                score = score.copy()
                score[lift] = self._rules(rr[lift], suppress_bigeminy=False)[0]
            score = score / np.maximum(distance, KS_FLOOR) ** self.ks_exponent
        if wide.shape[1] > rr.shape[1]:  # beats older than the rules' context: before any step they saw
            stepped: BoolArray = np.any(left_out, axis=1)
            older = ~np.isnan(wide[:, : wide.shape[1] - rr.shape[1]]) & stepped[:, None]
            left_out = np.concatenate([older, left_out], axis=1)
        return score, trend, left_out

    def _rules(
        self, rr: FloatArray, suppress_bigeminy: bool = True
    ) -> tuple[FloatArray, FloatArray, BoolArray]:
        """Rules 1-7 on (S, score_beats) in-range RR: score, trend, the beats before the newest step.
        `suppress_bigeminy` False: bigeminal windows are scored too (they still veto a rate step's cut)."""
        whole = self._measure(rr, suppress_bigeminy)
        if self.rate_step <= 0:
            return whole.score, whole.trend, np.zeros(rr.shape, dtype=bool)
        cut = _after_rate_step(rr, self.rate_step)
        after = self._measure(cut, suppress_bigeminy)
        # A step that an ectopic pattern explains is no rhythm change; too few beats after it: no verdict
        # of its own. Rows without a step measure the same beats twice.
        use = ~np.isnan(after.score) & ~whole.patterned
        # Every step, even one the score ignores (an ectopic pattern, too few beats after it): the beats
        # of the rhythm before it must not veto an AF onset with their P waves. (Only the steps the score
        # uses kept more of MIT-BIH 106's vetoes but lost CPSC AF onsets.)
        left_out: BoolArray = np.isnan(cut) & ~np.isnan(rr)
        score = np.where(use, after.score, whole.score)
        return score, np.where(use, after.trend, whole.trend), left_out

    def _measure(self, rr: FloatArray, suppress_bigeminy: bool = True) -> _Measured:
        """Score, trend and ectopic-pattern flag of each row of (S, W) in-range RR intervals (NaN gaps);
        bigeminal rows get no verdict unless `suppress_bigeminy` is False (the flag is set either way)."""
        trend, _ = nan_median(rr)
        ratio = rr / trend[:, None]
        pair, ectopic = ectopic_pairs(ratio, self.ectopic_prematurity)
        clean = np.where(ectopic, np.nan, ratio)
        median, count = _newest_median(np.abs(np.diff(clean, axis=1)), self.irregularity_beats)
        enough = count >= self.min_differences
        # Bigeminal suppression: alternating short-long intervals (ectopy the pair rule missed) have large
        # lag-1 but small lag-2 differences; AF has both about equal.
        lag1, _ = _newest_median(np.abs(ratio[:, 1:] - ratio[:, :-1]), self.irregularity_beats)
        lag2, _ = _newest_median(np.abs(ratio[:, 2:] - ratio[:, :-2]), self.irregularity_beats)
        with np.errstate(invalid="ignore"):
            bigeminal = lag2 < self.bigeminy_ratio * lag1
        if suppress_bigeminy:
            enough &= ~bigeminal
        patterned = bigeminal | pair[:, -self.irregularity_beats :].any(axis=1)
        if self.two_level_fraction > 0:
            two_level, residual = _two_levels(ratio, self.two_level_fraction)
            within, _ = _newest_median(
                np.abs(np.diff(np.where(ectopic, np.nan, residual), axis=1)), self.irregularity_beats
            )
            median = np.where(two_level, within, median)
            patterned |= two_level
        with np.errstate(all="ignore"):
            score = (
                median * (REFERENCE_RR_S / trend) ** self.rate_exponent - self.bias * trend / REFERENCE_RR_S
            )
        return _Measured(np.where(enough, score, np.nan), trend, patterned)

    def score_hop(self, block: WindowBlock) -> ScoreBlock:
        n = block.n_streams
        rr = self._context(block, 0, self._beats)
        scores, trend, before_step = self._irregularity(rr)
        baseline = np.full((n, len(self.channels)), np.nan)
        baseline[:, 0] = trend
        if self._p_waves is not None:
            # The beats the score left out before a rate step (an AF onset's) are left out here too.
            p_wave = np.where(before_step, np.nan, self._context(block, 1, self._p_waves))
            p_wave = p_wave[:, -self.p_wave_context :]
            present, baseline[:, 1] = self.p_waves_present(p_wave)
            scores = np.where(present & ~np.isnan(scores), 0.0, scores)
        has = ~np.isnan(scores)
        contributions = np.zeros((n, len(self.channels)))
        contributions[:, 0] = np.where(has & (scores > self.threshold), 1.0, 0.0)
        return ScoreBlock(
            scores=scores,
            thresholds=self._thresholds(n),
            contributions=contributions,
            observed=scores,
            limits=np.where(has, self.threshold, np.nan),
            baseline=baseline,
        )

    def p_waves_present(self, p_wave: FloatArray) -> tuple[BoolArray, FloatArray]:
        """(rows whose median says P waves, the median) of (S, W) atrial-activity values: at least
        `p_wave_beats` values (NaN ignored) and a median of at least `p_wave_present`."""
        median, count = nan_median(p_wave)
        with np.errstate(invalid="ignore"):
            present: BoolArray = (count >= self.p_wave_beats) & (median >= self.p_wave_present)
        return present, median

    # -- the context: the window plus the stream's older beats ---------------------------------------------

    def _context(self, block: WindowBlock, channel: int, history: BeatHistory) -> FloatArray:
        """(S, context_beats) newest values of a channel of each stream: remembered older beats (`history`),
        then the block's window."""
        values = block.values[:, :, channel]
        if self.context_beats == self.window:
            return values[:, -self.window :]
        slots = block.slots
        if slots.size == 0:
            return np.full((0, self.context_beats), np.nan)
        history.grow(int(slots.max()) + 1)
        before = history.rows[slots]
        # The block's first (length - hop) beats were already the newest of the previous call.
        overlap = min(values.shape[1] - min(block.hop, values.shape[1]), self.context_beats)
        older = before[:, : self.context_beats - overlap]
        context = np.concatenate([older, values], axis=1)[:, -self.context_beats :]
        history.rows[slots] = context
        return context

    def reset_streams(self) -> None:
        super().reset_streams()
        self._beats.clear()
        if self._p_waves is not None:
            self._p_waves.clear()

    def stream_state(self) -> dict[str, Any]:
        out = super().stream_state()
        if self.context_beats > self.window:
            out[HISTORY] = self._beats.saved()
            if self._p_waves is not None:
                out[P_WAVE_HISTORY] = self._p_waves.saved()
        return out

    def load_stream_state(self, state: Mapping[str, Any]) -> None:
        super().load_stream_state({k: v for k, v in state.items() if k not in (HISTORY, P_WAVE_HISTORY)})
        self._beats.load(state.get(HISTORY), f"state.detectors.{self.id}.streams.{HISTORY}")
        if self._p_waves is not None:
            where = f"state.detectors.{self.id}.streams.{P_WAVE_HISTORY}"
            self._p_waves.load(state.get(P_WAVE_HISTORY), where)


def _check_channels(config: DetectorConfig) -> None:
    """The RR channel, then optionally p_wave by that name: channels are read by position, so another
    second channel (hr, say) would be taken for atrial activity and could veto every beat, silencing AF."""
    channels = config.channels
    where = f"detectors.{config.id}.channels"
    if len(channels) > 2:
        raise ConfigError(
            where, f'expected the RR channel and optionally "{P_WAVE}", got {len(channels)} channels'
        )
    if channels[0] == P_WAVE:
        raise ConfigError(
            f"{where}[0]", f'expected the RR channel first, got "{P_WAVE}" (channels = ["rr", "{P_WAVE}"])'
        )
    if len(channels) == 2 and channels[1] != P_WAVE:
        raise ConfigError(
            f"{where}[1]",
            f'the second channel can only be "{P_WAVE}" (atrial activity, from the beats stream of'
            f' [devices.beats]), got "{channels[1]}"',
        )


@dataclass(frozen=True, slots=True)
class _Measured:
    score: FloatArray  # NaN: no verdict
    trend: FloatArray  # median RR (s)
    patterned: BoolArray  # an ectopic pattern (pair, bigeminy, two levels) explains the irregularity


def ectopic_pairs(ratio: FloatArray, prematurity: float) -> tuple[BoolArray, BoolArray]:
    """(pair starts (S, W-1), beats in a pair (S, W)) of RR intervals given as ratios to the trend.

    Ectopic pair: premature interval k, compensatory interval k+1, together about two trend RRs."""
    p = prematurity
    short = ratio[:, :-1] < 1.0 - p
    long = ratio[:, 1:] > 1.0 + p
    compensated = np.abs(ratio[:, :-1] + ratio[:, 1:] - 2.0) < 2.0 * p
    pair: BoolArray = short & long & compensated
    ectopic = np.zeros(ratio.shape, dtype=bool)
    ectopic[:, :-1] |= pair
    ectopic[:, 1:] |= pair
    return pair, ectopic


def _after_rate_step(rr: FloatArray, step: float) -> FloatArray:
    """`rr` with the beats before each row's newest rate step blanked (NaN); rows without one unchanged.

    A step at beat j: the median of beats j .. j+2 and of beats j-3 .. j-1 differ by more than `step` in
    log ratio. Medians of 3, so one ectopic beat or artifact makes no step.
    """
    n = RATE_STEP_BEATS
    w = rr.shape[1]
    if w < 2 * n:
        return rr
    level, _ = nan_median(np.lib.stride_tricks.sliding_window_view(rr, n, axis=1), axis=2)
    with np.errstate(all="ignore"):  # all-NaN windows: no step there
        change = np.abs(np.log(level[:, n:] / level[:, : w - 2 * n + 1]))
    stepped = np.nan_to_num(change, nan=0.0) > step  # column i: a step at beat i + n
    newest = stepped.shape[1] - 1 - np.argmax(stepped[:, ::-1], axis=1) + n
    first = np.where(stepped.any(axis=1), newest, 0)
    return np.where(np.arange(w)[None, :] >= first[:, None], rr, np.nan)


def _newest_median(diffs: FloatArray, k: int) -> tuple[FloatArray, IntArray]:
    """Median of the newest `k` non-NaN entries of each row, and how many there were."""
    valid = ~np.isnan(diffs)
    from_newest = np.cumsum(valid[:, ::-1], axis=1)[:, ::-1]
    keep = valid & (from_newest <= k)
    median, _ = nan_median(np.where(keep, diffs, np.nan))  # rows with nothing kept: NaN
    count: IntArray = keep.sum(axis=1).astype(np.int64)
    return median, count


def _two_levels(ratio: FloatArray, max_fraction: float) -> tuple[np.ndarray, FloatArray]:
    """(rows that alternate between two RR levels, residual of each interval from its level's mean).

    Exact 1-D 2-means: over the sorted values every split point is tried at once with cumulative sums.
    """
    s, w = ratio.shape
    ordered = np.sort(ratio, axis=1)  # NaN last
    n = (~np.isnan(ratio)).sum(axis=1)
    filled = np.nan_to_num(ordered)
    csum, csq = np.cumsum(filled, axis=1), np.cumsum(filled**2, axis=1)
    rows = np.arange(s)
    last = np.maximum(n - 1, 0)
    total, total_sq = csum[rows, last][:, None], csq[rows, last][:, None]
    low_n = np.arange(1, w + 1)[None, :]
    high_n = n[:, None] - low_n
    with np.errstate(all="ignore"):
        low_mean = csum / low_n
        high_mean = (total - csum) / high_n
        sse = (csq - low_n * low_mean**2) + ((total_sq - csq) - high_n * high_mean**2)
        sse = np.where(high_n >= 1, sse, np.inf)
        best = np.argmin(sse, axis=1)
        spread = total_sq[:, 0] - total[:, 0] ** 2 / np.maximum(n, 1)
        fraction = sse[rows, best] / spread
    split = ordered[rows, best]
    high = ratio > split[:, None]
    valid = ~np.isnan(ratio)
    centre = np.where(high, high_mean[rows, best][:, None], low_mean[rows, best][:, None])
    switches = ((high[:, 1:] != high[:, :-1]) & valid[:, 1:] & valid[:, :-1]).sum(axis=1)
    minority = np.minimum(best + 1, n - best - 1)
    with np.errstate(invalid="ignore"):
        patterned = (
            (fraction < max_fraction)
            & (minority >= TWO_LEVEL_MIN_BEATS)
            & (switches >= TWO_LEVEL_MIN_SWITCHES)
        )
    return patterned, ratio - centre
