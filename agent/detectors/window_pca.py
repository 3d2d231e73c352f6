"""Window PCA: each stream's own linear model of its normal windows, fitted on its first rows.

The gateway form of the PCA/Q (squared prediction error) statistic that is strong on SKAB. Each stream
keeps its first `adapt_rows` samples; once complete it gets its own per-channel mean/scale (the scale never
below `min_scale`, so a channel that was flat while adapting cannot blow up; a glitch row left out, see
`agent.detectors.adaptation.learning_rows`) and the principal subspace of
its standardised windows of `window` rows (W x C values flattened), keeping `components_fraction` of the
W*C directions. A window's score is its squared distance from that subspace: the part of the window the
stream's normal cross-channel and short-time correlations cannot explain. Scores are smoothed causally
(mean of the last `smooth_rows`), and each stream's threshold is `threshold_margin` times the
`threshold_quantile` of its smoothed scores over its own adaptation rows (smoothing counts scored
windows, one per hop). A linear autoencoder in effect,
but fitted per stream, so it needs no shipped model. Everything depends on past data only; numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from agent.config.schema import DetectorConfig
from agent.detectors.adaptation import (
    adaptation_quantile,
    clean_windows,
    collect_rows,
    counted,
    learning_rows,
)
from agent.detectors.base import FloatArray, IntArray, ScoreBlock, StreamingDetector, WindowBlock, shares
from agent.detectors.params import ParamReader
from agent.errors import ConfigError


class WindowPcaDetector(StreamingDetector):
    type_name = "window_pca"
    lowest_score = 0.0

    def __init__(
        self,
        id: str,
        channels: tuple[str, ...],
        window: int,
        *,
        hop: int = 1,
        adapt_rows: int = 400,
        components_fraction: float = 0.5,
        smooth_rows: int = 20,
        threshold_quantile: float = 0.95,
        threshold_margin: float = 2.5,
        min_scale: Sequence[float] | FloatArray | float = 1e-6,
    ) -> None:
        super().__init__(id, channels, window, hop, np.inf)
        dims = window * len(channels)
        self.components = round(components_fraction * dims)
        if not 1 <= self.components < dims:
            raise ConfigError(
                f"detectors.{id}.params.components_fraction",
                f"keeps {self.components} of {dims} directions; must keep at least 1 and leave at least 1",
            )
        if adapt_rows - window + 1 < max(dims, smooth_rows + 20):
            raise ConfigError(
                f"detectors.{id}.params.adapt_rows",
                f"{adapt_rows} rows give {adapt_rows - window + 1} windows: too few to fit {dims} dimensions"
                f" and set a threshold over scores smoothed by {smooth_rows}",
            )
        self.adapt_rows = adapt_rows
        self.components_fraction = components_fraction
        self.smooth_rows = max(1, smooth_rows)
        self.quantile = threshold_quantile
        self.margin = threshold_margin
        self.min_scale = np.broadcast_to(np.asarray(min_scale, np.float64), (len(channels),)).copy()
        self.reset_streams()

    @classmethod
    def from_config(cls, config: DetectorConfig, rate_hz: float) -> WindowPcaDetector:
        reader = ParamReader(config, rate_hz)
        reader.channel_count()
        window, hop = reader.window_and_hop(6.0 / rate_hz, 1.0 / rate_hz, min_window=2)
        floors = reader.per_channel("min_scale", None)
        detector = cls(
            config.id,
            config.channels,
            window,
            hop=hop,
            adapt_rows=reader.count("adapt_rows", 400),
            components_fraction=reader.fraction("components_fraction", 0.5),
            smooth_rows=max(1, reader.count("smooth_rows", 20)),
            threshold_quantile=reader.fraction("threshold_quantile", 0.95),
            threshold_margin=reader.positive("threshold_margin", 2.5),
            min_scale=floors if floors is not None else 1e-6,
        )
        reader.finish()
        return detector

    def calibration_refusal(self) -> str:
        return "window_pca sets each stream's threshold from that stream's own first adapt_rows samples"

    # -- per-stream state --------------------------------------------------------------------------------

    def reset_streams(self) -> None:
        c, d = len(self.channels), self.window * len(self.channels)
        self._seen = np.zeros(0, np.int64)
        self._rows = np.zeros((0, self.adapt_rows, c))
        self._mean = np.zeros((0, c))
        self._scale = np.ones((0, c))
        self._basis = np.zeros((0, d, self.components))
        self._thr = np.zeros(0)
        self._recent = np.full((0, self.smooth_rows), np.nan)

    def _grow(self, n_slots: int) -> None:
        extra = n_slots - self._seen.shape[0]
        if extra <= 0:
            return
        c, d = len(self.channels), self.window * len(self.channels)
        self._seen = np.concatenate([self._seen, np.zeros(extra, np.int64)])
        self._rows = np.concatenate([self._rows, np.zeros((extra, self.adapt_rows, c))])
        self._mean = np.concatenate([self._mean, np.zeros((extra, c))])
        self._scale = np.concatenate([self._scale, np.ones((extra, c))])
        self._basis = np.concatenate([self._basis, np.zeros((extra, d, self.components))])
        self._thr = np.concatenate([self._thr, np.full(extra, np.nan)])
        self._recent = np.concatenate([self._recent, np.full((extra, self.smooth_rows), np.nan)])

    def stream_state(self) -> dict[str, Any]:
        ready = np.flatnonzero(self._seen >= self.adapt_rows)
        return {
            str(int(s)): {
                "mean": self._mean[s].tolist(),
                "scale": self._scale[s].tolist(),
                "basis": self._basis[s].tolist(),
                "threshold": float(self._thr[s]),
            }
            for s in ready
        }

    def load_stream_state(self, state: Mapping[str, Any]) -> None:
        self.reset_streams()
        d = self.window * len(self.channels)
        for slot_text, entry in state.items():
            slot = int(slot_text)
            basis = np.asarray(entry["basis"], np.float64)
            if basis.shape != (d, self.components):
                raise ConfigError(
                    f"state.detectors.{self.id}.streams.{slot_text}.basis",
                    f"expected shape {(d, self.components)}, got {basis.shape}",
                )
            self._grow(slot + 1)
            self._mean[slot] = entry["mean"]
            self._scale[slot] = entry["scale"]
            self._basis[slot] = basis
            self._thr[slot] = float(entry["threshold"])
            self._seen[slot] = self.adapt_rows

    def learning(self, slots: IntArray) -> tuple[IntArray, int]:
        """Rows collected towards each slot's adaptation (`adapt_rows`): no verdict before."""
        return counted(self._seen, slots), self.adapt_rows

    # -- scoring -----------------------------------------------------------------------------------------

    def _residuals(self, windows: FloatArray, slots: np.ndarray[Any, Any]) -> FloatArray:
        """(B, W, C) raw windows -> (B, W, C) standardised residuals off each slot's normal subspace."""
        z = (windows - self._mean[slots, None, :]) / self._scale[slots, None, :]
        return pca_residual(z, self._basis[slots])

    def _fit(self, slot: int) -> None:
        rows = self._rows[slot]
        self._mean[slot], self._scale[slot], self._basis[slot] = fit_window_pca(
            rows, self.window, self.components, self.min_scale
        )
        windows = sliding_window_view(rows, self.window, axis=0).transpose(0, 2, 1)
        with np.errstate(over="ignore"):  # a glitch of 1e300 squares to inf: its window is left out below
            scores = (self._residuals(windows, np.full(len(windows), slot)) ** 2).sum(axis=(1, 2))
        # Windows holding a row left out of learning (a glitch) set no threshold.
        clean = clean_windows(learning_rows(rows, self.min_scale), self.window)
        scores = np.where(clean, scores, np.nan)
        self._thr[slot] = self.margin * adaptation_quantile(scores, self.smooth_rows, self.quantile)
        # The smoothing carries on from the adaptation rows' own scores: they are past data too (a
        # left-out window's score as the clean ones' median, or the first live hops get no verdict).
        recent = scores[-self.smooth_rows :]
        fill = np.nanmedian(scores) if clean.any() else 0.0
        self._recent[slot] = np.where(np.isnan(recent), fill, recent)

    def _adapt(self, block: WindowBlock) -> None:
        for slot in collect_rows(block, self._rows, self._seen, self.adapt_rows):
            self._fit(slot)

    def score_hop(self, block: WindowBlock) -> ScoreBlock:
        n, c = block.n_streams, len(self.channels)
        self._grow(int(block.slots.max()) + 1 if n else 0)
        was_ready = self._seen[block.slots] >= self.adapt_rows
        self._adapt(block)
        # A row used for adaptation gets no verdict: it is part of the stream's definition of normal.
        windows = block.values[:, -self.window :]  # a hop plus a remainder: the newest window
        ready = was_ready & ~np.isnan(windows).any(axis=(1, 2))
        raw = np.full(n, np.nan)
        contributions = np.zeros((n, c))
        rows = np.flatnonzero(ready)
        if rows.size:
            err = self._residuals(windows[rows], block.slots[rows]) ** 2
            contributions[rows] = err.sum(axis=1)
            raw[rows] = contributions[rows].sum(axis=1)
        recent = np.concatenate([self._recent[block.slots][:, 1:], raw[:, None]], axis=1)
        self._recent[block.slots] = np.where(was_ready[:, None], recent, self._recent[block.slots])
        with np.errstate(invalid="ignore"):
            smoothed = recent.mean(axis=1)  # NaN while any of the last k windows had no verdict
        return ScoreBlock(
            scores=np.where(ready, smoothed, np.nan),
            thresholds=np.where(np.isnan(self._thr[block.slots]), self.threshold, self._thr[block.slots]),
            contributions=shares(contributions),
            observed=np.full(n, np.nan),
            limits=np.full(n, np.nan),
            baseline=np.where(was_ready[:, None], self._mean[block.slots], np.nan),
        )


