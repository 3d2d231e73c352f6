"""Rate of change: how fast a channel moved over the last hop, against a maximum plausible rate.

The new hop's samples are averaged and compared with the average of the hop before it; |difference| over
the hop's duration is the rate in channel units per second (averaging keeps sample noise from dominating
at high rates; with a hop of one sample it is the plain first difference). Each channel's rate is divided by
its `max_rate`, so the score is dimensionless: 1.0 means "at the limit", and the default threshold is 1.
Calibration replaces that threshold with the quantile of normal data. NaN samples are left out of the
averages; a hop with no valid sample gives no verdict.
"""

from __future__ import annotations

import numpy as np

from agent.config.schema import DetectorConfig
from agent.detectors.base import (
    FloatArray,
    ScoreBlock,
    StreamingDetector,
    WindowBlock,
    max_over_channels,
    pick_rows,
    shares,
)
from agent.detectors.params import ParamReader


class RateOfChangeDetector(StreamingDetector):
    type_name = "rate_of_change"
    lowest_score = 0.0
    quantity = "rate"

    def __init__(
        self,
        id: str,
        channels: tuple[str, ...],
        hop: int,
        threshold: float,
        max_rate: tuple[float, ...],
        rate_hz: float,
    ) -> None:
        super().__init__(id, channels, 2 * hop, hop, threshold)
        self.max_rate = np.asarray(max_rate, dtype=np.float64)  # channel units per second, per channel
        self.rate_hz = rate_hz

    @classmethod
    def from_config(cls, config: DetectorConfig, rate_hz: float) -> RateOfChangeDetector:
        reader = ParamReader(config, rate_hz)
        reader.channel_count()
        max_rate = reader.per_channel("max_rate", None)
        if max_rate is None:
            raise reader.fail("max_rate", "expected the largest plausible change per second, got nothing")
        detector = cls(
            config.id,
            config.channels,
            hop=reader.samples("hop_s", 1.0),
            threshold=reader.positive("threshold", 1.0),
            max_rate=max_rate,
            rate_hz=reader.rate_hz,
        )
        reader.finish()
        return detector

    def score_hop(self, block: WindowBlock) -> ScoreBlock:
        n, width, _ = block.values.shape
        hop = min(block.hop, width // 2)
        now = _mean(block.values[:, -hop:, :])
        before = _mean(block.values[:, -2 * hop : -hop, :])
        rate = np.abs(now - before) * self.rate_hz / hop  # (S, C) units per second
        per_channel = rate / self.max_rate
        scores, top = max_over_channels(per_channel)
        has = ~np.isnan(scores)
        return ScoreBlock(
            scores=scores,
            thresholds=self._thresholds(n),
            contributions=shares(per_channel),
            observed=np.where(has, pick_rows(rate, top), np.nan),
            limits=np.where(has, self.threshold * self.max_rate[top], np.nan),
            baseline=before,
        )


def _mean(samples: FloatArray) -> FloatArray:
    """Mean over axis 1 ignoring NaN, NaN where nothing is valid (no warning)."""
    valid = ~np.isnan(samples)
    count = valid.sum(axis=1)
    total = np.where(valid, samples, 0.0).sum(axis=1)
    out: FloatArray = np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)
    return out
