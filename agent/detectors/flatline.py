"""Flatline: a stuck sensor whose readings stop moving (frozen value, saturated ADC, dead electrode).

Per channel, the range (max - min) of the valid samples in the window is compared with `epsilon`, the
smallest movement a live sensor shows. The score is epsilon / range (capped at 1e6 for an exactly
constant signal), so it passes the default threshold 1 when the range falls below epsilon; the largest
channel score wins. Windows with fewer than `min_valid` valid samples give no verdict (that is dropout's
job). Calibration only ever raises the threshold (less sensitive): a normal recording that is legitimately
flat for a while (SpO2 pinned at 100 %) teaches the detector to tolerate it, while a lively one cannot
make a range above epsilon count as stuck.
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

MAX_FLATNESS = 1e6


class FlatlineDetector(StreamingDetector):
    type_name = "flatline"
    lowest_score = 0.0
    quantity = "range"

    def __init__(
        self,
        id: str,
        channels: tuple[str, ...],
        window: int,
        hop: int,
        threshold: float,
        epsilon: tuple[float, ...],
        min_valid: float,
    ) -> None:
        super().__init__(id, channels, window, hop, threshold)
        self.epsilon = np.asarray(epsilon, dtype=np.float64)
        self.min_valid = min_valid

    @classmethod
    def from_config(cls, config: DetectorConfig, rate_hz: float) -> FlatlineDetector:
        reader = ParamReader(config, rate_hz)
        reader.channel_count()
        window, hop = reader.window_and_hop(30.0, 1.0, min_window=3)
        epsilon = reader.per_channel("epsilon", 1e-6)
        assert epsilon is not None  # has a default
        detector = cls(
            config.id,
            config.channels,
            window,
            hop,
            threshold=reader.positive("threshold", 1.0),
            epsilon=epsilon,
            min_valid=reader.fraction("min_valid", 0.5),
        )
        reader.finish()
        return detector

    def score_hop(self, block: WindowBlock) -> ScoreBlock:
        n, width, _ = block.values.shape
        values = block.values
        valid = ~np.isnan(values)
        count = valid.sum(axis=1)
        high = np.where(valid, values, -np.inf).max(axis=1)
        low = np.where(valid, values, np.inf).min(axis=1)
        high, low = np.where(count > 0, high, np.nan), np.where(count > 0, low, np.nan)
        spread = high - low  # (S, C); NaN where no sample is valid
        enough = count >= max(2.0, self.min_valid * width)
        flatness = self.epsilon / np.maximum(np.where(enough, spread, 1.0), self.epsilon / MAX_FLATNESS)
        per_channel = np.where(enough, flatness, np.nan)
        scores, top = max_over_channels(per_channel)
        has = ~np.isnan(scores)
        return ScoreBlock(
            scores=scores,
            thresholds=self._thresholds(n),
            contributions=shares(per_channel),
            observed=np.where(has, pick_rows(np.where(enough, spread, np.nan), top), np.nan),
            limits=np.where(has, self.epsilon[top] / self.threshold, np.nan),  # flat below this range
            baseline=np.where(enough, (high + low) / 2.0, np.nan),
        )

    def _calibrated(self, learned: float) -> float:
        return max(self.threshold, learned)
