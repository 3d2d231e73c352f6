"""The detector contract: blocks of windows in, blocks of scores out, vectorised over streams.

A `WindowBlock` holds the same-length window of S streams at once; a detector returns one score per
stream plus the evidence an alarm needs (per-channel contributions, the measured value against its limit,
the baseline). Detectors are causal: a score depends only on its window and on state built from earlier
calls, and stateful detectors keep that state per stream *slot* so streams can come and go.

`StreamingDetector` is the shared base: it holds id/channels/window/hop/threshold, grows per-slot state
arrays on demand, and implements calibration generically by replaying a long normal recording through a
scratch copy of the detector at its hop (see `agent.detectors.calibration`).
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from agent.detectors.calibration import replay_scores, threshold_for_rate
from agent.errors import ConfigError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class WindowBlock:
    """Windows of S streams, oldest sample first; NaN where a sample is missing or quality-gated out."""

    values: FloatArray  # (S, W, C)
    slots: IntArray  # (S,) stable slot number of each row's stream, for per-stream state
    end_times: FloatArray  # (S,) Unix time of each window's newest sample
    hop: int  # how many of the newest samples are new since the previous call for these streams

    def __post_init__(self) -> None:
        if self.values.ndim != 3:
            shape = self.values.shape
            raise ValueError(f"WindowBlock.values must be (streams, window, channels), got {shape}")
        n = self.values.shape[0]
        if self.slots.shape != (n,) or self.end_times.shape != (n,):
            raise ValueError(f"WindowBlock: slots and end_times must have shape ({n},)")
        if self.hop < 1:
            raise ValueError(f"WindowBlock.hop must be >= 1, got {self.hop}")

    @property
    def n_streams(self) -> int:
        return int(self.values.shape[0])


@dataclass(frozen=True, slots=True)
class ScoreBlock:
    """One score per stream, with what an alarm explanation needs."""

    scores: FloatArray  # (S,) higher = more anomalous; NaN = no verdict (not enough valid data)
    thresholds: FloatArray  # (S,) alarm when score > threshold
    contributions: FloatArray  # (S, C) >= 0, per-channel share of the score
    observed: FloatArray  # (S,) measured value in the channel's unit, NaN if n/a
    limits: FloatArray  # (S,) the limit in that unit, NaN if n/a
    baseline: FloatArray  # (S, C) what the score is measured against, NaN if n/a

    @property
    def exceeded(self) -> BoolArray:
        """True where the score is above its threshold (NaN scores never exceed)."""
        with np.errstate(invalid="ignore"):
            return np.asarray(self.scores > self.thresholds)

    def rows(self, index: IntArray) -> ScoreBlock:
        """The scores of a subset of streams."""
        return ScoreBlock(
            self.scores[index],
            self.thresholds[index],
            self.contributions[index],
            self.observed[index],
            self.limits[index],
            self.baseline[index],
        )


@runtime_checkable
class Detector(Protocol):
    id: str
    channels: tuple[str, ...]
    window: int  # samples per window the detector needs
    hop: int  # score every `hop` new samples
    quantity: str  # what ScoreBlock.observed measures when it is not the value itself; "" if it is

    def score(self, block: WindowBlock) -> ScoreBlock: ...

    def calibrate(
        self, normal: WindowBlock, target_false_alarms_per_hour: float, hop_seconds: float
    ) -> None: ...

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: Mapping[str, Any]) -> None: ...


class StreamingDetector(ABC):
    """Common machinery; subclasses implement `score` and, if stateful, the per-slot state hooks."""

    type_name: str = ""
    quantity: str = ""  # what ScoreBlock.observed measures when it is not the value itself ("range", ...)

    def __init__(self, id: str, channels: tuple[str, ...], window: int, hop: int, threshold: float) -> None:
        if hop > window:
            raise ConfigError(
                f"detectors.{id}.params.hop_s", f"hop ({hop} samples) exceeds the window ({window} samples)"
            )
        self.id = id
        self.channels = channels
        self.window = window
        self.hop = hop
        self.threshold = float(threshold)
        self._slots: dict[str, FloatArray] = {}

    @abstractmethod
    def score(self, block: WindowBlock) -> ScoreBlock: ...

    # -- per-stream state: named (slots, C) arrays grown on demand, empty for stateless detectors ------

    def _slot_state(self, name: str, slots: IntArray, fill: float) -> FloatArray:
        """The rows of per-slot state `name` for `slots` (a copy; write back with `_store`)."""
        table = self._slots.get(name)
        need = int(slots.max()) + 1 if slots.size else 0
        if table is None or table.shape[0] < need:
            size = max(need, 2 * (0 if table is None else table.shape[0]), 8)
            grown = np.full((size, len(self.channels)), fill)
            if table is not None:
                grown[: table.shape[0]] = table
            self._slots[name] = table = grown
        return table[slots]

    def _store(self, name: str, slots: IntArray, rows: FloatArray) -> None:
        self._slots[name][slots] = rows

    def reset_streams(self) -> None:
        """Forget all per-stream state (a scratch copy for calibration starts from here)."""
        self._slots = {}

    def stream_state(self) -> dict[str, Any]:
        """JSON-able per-slot state: each table as nested lists, NaN as null."""
        return {
            name: [[_json_float(v) for v in row] for row in table.tolist()]
            for name, table in self._slots.items()
        }

    def load_stream_state(self, state: Mapping[str, Any]) -> None:
        """Inverse of `stream_state`."""
        tables: dict[str, FloatArray] = {}
        for name, rows in state.items():
            try:
                table = np.array([[np.nan if v is None else float(v) for v in row] for row in rows])
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"state.detectors.{self.id}.streams.{name}", f"unreadable: {exc}") from exc
            if table.ndim != 2 or table.shape[1] != len(self.channels):
                raise ConfigError(
                    f"state.detectors.{self.id}.streams.{name}",
                    f"expected rows of {len(self.channels)} values, got shape {table.shape}",
                )
            tables[name] = table
        self._slots = tables

    # -- calibration -----------------------------------------------------------------------------------

    def calibrate(self, normal: WindowBlock, target_false_alarms_per_hour: float, hop_seconds: float) -> None:
        """Set the threshold so normal data exceeds it `target_false_alarms_per_hour` times per hour.

        `normal.values` is a long recording (S, T, C) with T >= window; it is replayed at this detector's
        hop through a scratch copy, so live per-stream state is left untouched.
        """
        try:
            scores = replay_scores(self._scratch(), normal, self.window, self.hop, hop_seconds)
            self.calibrate_from_scores(scores, target_false_alarms_per_hour, hop_seconds)
        except ValueError as exc:
            raise ConfigError(f"detectors.{self.id}", f"cannot calibrate: {exc}") from exc

    def calibrate_from_scores(
        self, scores: FloatArray, target_false_alarms_per_hour: float, hop_seconds: float
    ) -> float:
        """Set the threshold from normal scores already collected (one per hop, NaN = no verdict), as
        `calibrate` does after its replay; returns the learned threshold before `_calibrated` combines
        it with the configured one. ValueError when the scores cannot set one (too few finite)."""
        learned = threshold_for_rate(scores, target_false_alarms_per_hour, hop_seconds)
        self.threshold = self._calibrated(learned)
        return learned

    def calibration_refusal(self) -> str:
        """Why calibration would change nothing for this detector; "" when it learns a threshold."""
        return ""

    def _calibrated(self, learned: float) -> float:
        """Hook: how a learned threshold combines with the configured one (default: replace it)."""
        return learned

    def _scratch(self) -> StreamingDetector:
        clone = copy.deepcopy(self)
        clone.reset_streams()
        return clone

    # -- persistence -----------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "type": self.type_name,
            "id": self.id,
            "threshold": _json_float(self.threshold),
            "streams": self.stream_state(),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        where = f"state.detectors.{self.id}"
        if state.get("type") != self.type_name:
            raise ConfigError(f"{where}.type", f"expected {self.type_name!r}, got {state.get('type')!r}")
        threshold = state.get("threshold")
        if threshold is None:  # JSON has no infinity: an unreachable threshold is stored as null
            threshold = math.inf
        if not isinstance(threshold, int | float) or isinstance(threshold, bool):
            raise ConfigError(f"{where}.threshold", f"expected a number, got {threshold!r}")
        self.threshold = float(threshold)
        streams = state.get("streams", {})
        if not isinstance(streams, Mapping):
            raise ConfigError(f"{where}.streams", "expected a table")
        self.load_stream_state(streams)

    # -- helpers for subclasses ------------------------------------------------------------------------

    def _thresholds(self, n: int) -> FloatArray:
        return np.full(n, self.threshold)


def _json_float(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def shares(parts: FloatArray) -> FloatArray:
    """Rows of non-negative parts normalised to sum to 1 (all-zero or NaN rows give zeros)."""
    clean = np.where(np.isfinite(parts) & (parts > 0), parts, 0.0)
    total = clean.sum(axis=1, keepdims=True)
    out: FloatArray = np.divide(clean, total, out=np.zeros_like(clean), where=total > 0)
    return out


def pick_rows(matrix: FloatArray, column: IntArray) -> FloatArray:
    """matrix[i, column[i]] for every row i."""
    picked: FloatArray = np.take_along_axis(matrix, column[:, None], axis=1)[:, 0]
    return picked


def max_over_channels(per_channel: FloatArray) -> tuple[FloatArray, IntArray]:
    """(score, top channel) per row: the largest non-NaN entry; NaN score where the row has none."""
    filled = np.where(np.isnan(per_channel), -np.inf, per_channel)
    top = np.argmax(filled, axis=1)
    best = pick_rows(filled, top)
    return np.where(np.isneginf(best) & np.isnan(per_channel).all(axis=1), np.nan, best), top


def newest_valid(samples: FloatArray) -> FloatArray:
    """The last non-NaN value along axis 1 of (S, N) or (S, N, C) samples, NaN where there is none."""
    valid = ~np.isnan(samples)
    last = samples.shape[1] - 1 - np.argmax(valid[:, ::-1], axis=1)
    picked = np.take_along_axis(samples, np.expand_dims(last, 1), axis=1)[:, 0]
    out: FloatArray = np.where(valid.any(axis=1), picked, np.nan)
    return out
