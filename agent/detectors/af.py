"""Atrial fibrillation from RR intervals: short-window irregularity after ectopic/artifact removal.

Follows the structure of Petrėnas, Marozas & Sörnmo (2015), "Low-complexity detection of atrial
fibrillation in continuous long-term monitoring" (Comput. Biol. Med. 65:184-191): ectopic beat
filtering, characterisation of RR irregularity as the median of successive RR differences over a
short (8-beat) window, normalised by the heart-rate trend, and one threshold. What is implemented here:

1. Artifacts: RR outside [min_rr_s, max_rr_s] (a missed or doubled beat, 24-240 bpm by default) or
   quality-gated (NaN) is dropped, together with the differences that touch it.
2. Heart-rate trend: the median RR of the whole window (`window_beats`, 16 by default) — robust to the
   ectopic beats themselves, so no recursion is needed and the detector stays stateless.
3. Ectopic beats: a premature beat followed by a compensatory pause (RR ratio to the trend below
   1 - `ectopic_prematurity`, the next above 1 + it, the two summing to about two trend intervals) is the
   signature of a PVC/PAC; both intervals are removed from the irregularity estimate. Bigeminy then
   leaves no differences at all, which gives no verdict rather than a false AF call. Alternation the
   pair rule misses (Petrėnas' bigeminal suppression): when the median lag-2 difference is below
   `bigeminy_ratio` (0.3) times the lag-1 one, the rhythm is bigeminal, not random, and gets no verdict.
4. Irregularity: the median of |ΔRR| / trend over the last `irregularity_beats` (8) clean differences.
   The median of 8 makes a lone surviving ectopic or artifact unable to move the score.
5. Bias: on sinus rhythm the median |ΔRR|/RR is not zero (respiratory sinus arrhythmia, RR jitter of
   a beat detector), and RSA is larger at slow rates. The score subtracts an optional `bias` (the
   typical sinus irregularity, 0 by default) scaled by trend/0.8 s. The default threshold 0.04 was
   chosen looking at the CPSC-2021 sample; docs/evaluation.md and docs/benchmarks.md say how well it
   holds when chosen per held-out subject.

The score of a call is that of the newest beat, computed from the window's past beats only, so each beat
is decided from past RR as it arrives. Stateless: the window is the state.
"""

from __future__ import annotations

import warnings

import numpy as np

from agent.config.schema import DetectorConfig
from agent.detectors.base import FloatArray, IntArray, ScoreBlock, StreamingDetector, WindowBlock
from agent.detectors.params import ParamReader

REFERENCE_RR_S = 0.8  # the bias is stated at 75 bpm and scaled with the RR trend


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
    ) -> None:
        super().__init__(id, channels, window, hop, threshold)
        self.irregularity_beats = irregularity_beats
        self.ectopic_prematurity = ectopic_prematurity
        self.bias = bias
        self.bigeminy_ratio = bigeminy_ratio
        self.min_rr_s = min_rr_s
        self.max_rr_s = max_rr_s

    @classmethod
    def from_config(cls, config: DetectorConfig, rate_hz: float) -> AtrialFibrillationDetector:
        reader = ParamReader(config, rate_hz)
        reader.channel_count(exactly=1)
        irregularity = reader.count("irregularity_beats", 8)
        if irregularity < 3:
            raise reader.fail("irregularity_beats", f"expected at least 3, got {irregularity}")
        window = reader.count("window_beats", 16)
        if window < irregularity + 2:
            raise reader.fail("window_beats", f"must exceed irregularity_beats + 1, got {window}")
        # One score per beat by default; `hop_s` (at the stream's nominal beat rate) like other detectors.
        hop = reader.count("hop_beats", 0) or reader.samples("hop_s", 1.0 / reader.rate_hz)
        if not 1 <= hop <= window:
            raise reader.fail("hop_beats", f"expected 1..window_beats ({window}), got {hop}")
        min_rr = reader.positive("min_rr_s", 0.25)
        max_rr = reader.positive("max_rr_s", 2.5)
        if max_rr <= min_rr:
            raise reader.fail("max_rr_s", f"must exceed min_rr_s ({min_rr:g}), got {max_rr:g}")
        detector = cls(
            config.id,
            config.channels,
            window,
            hop,
            threshold=reader.positive("threshold", 0.04),
            irregularity_beats=irregularity,
            ectopic_prematurity=reader.fraction("ectopic_prematurity", 0.12),
            bias=reader.number("bias", 0.0) or 0.0,
            bigeminy_ratio=reader.number("bigeminy_ratio", 0.3) or 0.0,
            min_rr_s=min_rr,
            max_rr_s=max_rr,
        )
        reader.finish()
        return detector

    def irregularity(self, rr: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(score, RR trend) of the newest beat of each row of (S, W) RR intervals in seconds."""
        rr = np.where((rr >= self.min_rr_s) & (rr <= self.max_rr_s), rr, np.nan)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            trend = np.nanmedian(rr, axis=1)
        ratio = rr / trend[:, None]
        # Ectopic pair: premature interval k, compensatory interval k+1, together about two trend RRs.
        p = self.ectopic_prematurity
        short = ratio[:, :-1] < 1.0 - p
        long = ratio[:, 1:] > 1.0 + p
        compensated = np.abs(ratio[:, :-1] + ratio[:, 1:] - 2.0) < 2.0 * p
        pair = short & long & compensated
        ectopic = np.zeros(ratio.shape, dtype=bool)
        ectopic[:, :-1] |= pair
        ectopic[:, 1:] |= pair
        clean = np.where(ectopic, np.nan, ratio)
        median, count = _newest_median(np.abs(np.diff(clean, axis=1)), self.irregularity_beats)
        enough = count >= (self.irregularity_beats + 1) // 2
        # Bigeminal suppression: alternating short-long intervals (ectopy the pair rule missed) have large
        # lag-1 but small lag-2 differences; AF has both about equal.
        lag1, _ = _newest_median(np.abs(ratio[:, 1:] - ratio[:, :-1]), self.irregularity_beats)
        lag2, _ = _newest_median(np.abs(ratio[:, 2:] - ratio[:, :-2]), self.irregularity_beats)
        with np.errstate(invalid="ignore"):
            bigeminal = lag2 < self.bigeminy_ratio * lag1
        enough &= ~bigeminal
        score = median - self.bias * trend / REFERENCE_RR_S
        return np.where(enough, score, np.nan), trend

    def score(self, block: WindowBlock) -> ScoreBlock:
        n = block.n_streams
        rr = block.values[:, -self.window :, 0]
        scores, trend = self.irregularity(rr)
        has = ~np.isnan(scores)
        return ScoreBlock(
            scores=scores,
            thresholds=self._thresholds(n),
            contributions=np.where(has & (scores > self.threshold), 1.0, 0.0)[:, None],
            observed=scores,
            limits=np.where(has, self.threshold, np.nan),
            baseline=trend[:, None],
        )


def _newest_median(diffs: FloatArray, k: int) -> tuple[FloatArray, IntArray]:
    """Median of the newest `k` non-NaN entries of each row, and how many there were."""
    valid = ~np.isnan(diffs)
    from_newest = np.cumsum(valid[:, ::-1], axis=1)[:, ::-1]
    keep = valid & (from_newest <= k)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows with nothing kept: NaN
        median = np.nanmedian(np.where(keep, diffs, np.nan), axis=1)
    count: IntArray = keep.sum(axis=1).astype(np.int64)
    return median, count
