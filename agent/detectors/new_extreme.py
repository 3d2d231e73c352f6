"""New extreme: a value outside the whole range the stream has shown so far.

Numenta's NAB detector adds this "spatial anomaly" rule beside its HTM scores (Ahmad et al. 2017): a
reading beyond the lowest and highest values ever seen is suspicious whatever the recent noise was. Per
(slot, channel) the running minimum and maximum of every valid sample seen so far are kept as state. Each
new sample's excursion beyond them is measured in units of that range:

    score = max(x - max_seen, min_seen - x) / (max_seen - min_seen)

so a sample inside the range scores between -0.5 and 0, one at a new record scores >= 0, and the default
threshold 0.01 alarms on a new record that clears the old one by 1 % of the range. Then the range grows to
include it, so a level that stays up stops scoring at once (one alarm per new record, not per sample).
The range is floored (`min_scale`, and 1 % of the largest magnitude seen) so a signal that was flat until
now does not divide by ~0. No verdict until `warmup_s` of valid samples have shaped the range.

There is nothing to calibrate: the threshold is a fraction of the stream's own range and the warm-up is
its baseline period. The range never forgets: after a restart it comes back from `state()`, and resetting
it (a sensor replaced, a new patient) is done by dropping the stream's state.
"""

from __future__ import annotations

import numpy as np

from agent.config.schema import DetectorConfig
from agent.detectors.base import (
    ScoreBlock,
    StreamingDetector,
    WindowBlock,
    max_over_channels,
    pick_rows,
    shares,
)
from agent.detectors.params import ParamReader

RELATIVE_FLOOR = 0.01  # the range is at least 1 % of the largest magnitude seen


class NewExtremeDetector(StreamingDetector):
    type_name = "new_extreme"
    quantity = ""  # observed is the value itself, against the old record plus the tolerance

    def __init__(
        self,
        id: str,
        channels: tuple[str, ...],
        hop: int,
        threshold: float,
        warmup: int,
        min_scale: float,
    ) -> None:
        super().__init__(id, channels, hop, hop, threshold)
        self.warmup = warmup  # valid samples seen before the first verdict
        self.min_scale = min_scale  # absolute floor of the range, in channel units

    @classmethod
    def from_config(cls, config: DetectorConfig, rate_hz: float) -> NewExtremeDetector:
        reader = ParamReader(config, rate_hz)
        reader.channel_count()
        hop = reader.samples("hop_s", 1.0)
        threshold = reader.number("threshold", 0.01)
        assert threshold is not None  # has a default
        if threshold < 0:
            raise reader.fail("threshold", f"expected a fraction of the range >= 0, got {threshold:g}")
        detector = cls(
            config.id,
            config.channels,
            hop,
            threshold=threshold,
            warmup=reader.samples("warmup_s", 300.0),
            min_scale=reader.positive("min_scale", 1e-3),
        )
        reader.finish()
        return detector

    def calibrate(self, normal: WindowBlock, target_false_alarms_per_hour: float, hop_seconds: float) -> None:
        """The threshold is a fraction of the stream's own range: nothing to learn from a recording."""

    def calibration_refusal(self) -> str:
        return "its threshold is a fraction of each stream's own range, and its warm-up is the baseline"

    def score(self, block: WindowBlock) -> ScoreBlock:
        n = block.n_streams
        new = block.values[:, -min(block.hop, block.values.shape[1]) :, :]  # (S, hop, C)
        low = self._slot_state("low", block.slots, np.nan)  # NaN until a sample: survives JSON
        high = self._slot_state("high", block.slots, np.nan)
        seen = self._slot_state("seen", block.slots, 0.0)
        peak = np.full(low.shape, -np.inf)
        at_peak = np.full(low.shape, np.nan)  # the sample that scored highest
        bound = np.full(low.shape, np.nan)  # the old record it was measured against
        limit = np.full(low.shape, np.nan)
        for i in range(new.shape[1]):  # sequential in time, vectorised over streams and channels
            x = new[:, i, :]
            ok = ~np.isnan(x)
            ready = ok & (seen >= self.warmup)
            with np.errstate(invalid="ignore"):  # NaN before the first sample, masked below
                floor = np.maximum(self.min_scale, RELATIVE_FLOOR * np.maximum(np.abs(low), np.abs(high)))
                span = np.maximum(high - low, floor)
                up, down = (x - high) / span, (low - x) / span
            stat = np.where(ready, np.maximum(up, down), -np.inf)
            higher = stat > peak
            upward = up >= down
            at_peak = np.where(higher, x, at_peak)
            bound = np.where(higher, np.where(upward, high, low), bound)
            tolerance = self.threshold * span
            limit = np.where(higher, np.where(upward, high + tolerance, low - tolerance), limit)
            peak = np.maximum(peak, stat)
            low = np.where(ok, np.fmin(low, x), low)
            high = np.where(ok, np.fmax(high, x), high)
            seen = seen + ok
        self._store("low", block.slots, low)
        self._store("high", block.slots, high)
        self._store("seen", block.slots, seen)
        per_channel = np.where(np.isfinite(peak), peak, np.nan)
        scores, top = max_over_channels(per_channel)
        has = ~np.isnan(scores)
        return ScoreBlock(
            scores=scores,
            thresholds=self._thresholds(n),
            contributions=shares(per_channel),
            observed=np.where(has, pick_rows(at_peak, top), np.nan),
            limits=np.where(has, pick_rows(limit, top), np.nan),
            baseline=np.where(np.isfinite(bound), bound, np.nan),
        )
