"""Robust z-score of the newest samples against the rolling baseline of the rest of the window.

The window's older part (all but the newest `hop` samples) gives a per-channel median and MAD scale
(`agent.detectors.robust`); each new sample's |x - median| / scale is its robust z. The score is the
largest |z| over the hop and over channels, and each channel's share of the summed per-channel maxima is
its contribution. The baseline excludes the samples being judged, so a step change scores fully on the
hop it arrives and fades only once it fills the baseline half of the window.
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
from agent.detectors.robust import robust_baseline


class RobustZDetector(StreamingDetector):
    type_name = "robust_z"
    lowest_score = 0.0

    def __init__(
        self,
        id: str,
        channels: tuple[str, ...],
        window: int,
        hop: int,
        threshold: float,
        min_valid: float,
        min_scale: float,
    ) -> None:
        super().__init__(id, channels, window, hop, threshold)
        self.min_valid = min_valid  # fraction of the baseline that must be valid to score
        self.min_scale = min_scale  # absolute floor of the scale, in channel units

    @classmethod
    def from_config(cls, config: DetectorConfig, rate_hz: float) -> RobustZDetector:
        reader = ParamReader(config, rate_hz)
        reader.channel_count()
        window, hop = reader.window_and_hop(60.0, 1.0, min_window=4)
        if window - hop < 3:
            raise reader.fail("window_s", f"leaves {window - hop} baseline samples after the hop; need 3")
        detector = cls(
            config.id,
            config.channels,
            window,
            hop,
            threshold=reader.positive("threshold", 6.0),
            min_valid=reader.fraction("min_valid", 0.5),
            min_scale=reader.positive("min_scale", 1e-3),
        )
        reader.finish()
        return detector

    def score_hop(self, block: WindowBlock) -> ScoreBlock:
        n, width, _ = block.values.shape
        hop = min(block.hop, width - 1)
        base = robust_baseline(block.values[:, :-hop, :], self.min_valid, self.min_scale)
        new = block.values[:, -hop:, :]
        z = (new - base.median[:, None, :]) / base.scale[:, None, :]  # signed, (S, hop, C)
        absz = np.abs(z)
        valid = ~np.isnan(absz)
        per_channel = np.where(valid.any(axis=1), np.max(np.where(valid, absz, -np.inf), axis=1), np.nan)
        scores, top = max_over_channels(per_channel)
        has = ~np.isnan(scores)
        # The value shown is the new sample of the top channel that scored highest, against the z limit.
        at = np.argmax(np.where(valid, absz, -np.inf)[np.arange(n), :, top], axis=1)
        observed = np.where(has, new[np.arange(n), at, top], np.nan)
        median = pick_rows(base.median, top)
        sign = np.where(observed >= median, 1.0, -1.0)
        limits = median + sign * self.threshold * pick_rows(base.scale, top)
        return ScoreBlock(
            scores=scores,
            thresholds=self._thresholds(n),
            contributions=shares(per_channel),
            observed=observed,
            limits=np.where(has, limits, np.nan),
            baseline=base.median,
        )
