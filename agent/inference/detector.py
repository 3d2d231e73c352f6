"""AutoencoderDetector: the reconstruction error of a shipped model as a streaming detector.

All streams' complete windows go to the backend in one batch per call (one session run for S streams).
A window with any missing sample gets no verdict (NaN) rather than a score made up from imputed values.

Optional per-stream adaptation (`adapt_rows` > 0), the gateway form of SKAB's "calibrate on each file's
first rows": the first `adapt_rows` samples of each stream are kept; once complete, the stream gets its own
per-channel mean/scale (replacing the card's normalisation) and its own threshold, `threshold_margin` times
the `threshold_quantile` of the model's scores over those rows. Until then the stream has no verdict.
Scores may be smoothed causally per stream (`smooth_rows`: the mean of the last k scores), which suits
slow process faults whose single-window error is noisy; a window without verdict leaves the next k
smoothed scores without verdict too, rather than averaging fewer scores against the same threshold.
Optional per-stream subspace removal (`pca_fraction` > 0, needs adaptation): each stream also fits the
principal subspace of its standardised adaptation windows (as `window_pca` does) and the model sees only
the window's residual off that subspace — the part the stream's own linear structure cannot explain — so
a model trained on such residuals (tools/train/skab_head.py) scores what is left after each stream's own
correlations are taken out. With the model reconstructing nothing, the score is window_pca's Q statistic.
Everything here depends on past data only.

What a window is must match what the model was trained on (its card's `input`, agent.inference.card):
`from_config` refuses a beat model (one R-aligned, resampled heart beat per window) on a stream unless the
config says the stream carries beat windows (`params.input = "beats"`; no source of this agent cuts them
from an ECG), and a stream model whose card states its sample rate on a detector of another `rate_hz`.
Before (audit audml, findings 3 and 4), ecg-beat ran on a raw 360 Hz ECG and alarmed on a normal record
from its first second, and a 1 Hz model ran on a 50 Hz stream.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
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
from agent.detectors.base import (
    FloatArray,
    IntArray,
    ScoreBlock,
    StreamingDetector,
    WindowBlock,
    hop_ends,
    shares,
    worst_index,
)
from agent.detectors.params import ParamReader
from agent.detectors.window_pca import fit_window_pca, pca_residual
from agent.errors import ConfigError
from agent.inference.backend import BackendName, LoadedModel, Precision
from agent.inference.card import INPUT_KINDS, ModelCard
from agent.inference.managed import load_managed
from agent.rates import rates_agree

# float64 values of reconstruction error per block (256 KB): one block stays in a core's cache
ERROR_BLOCK_VALUES = 32_768


class AutoencoderDetector(StreamingDetector):
    type_name = "autoencoder"
    lowest_score = 0.0

    def __init__(
        self,
        id: str,
        model: LoadedModel,
        *,
        hop: int | None = None,
        threshold: float | None = None,
        adapt_rows: int = 0,
        threshold_quantile: float = 0.99,
        threshold_margin: float = 1.0,
        smooth_rows: int = 1,
        min_scale_fraction: float = 0.1,
        pca_fraction: float | None = None,
    ) -> None:
        card = model.card
        super().__init__(id, card.channels, card.window, hop or card.hop, threshold or card.threshold)
        if adapt_rows and adapt_rows < card.window + 1:
            raise ConfigError(f"detectors.{id}.params.adapt_rows", f"must exceed the window ({card.window})")
        self.model = model
        self.adapt_rows = adapt_rows
        self.quantile = threshold_quantile
        self.margin = threshold_margin
        self.smooth_rows = max(1, smooth_rows)
        if adapt_rows and adapt_rows - card.window + 1 < self.smooth_rows + 20:
            raise ConfigError(
                f"detectors.{id}.params.adapt_rows",
                f"{adapt_rows} rows give {adapt_rows - card.window + 1} windows: too few to set a threshold"
                f" over scores smoothed by {self.smooth_rows} (need smooth_rows + 20)",
            )
        # An adapted scale never drops below this share of the card's: a channel that happened to be flat
        # during adaptation (quantised accelerometer RMS) must not turn its noise into huge z-values.
        self.min_scale_fraction = min_scale_fraction
        dims = card.window * len(card.channels)
        if pca_fraction is None:
            pca_fraction = card.pca_fraction
        elif pca_fraction != card.pca_fraction:  # the model would score inputs unlike any it was trained on
            raise ConfigError(
                f"detectors.{id}.params.pca_fraction",
                f"model {card.name} was trained on windows with pca_fraction {card.pca_fraction:g}"
                f" (its card's preprocessing), got {pca_fraction:g}; leave the key out to use the card's",
            )
        self.pca_fraction = pca_fraction
        self.components = round(pca_fraction * dims)
        if pca_fraction and not (adapt_rows and 1 <= self.components < dims):
            raise ConfigError(
                f"detectors.{id}.params.pca_fraction",
                f"keeps {self.components} of {dims} directions; needs adapt_rows > 0, at least 1 kept"
                " and at least 1 left",
            )
        if self.components and adapt_rows - card.window + 1 < dims:
            raise ConfigError(
                f"detectors.{id}.params.adapt_rows",
                f"{adapt_rows} rows give {adapt_rows - card.window + 1} windows: too few to fit the"
                f" {dims}-dimensional subspace that pca_fraction asks for",
            )
        # Per-stream state that steps hop by hop: a frame goes through `score_hop` hop by hop
        self._hop_by_hop = bool(adapt_rows or self.smooth_rows > 1 or self.components)
        self.reset_streams()

    @classmethod
    def from_params(
        cls, id: str, channels: Sequence[str], params: Mapping[str, Any], base_dir: Path = Path()
    ) -> AutoencoderDetector:
        """Build from DetectorConfig params: model (dir), backend, precision, public_key and the above."""
        if "model" not in params:
            raise ConfigError(
                f"detectors.{id}.params.model", "an autoencoder detector needs a model directory"
            )
        key = params.get("public_key")
        model = load_managed(
            base_dir / str(params["model"]),
            backend=_choice(id, params, "backend", ("auto", "onnx", "tflite")),  # type: ignore[arg-type]
            precision=_choice(id, params, "precision", ("int8", "fp32")),  # type: ignore[arg-type]
            channels=tuple(channels),
            public_key=base_dir / str(key) if key else None,
        )
        return cls(
            id,
            model,
            hop=params.get("hop"),
            threshold=params.get("threshold"),
            adapt_rows=int(params.get("adapt_rows", 0)),
            threshold_quantile=float(params.get("threshold_quantile", 0.99)),
            threshold_margin=float(params.get("threshold_margin", 1.0)),
            smooth_rows=int(params.get("smooth_rows", 1)),
            min_scale_fraction=float(params.get("min_scale_fraction", 0.1)),
            pca_fraction=None if params.get("pca_fraction") is None else float(params["pca_fraction"]),
        )

    @classmethod
    def from_config(cls, config: DetectorConfig, rate_hz: float) -> AutoencoderDetector:
        """Registry entry point: every param checked (unknown keys refused), `hop_s` converted at
        `rate_hz`; relative `model` / `public_key` paths start at the config file's folder."""
        reader = ParamReader(config, rate_hz)
        model = reader.text("model", "")
        if not model:
            raise reader.fail("model", "an autoencoder detector needs a model directory")
        hop_s = reader.number("hop_s", None, positive=True)
        params: dict[str, Any] = {
            "model": model,
            "backend": reader.text("backend", "auto", choices=("auto", "onnx", "tflite")),
            "precision": reader.text("precision", "int8", choices=("int8", "fp32")),
            "public_key": reader.text("public_key", "") or None,
            "hop": None if hop_s is None else max(1, round(hop_s * rate_hz)),
            "threshold": reader.number("threshold", None, positive=True),
            "adapt_rows": reader.count("adapt_rows", 0),
            "threshold_quantile": reader.fraction("threshold_quantile", 0.99),
            "threshold_margin": reader.positive("threshold_margin", 1.0),
            "smooth_rows": max(1, reader.count("smooth_rows", 1)),
            "min_scale_fraction": reader.fraction("min_scale_fraction", 0.1),
            "pca_fraction": reader.number("pca_fraction", None),  # None: the card's
        }
        declared = reader.text("input", "stream", choices=INPUT_KINDS)
        reader.finish()
        detector = cls.from_params(config.id, config.channels, params, config.base_dir)
        check_input(detector.model.card, config, rate_hz, declared)
        return detector

    def calibration_refusal(self) -> str:
        if self.adapt_rows:
            return "per-stream adaptation (params.adapt_rows) already sets each stream's own threshold"
        return ""

    def __deepcopy__(self, memo: dict[int, Any]) -> AutoencoderDetector:
        """A copy with its own per-stream state that shares the loaded model: runtime sessions cannot be
        copied, and need not be (scoring does not change them). Used by calibration's scratch replay."""
        clone = copy.copy(self)
        for name in ("_seen", "_rows", "_mean", "_scale", "_basis", "_thr", "_recent"):
            setattr(clone, name, getattr(self, name).copy())
        return clone

    # -- per-stream state --------------------------------------------------------------------------------

    def reset_streams(self) -> None:
        c = len(self.channels)
        self._seen = np.zeros(0, np.int64)  # samples received per slot (capped at adapt_rows)
        self._rows = np.zeros((0, self.adapt_rows, c))  # the adaptation rows per slot
        self._mean = np.zeros((0, c))
        self._scale = np.ones((0, c))
        self._basis = np.zeros((0, self.window * c, self.components))  # per-slot subspace (pca_fraction)
        self._thr = np.zeros(0)  # per-slot adapted thresholds; NaN: use the detector's threshold
        self._recent = np.full((0, self.smooth_rows), np.nan)  # last raw scores per slot, newest last

    def _grow(self, n_slots: int) -> None:
        have = self._seen.shape[0]
        if n_slots <= have:
            return
        extra = n_slots - have
        c = len(self.channels)
        self._seen = np.concatenate([self._seen, np.zeros(extra, np.int64)])
        self._rows = np.concatenate([self._rows, np.zeros((extra, self.adapt_rows, c))])
        self._mean = np.concatenate([self._mean, np.tile(np.asarray(self.model.card.mean), (extra, 1))])
        self._scale = np.concatenate([self._scale, np.tile(np.asarray(self.model.card.scale), (extra, 1))])
        self._basis = np.concatenate([self._basis, np.zeros((extra, *self._basis.shape[1:]))])
        self._thr = np.concatenate([self._thr, np.full(extra, np.nan)])  # NaN: not adapted
        self._recent = np.concatenate([self._recent, np.full((extra, self.smooth_rows), np.nan)])

    def stream_state(self) -> dict[str, Any]:
        ready = np.flatnonzero(self._seen >= self.adapt_rows) if self.adapt_rows else np.zeros(0, np.int64)
        return {
            str(int(s)): {
                "mean": self._mean[s].tolist(),
                "scale": self._scale[s].tolist(),
                "threshold": float(self._thr[s]),
            }
            | ({"basis": self._basis[s].tolist()} if self.components else {})
            for s in ready
        }

    def load_stream_state(self, state: Mapping[str, Any]) -> None:
        c = len(self.channels)
        for slot_text, entry in state.items():
            slot = int(slot_text)
            basis = np.asarray(entry.get("basis", np.zeros((0, 0))), np.float64)
            if self.components and basis.shape != self._basis.shape[1:]:
                raise ConfigError(
                    f"state.detectors.{self.id}.streams.{slot_text}.basis",
                    f"expected shape {self._basis.shape[1:]}, got {basis.shape}",
                )
            for key in ("mean", "scale"):  # saved for other channels: numpy would broadcast or fail
                if np.shape(entry[key]) != (c,):
                    raise ConfigError(
                        f"state.detectors.{self.id}.streams.{slot_text}.{key}",
                        f"expected {c} values, got shape {np.shape(entry[key])}",
                    )
            self._grow(slot + 1)
            if self.components:
                self._basis[slot] = basis
            self._mean[slot] = entry["mean"]
            self._scale[slot] = entry["scale"]
            self._thr[slot] = float(entry["threshold"])
            self._seen[slot] = self.adapt_rows

    def learning(self, slots: IntArray) -> tuple[IntArray, int]:
        """Rows collected towards each slot's adaptation (`adapt_rows`, 0: none, the card's threshold
        judges from the first window)."""
        if not self.adapt_rows:
            return super().learning(slots)
        return counted(self._seen, slots), self.adapt_rows

    # -- scoring -----------------------------------------------------------------------------------------

    def _adapt(self, block: WindowBlock) -> None:
        """Collect the newest rows of streams still adapting; finish the ones that have enough."""
        for slot in collect_rows(block, self._rows, self._seen, self.adapt_rows):
            rows = self._rows[slot]
            floor = self.min_scale_fraction * np.asarray(self.model.card.scale)
            # Learnt from the rows without a glitch (`learning_rows`; equipment review F2: one 65535 in
            # the learning hour made window_pca's plain std the scale and the rule blind).
            kept = learning_rows(rows, floor)
            self._mean[slot] = rows[kept].mean(axis=0)
            self._scale[slot] = np.maximum(rows[kept].std(axis=0), floor)
            if self.components:
                self._basis[slot] = fit_window_pca(rows, self.window, self.components, floor)[2]
            windows = sliding_window_view(rows, self.window, axis=0).transpose(0, 2, 1)
            with np.errstate(over="ignore", invalid="ignore"):  # a glitch's window: left out below
                scores = self._model_scores(windows, np.full(len(windows), slot))[0]
            scores = np.where(clean_windows(kept, self.window), scores, np.nan)
            self._thr[slot] = self.margin * adaptation_quantile(scores, self.smooth_rows, self.quantile)

    def _model_scores(
        self, windows: FloatArray, slots: np.ndarray[Any, Any]
    ) -> tuple[FloatArray, FloatArray]:
        """Raw (B, W, C) windows of the given slots -> scores and contributions, in one backend call."""
        if not self.components:
            return self._reconstruction_scores(self._normalised(windows, slots))
        z = windows - self._mean[slots, None, :]
        z /= self._scale[slots, None, :]  # in place: the same values with one temporary fewer
        return self._reconstruction_scores(pca_residual(z, self._basis[slots]).astype(np.float32))

    def _normalised(self, values: FloatArray, slots: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """(values - mean) / scale as the model's float32, bit for bit the float64 arithmetic then a cast,
        in fewer passes over the samples (a 500-sample window made them a quarter of the agent's cost):
        the division writes float32 itself (numpy divides in float64 and rounds once on output), and a
        mean of zero (the cards' usual one) is not subtracted (x - 0.0 is x, -0.0 and NaN included)."""
        mean = self._mean[slots, None, :]
        centred = values - mean if mean.any() else values
        x = np.empty(values.shape, np.float32)
        np.divide(centred, self._scale[slots, None, :], out=x, casting="same_kind")
        return x

    def _reconstruction_scores(self, x: np.ndarray[Any, Any]) -> tuple[FloatArray, FloatArray]:
        """Normalised float32 (B, W, C) windows -> scores and contributions, in one backend call.

        Bit for bit the mean over the window of the float64 squared error, divided by C: each window's
        sum runs along its own W samples in numpy's order whatever the rows beside it, so the error is
        taken `ERROR_BLOCK_VALUES` at a time into one reused buffer that stays in the core's cache (a
        batch's whole float64 error, 390 windows of 500 samples, is 1.6 MB), and the model's float32 is
        cast into it first: a subtraction of two float32 into float64 costs more than a cast and a
        float64 subtraction (together 0.97 -> 0.63 µs per ecg-window window in a micro-benchmark)."""
        y = self.model.backend.run(x)
        batch, w, c = x.shape
        step = max(1, ERROR_BLOCK_VALUES // (w * c))
        buffer = np.empty((min(batch, step), w, c))
        contributions = np.empty((batch, c))
        for lo in range(0, batch, step):
            hi = min(batch, lo + step)
            err = buffer[: hi - lo]
            np.copyto(err, y[lo:hi])
            np.subtract(err, x[lo:hi], out=err)
            np.square(err, out=err)
            np.add.reduce(err, axis=1, out=contributions[lo:hi])
        contributions /= w  # the mean over the window, as `ndarray.mean` divides its sum
        contributions /= c
        return contributions.sum(axis=1), contributions

    def score(self, block: WindowBlock) -> ScoreBlock:
        """As `StreamingDetector.score`: a frame of several hops is scored hop by hop, each hop's windows
        in one backend call as `score_hop` would, and judged by its worst hop (`worst_index`, as
        `worst_of` picks). What does not depend on the hop is done once per frame: the missing samples
        are found (and looked for hop by hop only in the streams that have any) and the samples
        normalised (the stream's mean and scale: the same values as window by window) once each, not once
        per window holding them (nine times for a Polar H10's 73 samples); the contributions are made
        shares for the picked hop only (shares are per stream: the same values)."""
        if block.hop < 2 * self.hop or self._hop_by_hop or not block.n_streams:
            return super().score(block)
        ends = hop_ends(block, self.window, self.hop)
        if len(ends) == 1:
            return super().score(block)
        n, c, w = block.n_streams, len(self.channels), self.window
        self._grow(int(block.slots.max()) + 1)
        nan = np.asarray(np.isnan(block.values))
        missing = nan[:, :, 0] if c == 1 else np.asarray(nan.any(axis=2))  # (S, length)
        gappy = np.flatnonzero(missing.any(axis=1))  # usually none or a few
        gappy_missing = missing[gappy]
        x = self._normalised(block.values, block.slots)
        thresholds = np.where(np.isnan(self._thr[block.slots]), self.threshold, self._thr[block.slots])
        scores, contributions = np.full((len(ends), n), np.nan), np.zeros((len(ends), n, c))
        clean = np.ones(n, bool)
        for hop, end in enumerate(ends):
            clean[gappy] = ~gappy_missing[:, end - w : end].any(axis=1)
            if clean.all():  # the same batches as `score_hop`: the runtime sees what it saw
                scores[hop], contributions[hop] = self._reconstruction_scores(x[:, end - w : end])
            elif clean.any():
                rows = np.flatnonzero(clean)
                scores[hop, rows], contributions[hop, rows] = self._reconstruction_scores(
                    x[rows, end - w : end]
                )
        pick, streams = worst_index(scores, thresholds), np.arange(n)
        return ScoreBlock(
            scores=scores[pick, streams],
            thresholds=thresholds,
            contributions=shares(contributions[pick, streams]),
            observed=np.full(n, np.nan),
            limits=np.full(n, np.nan),
            baseline=self._mean[block.slots],
        )

    def score_hop(self, block: WindowBlock) -> ScoreBlock:
        n, c = block.n_streams, len(self.channels)
        self._grow(int(block.slots.max()) + 1 if n else 0)
        if self.adapt_rows:
            self._adapt(block)
        windows = block.values[:, -self.window :]  # a hop plus a remainder: the newest window
        ready = ~np.isnan(windows).any(axis=(1, 2))
        if self.adapt_rows:
            ready &= self._seen[block.slots] >= self.adapt_rows
        scores = np.full(n, np.nan)
        contributions = np.zeros((n, c))
        rows = np.flatnonzero(ready)
        if rows.size == n > 0:  # the usual case: no copy of the windows to pick rows
            scores, contributions = self._model_scores(windows, block.slots)
        elif rows.size and not self.components:
            # All normalised, then the rows picked: the copy is of float32, half the bytes (per sample,
            # the same values; a window with missing samples is normalised to NaN and left out)
            x = self._normalised(windows, block.slots)
            scores[rows], contributions[rows] = self._reconstruction_scores(x[rows])
        elif rows.size:
            scores[rows], contributions[rows] = self._model_scores(windows[rows], block.slots[rows])
        if self.smooth_rows > 1:
            recent = self._recent[block.slots]
            recent = np.concatenate([recent[:, 1:], scores[:, None]], axis=1)
            self._recent[block.slots] = recent
            with np.errstate(invalid="ignore"):
                smoothed = recent.mean(axis=1)  # NaN until k scores: no verdict from a partial mean
            scores = np.where(ready, smoothed, np.nan)
        return ScoreBlock(
            scores=scores,
            thresholds=np.where(np.isnan(self._thr[block.slots]), self.threshold, self._thr[block.slots]),
            contributions=shares(contributions),
            observed=np.full(n, np.nan),
            limits=np.full(n, np.nan),
            baseline=self._mean[block.slots].copy(),
        )


def check_input(card: ModelCard, config: DetectorConfig, rate_hz: float, declared: str) -> None:
    """ConfigError unless the detector's stream is what the model was trained on: the input kind the
    config declares (`params.input`) is the card's, and a stream model's card rate (when it states one)
    is the detector's `rate_hz` within `agent.rates.RATE_TOLERANCE` (a device's nominal rate against the
    training data's measured one)."""
    where, stream = f"detectors.{config.id}", config.stream
    if card.input_kind == "beats" and declared != "beats":
        raise ConfigError(
            f"{where}.params.model",
            f"model {card.name} scores one heart beat per window (card input 'beats': a beat cut around its"
            f" R peak and resampled to {card.window} points), not {card.window} consecutive samples of"
            f" stream {stream!r}: on a raw ECG every window scores far above its threshold. No source of"
            " this agent cuts beats from an ECG; only a stream that carries beat windows can feed it, and"
            ' the config says so with params.input = "beats"',
        )
    if card.input_kind != declared:
        raise ConfigError(
            f"{where}.params.input",
            f"model {card.name} scores {card.window} consecutive samples of a stream (card input"
            f" 'stream'), not beat windows; remove params.input",
        )
    trained = card.rate_hz
    if declared == "stream" and trained is not None and not rates_agree(rate_hz, trained):
        raise ConfigError(
            f"{where}.rate_hz",
            f"model {card.name} was trained on samples at {trained:g} Hz (its card's input.rate_hz); this"
            f" detector reads stream {stream!r} at {rate_hz:g} Hz, so each {card.window}-sample window would"
            f" span {card.window / rate_hz:g} s instead of {card.window / trained:g} s. Set rate_hz to the"
            f" stream's real rate, or use a model trained at {rate_hz:g} Hz",
        )


def _choice(id: str, params: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = str(params.get(key, allowed[0]))
    if value not in allowed:
        raise ConfigError(
            f"detectors.{id}.params.{key}", f"must be one of {', '.join(allowed)}, got {value!r}", allowed
        )
    return value


__all__ = ["AutoencoderDetector", "BackendName", "Precision"]
