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
    FloatArray,
    IntArray,
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
    judges_whole_frames = True  # every new sample is judged; the frame gets its worst
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

    def learning(self, slots: IntArray) -> tuple[IntArray, int]:
        """Valid samples seen per slot (its most-fed channel: the stream judges once one is warm)."""
        table = self._slots.get("seen")
        seen = np.zeros(len(slots), np.int64)
        if table is not None:
            known = slots < table.shape[0]
            seen[known] = np.nanmax(table[slots[known]], axis=1, initial=0.0).astype(np.int64)
        return np.minimum(seen, self.warmup), self.warmup  # it counts on after the warm-up

    def score_hop(self, block: WindowBlock) -> ScoreBlock:
        n = block.n_streams
        new = block.values[:, -min(block.hop, block.values.shape[1]) :, :]  # (S, hop, C)
        low = self._slot_state("low", block.slots, np.nan)  # NaN until a sample: survives JSON
        high = self._slot_state("high", block.slots, np.nan)
        seen = self._slot_state("seen", block.slots, 0.0)
        # The record before each new sample: the stored range extended by the samples before it
        # (fmin/fmax skip NaN), so the hop is scored at once rather than sample by sample.
        ok = ~np.isnan(new)
        run_low = np.fmin.accumulate(np.concatenate([low[:, None], new], axis=1), axis=1)
        run_high = np.fmax.accumulate(np.concatenate([high[:, None], new], axis=1), axis=1)
        before_low, before_high = run_low[:, :-1], run_high[:, :-1]
        ready = ok & (seen[:, None] + np.cumsum(ok, axis=1) - ok >= self.warmup)
        with np.errstate(invalid="ignore"):  # NaN before the first sample, masked by `ready`
            floor = np.maximum(
                self.min_scale, RELATIVE_FLOOR * np.maximum(np.abs(before_low), np.abs(before_high))
            )
            span = np.maximum(before_high - before_low, floor)
            up, down = (new - before_high) / span, (before_low - new) / span
        stat = np.where(ready, np.maximum(up, down), -np.inf)  # (S, hop, C)
        first_max = np.argmax(stat, axis=1)[:, None]  # the earliest sample with the highest score

        def at_max(values: FloatArray) -> FloatArray:
            return np.take_along_axis(values, first_max, axis=1)[:, 0]

        peak = at_max(stat)
        scored = np.isfinite(peak)
        upward = at_max(up) >= at_max(down)
        tolerance = self.threshold * at_max(span)
        at_peak = np.where(scored, at_max(new), np.nan)  # the sample that scored highest
        record_high, record_low = at_max(before_high), at_max(before_low)
        bound = np.where(scored, np.where(upward, record_high, record_low), np.nan)  # the old record
        limit = np.where(scored, np.where(upward, record_high + tolerance, record_low - tolerance), np.nan)
        low, high = run_low[:, -1], run_high[:, -1]
        seen = seen + ok.sum(axis=1)
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
