"""Fixed physiological or engineering limits on one channel (e.g. HR above 120 bpm or below 40 bpm).

The score is the signed distance past the nearest limit, maximised over the samples that are new in this
hop: positive once any new sample is beyond a limit (by how much, in the channel's unit), negative while
inside (how much room is left). Keeping the negative side lets the alarm machine apply hysteresis as an
absolute margin around threshold 0. NaN samples (missing or quality-gated) never score; a hop with no valid
sample gives NaN (no verdict). Limits are clinical settings, so calibration never moves them.
"""

from __future__ import annotations

import math

import numpy as np

from agent.config.schema import DetectorConfig
from agent.detectors.base import ScoreBlock, StreamingDetector, WindowBlock
from agent.detectors.params import ParamReader


class LimitDetector(StreamingDetector):
    type_name = "limit"
    judges_whole_frames = True  # every new sample is judged; the frame gets its worst

    def __init__(
        self, id: str, channels: tuple[str, ...], window: int, hop: int, above: float, below: float
    ) -> None:
        super().__init__(id, channels, window, hop, threshold=0.0)
        self.above = above  # +inf when there is no upper limit
        self.below = below  # -inf when there is no lower limit

    @classmethod
    def from_config(cls, config: DetectorConfig, rate_hz: float) -> LimitDetector:
        reader = ParamReader(config, rate_hz)
        reader.channel_count(exactly=1)
        above = reader.number("above", None)
        below = reader.number("below", None)
        hop = reader.samples("hop_s", 1.0)
        window = reader.samples("window_s", hop / reader.rate_hz, minimum=hop)
        reader.finish()  # first: a misspelt `above` is named as such, not as a missing limit
        if above is None and below is None:
            raise reader.fail("above", "expected `above` and/or `below` (the limits), got neither")
        if above is not None and below is not None and below >= above:
            raise reader.fail("below", f"must be less than above ({above:g}), got {below:g}")
        return cls(
            config.id,
            config.channels,
            window,
            hop,
            math.inf if above is None else above,
            -math.inf if below is None else below,
        )

    def score_hop(self, block: WindowBlock) -> ScoreBlock:
        n = block.n_streams
        hop = min(block.hop, block.values.shape[1])
        new = block.values[:, -hop:, 0]  # (S, hop)
        over = np.maximum(new - self.above, self.below - new)  # signed distance past the nearer limit
        valid = ~np.isnan(over)
        any_valid = valid.any(axis=1)
        masked = np.where(valid, over, -np.inf)
        worst = np.argmax(masked, axis=1)  # the sample furthest past (or closest to) a limit in this hop
        scores = np.where(any_valid, masked[np.arange(n), worst], np.nan)
        newest = np.where(any_valid, new[np.arange(n), worst], np.nan)
        upper = (newest - self.above) >= (self.below - newest)
        limits = np.where(np.isnan(newest), np.nan, np.where(upper, self.above, self.below))
        limits = np.where(np.isfinite(limits), limits, np.nan)
        contributions = np.where(scores > 0, 1.0, 0.0)[:, None]
        return ScoreBlock(
            scores=scores,
            thresholds=self._thresholds(n),
            contributions=contributions,
            observed=newest,
            limits=limits,
            baseline=np.full((n, 1), np.nan),
        )

    def calibrate(self, normal: WindowBlock, target_false_alarms_per_hour: float, hop_seconds: float) -> None:
        """Clinical limits are settings, not learned: nothing to calibrate (see docs/detectors.md)."""

    def calibration_refusal(self) -> str:
        return "its limits are clinical settings, never learned"