def pca_residual(z: FloatArray, basis: FloatArray) -> FloatArray:
    """Standardised (B, W, C) windows minus their projection on each one's (B, W*C, K) subspace, whose
    directions are flattened time-major as `fit_window_pca` returns them."""
    flat = z.reshape(len(z), -1)
    coef = np.einsum("bd,bdk->bk", flat, basis)
    residual: FloatArray = flat - np.einsum("bk,bdk->bd", coef, basis)
    return residual.reshape(z.shape)


def fit_window_pca(
    rows: FloatArray, window: int, components: int, min_scale: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(mean, scale, basis) of one stream's adaptation rows (T, C): basis is (W*C, components), the
    leading principal directions of its standardised windows, each flattened time-major. Learnt from the
    rows `learning_rows` keeps and the windows made of them only (a glitch sample must not set them)."""
    kept = learning_rows(rows, min_scale)
    mean = rows[kept].mean(axis=0)
    scale = np.maximum(rows[kept].std(axis=0), min_scale)
    z = (rows - mean) / scale
    flat = sliding_window_view(z, window, axis=0).transpose(0, 2, 1).reshape(-1, window * rows.shape[1])
    flat = flat[clean_windows(kept, window)]
    _, vectors = np.linalg.eigh(np.cov(flat.T))  # ascending eigenvalues
    return mean, scale, np.ascontiguousarray(vectors[:, ::-1][:, :components])
