"""EWMA control chart on robust residuals, with the smoothed level kept per stream slot.

Each new sample is standardised against the rolling robust baseline of the older part of the window
(median, floored MAD scale), then folded into z <- (1 - alpha) * z + alpha * e per (slot, channel). The
score is |z| in units of the chart's asymptotic standard deviation sqrt(alpha / (2 - alpha)), maximised
over the hop and channels, so the default threshold 3 is the classic 3-sigma EWMA chart. Averaging makes
it sensitive to small sustained shifts that a single-sample z misses. NaN samples leave z unchanged.
The value shown is the smoothed level (median + z * scale) against the level at which the chart signals.
"""

from __future__ import annotations

import math

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
from agent.detectors.robust import standardized_hop


class EwmaDetector(StreamingDetector):
    type_name = "ewma"
    lowest_score = 0.0
    quantity = "smoothed level"

    def __init__(
        self,
        id: str,
        channels: tuple[str, ...],
        window: int,
        hop: int,
        threshold: float,
        alpha: float,
        min_valid: float,
        min_scale: float,
    ) -> None:
        super().__init__(id, channels, window, hop, threshold)
        self.alpha = alpha
        self.min_valid = min_valid
        self.min_scale = min_scale
        self.sigma = math.sqrt(alpha / (2.0 - alpha))  # asymptotic sd of z for unit-variance residuals

    @classmethod
    def from_config(cls, config: DetectorConfig, rate_hz: float) -> EwmaDetector:
        reader = ParamReader(config, rate_hz)
        reader.channel_count()
        window, hop = reader.window_and_hop(60.0, 1.0, min_window=4)
        alpha = reader.fraction("alpha", 0.2)
        if alpha >= 1.0:
            raise reader.fail("alpha", "expected a smoothing weight below 1, got 1")
        detector = cls(
            config.id,
            config.channels,
            window,
            hop,
            threshold=reader.positive("threshold", 3.0),
            alpha=alpha,
            min_valid=reader.fraction("min_valid", 0.5),
            min_scale=reader.positive("min_scale", 1e-3),
        )
        reader.finish()
        return detector

    def score_hop(self, block: WindowBlock) -> ScoreBlock:
        n = block.n_streams
        residuals, base = standardized_hop(block.values, block.hop, self.min_valid, self.min_scale)
        z = self._slot_state("z", block.slots, 0.0)
        peak = np.full(z.shape, -np.inf)
        level = z.copy()  # z at each channel's peak
        for i in range(residuals.shape[1]):  # sequential in time, vectorised over streams and channels
            e = residuals[:, i, :]
            ok = ~np.isnan(e)
            z = np.where(ok, (1.0 - self.alpha) * z + self.alpha * np.where(ok, e, 0.0), z)
            stat = np.where(ok, np.abs(z) / self.sigma, -np.inf)
            higher = stat > peak
            level = np.where(higher, z, level)
            peak = np.maximum(peak, stat)
        self._store("z", block.slots, z)
        per_channel = np.where(np.isfinite(peak), peak, np.nan)
        scores, top = max_over_channels(per_channel)
        median, scale = pick_rows(base.median, top), pick_rows(base.scale, top)
        z_top = pick_rows(level, top)
        observed = median + z_top * scale
        limits = median + np.sign(z_top) * self.threshold * self.sigma * scale
        has = ~np.isnan(scores)
        return ScoreBlock(
            scores=scores,
            thresholds=self._thresholds(n),
            contributions=shares(per_channel),
            observed=np.where(has, observed, np.nan),
            limits=np.where(has, limits, np.nan),
            baseline=base.median,
        )
