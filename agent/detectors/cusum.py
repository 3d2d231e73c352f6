"""Two-sided CUSUM on robust residuals, per stream slot: detects a sustained shift up or down.

Residuals e are standardised against the rolling robust baseline of the older part of the window (as in
robust_z). Per (slot, channel): up <- max(0, up + e - k), down <- max(0, down - e - k), where the slack
k (default 0.5) is half the shift, in robust sigmas, the chart is tuned to. The score is max(up, down)
over the hop and channels; the default threshold h = 5 is the textbook choice. Both sums are capped at
twice the threshold so that after a long excursion the chart returns below the threshold within about
h / k samples of the data going back to normal, instead of remembering the excursion for hours; since the
rolling baseline eventually absorbs a persistent level change, the chart then re-arms itself without reset.
NaN samples leave the sums unchanged.
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
    newest_valid,
    shares,
)
from agent.detectors.params import ParamReader
from agent.detectors.robust import standardized_hop

CAP_FACTOR = 2.0  # the sums saturate at this multiple of the threshold


class CusumDetector(StreamingDetector):
    type_name = "cusum"
    lowest_score = 0.0

    def __init__(
        self,
        id: str,
        channels: tuple[str, ...],
        window: int,
        hop: int,
        threshold: float,
        slack: float,
        min_valid: float,
        min_scale: float,
    ) -> None:
        super().__init__(id, channels, window, hop, threshold)
        self.slack = slack
        self.min_valid = min_valid
        self.min_scale = min_scale

    @classmethod
    def from_config(cls, config: DetectorConfig, rate_hz: float) -> CusumDetector:
        reader = ParamReader(config, rate_hz)
        reader.channel_count()
        window, hop = reader.window_and_hop(60.0, 1.0, min_window=4)
        detector = cls(
            config.id,
            config.channels,
            window,
            hop,
            threshold=reader.positive("threshold", 5.0),
            slack=reader.positive("k", 0.5),
            min_valid=reader.fraction("min_valid", 0.5),
            min_scale=reader.positive("min_scale", 1e-3),
        )
        reader.finish()
        return detector

    def _scratch(self) -> StreamingDetector:
        clone = super()._scratch()
        clone.threshold = math.inf  # calibrate on uncapped sums: the learned threshold may exceed today's cap
        return clone

    def score_hop(self, block: WindowBlock) -> ScoreBlock:
        n = block.n_streams
        residuals, base = standardized_hop(block.values, block.hop, self.min_valid, self.min_scale)
        up = self._slot_state("up", block.slots, 0.0)
        down = self._slot_state("down", block.slots, 0.0)
        cap = CAP_FACTOR * self.threshold
        peak = np.full(up.shape, -np.inf)
        for i in range(residuals.shape[1]):  # sequential in time, vectorised over streams and channels
            e = residuals[:, i, :]
            ok = ~np.isnan(e)
            e0 = np.where(ok, e, 0.0)
            up = np.where(ok, np.clip(up + e0 - self.slack, 0.0, cap), up)
            down = np.where(ok, np.clip(down - e0 - self.slack, 0.0, cap), down)
            peak = np.maximum(peak, np.where(ok, np.maximum(up, down), -np.inf))
        self._store("up", block.slots, up)
        self._store("down", block.slots, down)
        per_channel = np.where(np.isfinite(peak), peak, np.nan)
        scores, top = max_over_channels(per_channel)
        newest = newest_valid(block.values[:, -min(block.hop, block.values.shape[1]) :, :])
        observed = np.take_along_axis(newest, top[:, None], axis=1)[:, 0]
        return ScoreBlock(
            scores=scores,
            thresholds=self._thresholds(n),
            contributions=shares(per_channel),
            observed=np.where(np.isnan(scores), np.nan, observed),
            limits=np.full(n, np.nan),  # a CUSUM has no limit in the channel's unit
            baseline=base.median,
        )
