"""Dropout: too much of the window is missing (NaN: not received, or removed by the quality gate).

The score is the largest per-channel fraction of missing samples in the window, in [0, 1]; the default
threshold `max_missing` is 0.5. It is a technical detector: it says the monitoring is blind, and never
returns NaN. Calibration only ever raises the threshold (less sensitive), to the normal recording's own
missing-data level when that is higher, so a link that routinely drops a few samples does not alarm.
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


class DropoutDetector(StreamingDetector):
    type_name = "dropout"
    lowest_score = 0.0
    quantity = "missing fraction"

    @classmethod
    def from_config(cls, config: DetectorConfig, rate_hz: float) -> DropoutDetector:
        reader = ParamReader(config, rate_hz)
        reader.channel_count()
        window, hop = reader.window_and_hop(30.0, 1.0)
        max_missing = reader.fraction("max_missing", 0.5)
        if max_missing >= 1.0:
            raise reader.fail("max_missing", "expected a fraction below 1 (nothing exceeds 1), got 1")
        reader.finish()
        return cls(config.id, config.channels, window, hop, threshold=max_missing)

    def score_hop(self, block: WindowBlock) -> ScoreBlock:
        n = block.n_streams
        missing = np.isnan(block.values).mean(axis=1)  # (S, C)
        scores, top = max_over_channels(missing)
        return ScoreBlock(
            scores=scores,
            thresholds=self._thresholds(n),
            contributions=shares(missing),
            observed=pick_rows(missing, top),
            limits=self._thresholds(n),
            baseline=np.full(missing.shape, np.nan),
        )

    def _calibrated(self, learned: float) -> float:
        return max(self.threshold, learned)
