"""SpO2 desaturation events (a drop of >= 3 % from a rolling baseline lasting >= 10 s) and their index.

The window (`baseline_s` + `duration_s`, 300 + 10 s by default) is split in two: the older part gives
the baseline, its `baseline_quantile` (0.9: an upper quantile, so the baseline is the patient's usual
saturation and a slow slide or a desaturation already under way does not drag it down), and the newest
`duration_s` samples are the candidate event. The score is the *smallest* drop below the baseline over
those newest samples — baseline minus their maximum — so it reaches the threshold (3 percentage points)
only when every sample of the last `duration_s` seconds is that far down: the minimum duration is part of
the score, and the alarm machine needs no extra delay. NaN samples (gated) never count as low: a hop
whose recent part is mostly missing gives no verdict.

A drop of exactly `drop` is an event (">= 3 %": 97 -> 94, the commonest smallest one with whole-percent
oximeters), but the alarm machine, like every detector's contract, alarms on score > threshold, and a
decimal drop (97.3 -> 94.3) can come out a hair below 3 in floats. So a drop within `DROP_TOLERANCE` of
`drop` is scored just past it (`at_least`); the threshold, the limit and the observed SpO2 stay exact.

The oxygen desaturation index (ODI, events per hour) counts rising edges of that condition per stream
slot, over the hours the stream was scored; `desaturation_index(slots)` gives it to the heartbeat or a
report. Counts persist with the detector state.

Each slot also keeps its last own baseline and the end time of the window that measured it (one float and
one time: no SpO2 samples are kept). After a restart or a reload the window starts empty; while its older
part is under half filled, a kept baseline measured no more than `baseline_s` before the window's end is
scored against instead of giving no verdict for minutes (issue 5). `baseline_s` because a full window's
own baseline already rests on samples that old. A kept baseline is never refreshed by its own use, so it
ages out; without one (a first start, a new strap) the stream reports itself learning (`learning`).
Slots follow arrival order, which a restart may change, so each kept baseline also keeps a tag of its
stream (`stream_tag`: a hash of "pseudonym/name") and goes to that stream's new slot (`set_stream`): a
baseline of 97 % kept for one patient must never judge another whose usual SpO2 is 92 %.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from agent.config.schema import DetectorConfig
from agent.detectors.base import BoolArray, FloatArray, IntArray, ScoreBlock, StreamingDetector, WindowBlock
from agent.detectors.params import ParamReader

# Percentage points: a hundredth of the finest oximeter resolution (0.1 %), far above the float error of
# a difference of decimal readings (1e-13 in doubles, 1e-5 for values that went through float32).
DROP_TOLERANCE = 1e-3


class DesaturationDetector(StreamingDetector):
    type_name = "spo2_desaturation"
    quantity = "drop below baseline"

    def __init__(
        self,
        id: str,
        channels: tuple[str, ...],
        window: int,
        hop: int,
        threshold: float,
        duration: int,
        rate_hz: float,
        baseline_quantile: float = 0.9,
        min_valid: float = 0.8,
    ) -> None:
        super().__init__(id, channels, window, hop, threshold)
        self.duration = duration  # samples that must all be down
        self.rate_hz = rate_hz
        self.baseline_quantile = baseline_quantile
        self.min_valid = min_valid
        self.baseline_s = (window - duration) / rate_hz  # how long a kept baseline stays usable
        # Valid samples of each slot's baseline part at its last hop, this session only (never saved:
        # the window starts empty after a restart), for `learning`; NaN until the slot is scored.
        self._filled: FloatArray = np.full(0, np.nan)
        # Stream tag -> (kept baseline, when), as loaded: each stream takes its own at its new slot.
        self._loaded: dict[float, tuple[float, float]] = {}

    @classmethod
    def from_config(cls, config: DetectorConfig, rate_hz: float) -> DesaturationDetector:
        reader = ParamReader(config, rate_hz)
        reader.channel_count(exactly=1)
        duration = reader.samples("duration_s", 10.0, minimum=1)
        baseline = reader.samples("baseline_s", 300.0, minimum=3)
        hop = reader.samples("hop_s", 1.0)
        if hop > duration:
            raise reader.fail("hop_s", f"must not exceed duration_s ({duration} samples), got {hop}")
        detector = cls(
            config.id,
            config.channels,
            baseline + duration,
            hop,
            threshold=reader.positive("drop", 3.0),
            duration=duration,
            rate_hz=reader.rate_hz,
            baseline_quantile=reader.fraction("baseline_quantile", 0.9),
            min_valid=reader.fraction("min_valid", 0.8),
        )
        reader.finish()
        return detector

    def drop_below(self, spo2: FloatArray, baseline: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(sustained drop, baseline) of each row of (S, W) SpO2 samples, oldest first, against `baseline`
        per row (NaN: no verdict)."""
        recent = spo2[:, -self.duration :]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows give NaN
            highest = np.nanmax(recent, axis=1)
        recent_ok = (~np.isnan(recent)).mean(axis=1) >= self.min_valid
        drop = np.where(~np.isnan(baseline) & recent_ok, baseline - highest, np.nan)
        return drop, baseline

    def own_baseline(self, spo2: FloatArray) -> tuple[FloatArray, BoolArray]:
        """The baseline of each row's older part, and whether that part is at least half valid."""
        older = spo2[:, : -self.duration]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows give NaN
            baseline = np.nanquantile(older, self.baseline_quantile, axis=1)
        ok: BoolArray = (~np.isnan(older)).mean(axis=1) >= 0.5
        return baseline, ok

    def at_least(self, drop: FloatArray) -> FloatArray:
        """Scores of sustained drops such that score > threshold exactly when drop >= `drop` points,
        up to `DROP_TOLERANCE`: a drop that reaches the threshold within it is lifted just past it."""
        reaches = drop >= self.threshold - DROP_TOLERANCE  # NaN: False
        past = np.nextafter(self.threshold, np.inf)
        scores: FloatArray = np.where(reaches, np.maximum(drop, past), drop)
        return scores

    def score_hop(self, block: WindowBlock) -> ScoreBlock:
        n = block.n_streams
        spo2 = block.values[:, -self.window :, 0]
        own, own_ok = self.own_baseline(spo2)
        kept = self._kept_baseline(block, spo2, own, own_ok)
        drop, baseline = self.drop_below(spo2, np.where(own_ok, own, kept))
        scores = self.at_least(drop)
        self._count_events(block.slots, scores, min(block.hop, block.values.shape[1]))
        has = ~np.isnan(scores)
        return ScoreBlock(
            scores=scores,
            thresholds=self._thresholds(n),
            contributions=np.where(has & (scores > self.threshold), 1.0, 0.0)[:, None],
            observed=np.where(has, baseline - drop, np.nan),  # the SpO2 held for duration_s
            limits=np.where(has, baseline - self.threshold, np.nan),
            baseline=baseline[:, None],
        )

    def _kept_baseline(
        self, block: WindowBlock, spo2: FloatArray, own: FloatArray, own_ok: BoolArray
    ) -> FloatArray:
        """Keep each slot's own baseline (and when) where its window measures one; give the kept ones
        still fresh (measured at most `baseline_s` before the window's end, not after it) per row."""
        slots, ends = block.slots, block.end_times
        self._slot_state("kept_of", slots, np.nan)  # NaN until `set_stream`: used by slot (no pipeline)
        kept = self._slot_state("kept_baseline", slots, np.nan)[:, 0]
        kept_at = self._slot_state("kept_at", slots, np.nan)[:, 0]
        age = ends - kept_at  # NaN: none kept
        with np.errstate(invalid="ignore"):
            fresh = (age >= 0.0) & (age <= self.baseline_s)
        usable = np.where(fresh, kept, np.nan)
        ok = own_ok & ~np.isnan(own)
        self._store("kept_baseline", slots, np.where(ok, own, kept)[:, None])
        self._store("kept_at", slots, np.where(ok, ends, kept_at)[:, None])
        valid = (~np.isnan(spo2[:, : -self.duration])).sum(axis=1).astype(np.float64)
        self._note_filled(slots, np.where(ok | fresh, float(self._need()), valid))
        return usable

    def ready_after(self) -> int:
        """Scored from a full candidate part on: a kept baseline may judge it before the window fills,
        and `learning` counts the baseline part's samples as they come."""
        return self.duration

    def _need(self) -> int:
        """Valid samples the older part needs for a baseline of its own (half of it)."""
        return math.ceil((self.window - self.duration) / 2)

    def _note_filled(self, slots: IntArray, filled: FloatArray) -> None:
        need = int(slots.max()) + 1 if slots.size else 0
        if self._filled.shape[0] < need:
            grown = np.full(max(need, 2 * self._filled.shape[0], 8), np.nan)
            grown[: self._filled.shape[0]] = self._filled
            self._filled = grown
        self._filled[slots] = filled

    def learning(self, slots: IntArray) -> tuple[IntArray, int]:
        """Valid baseline samples per slot at its last hop (a fresh kept baseline counts as all needed):
        a stream with neither a half-filled baseline part nor a fresh kept baseline gives no verdict. A
        slot not scored yet in this session counts 0."""
        have = np.zeros(len(slots), np.int64)
        known = slots < self._filled.shape[0]
        filled = self._filled[slots[known]]
        have[known] = np.where(np.isnan(filled), 0.0, filled).astype(np.int64)
        return have, self._need()

    def reset_streams(self) -> None:
        super().reset_streams()
        self._filled = np.full(0, np.nan)
        self._loaded = {}

    def load_stream_state(self, state: Mapping[str, Any]) -> None:
        super().load_stream_state(state)
        tags = self._slots.get("kept_of")
        self._loaded = {}
        if tags is None:  # saved before streams were tagged: whose baseline is unknown, so none is kept
            self._slots.pop("kept_baseline", None)
            self._slots.pop("kept_at", None)
            return
        base, at = self._slots.get("kept_baseline"), self._slots.get("kept_at")
        if base is None or at is None or not base.shape == at.shape == tags.shape:
            raise ValueError("kept_baseline, kept_at and kept_of must have one row per slot")
        for tag, value, when in zip(tags[:, 0].tolist(), base[:, 0].tolist(), at[:, 0].tolist(), strict=True):
            if math.isfinite(tag) and math.isfinite(value) and math.isfinite(when):
                self._loaded[tag] = (value, when)

    def set_stream(self, slot: int, stream: str) -> None:
        """The stream's own kept baseline, if one was loaded, goes to its slot in this session; any other
        stream's that the slot held is dropped from it."""
        slots = np.array([slot], dtype=np.int64)
        tag = stream_tag(stream)
        value, when = self._loaded.get(tag, (math.nan, math.nan))
        for name, kept in (("kept_of", tag), ("kept_baseline", value), ("kept_at", when)):
            self._slot_state(name, slots, math.nan)  # grow the table to the slot
            self._store(name, slots, np.array([[kept]]))

    def calibrate(self, normal: WindowBlock, target_false_alarms_per_hour: float, hop_seconds: float) -> None:
        """A desaturation is a clinical definition (>= 3 points for >= 10 s): nothing to learn."""

    def calibration_refusal(self) -> str:
        return "a desaturation is a clinical definition (a drop of >= 3 points for >= 10 s), never learned"

    def _count_events(self, slots: IntArray, scores: FloatArray, hop: int) -> None:
        """Rising edges of score > threshold (a drop of at least `drop`), and scored time, per slot
        (for the ODI)."""
        inside = self._slot_state("inside", slots, 0.0)[:, 0]
        events = self._slot_state("events", slots, 0.0)[:, 0]
        seconds = self._slot_state("seconds", slots, 0.0)[:, 0]
        has = ~np.isnan(scores)
        now = has & (scores > self.threshold)
        events = events + (now & (inside == 0))
        inside = np.where(has, now, inside).astype(np.float64)
        seconds = seconds + np.where(has, hop / self.rate_hz, 0.0)
        self._store("inside", slots, inside[:, None])
        self._store("events", slots, events[:, None])
        self._store("seconds", slots, seconds[:, None])

    def desaturation_index(self, slots: IntArray) -> FloatArray:
        """Oxygen desaturation index (events per scored hour) of each slot; NaN before any scored time."""
        events = self._slot_state("events", slots, 0.0)[:, 0]
        hours = self._slot_state("seconds", slots, 0.0)[:, 0] / 3600.0
        out: FloatArray = np.divide(events, hours, out=np.full(len(slots), np.nan), where=hours > 0)
        return out

    def desaturation_indices(self, streams: Sequence[str]) -> dict[str, float]:
        """ODI per stream id, given the stream ids in slot order (a stream pipeline's
        `windows.streams`); streams not scored yet are left out. For the heartbeat or a report."""
        if not streams:
            return {}
        odi = self.desaturation_index(np.arange(len(streams), dtype=np.int64))
        return {name: float(v) for name, v in zip(streams, odi, strict=True) if np.isfinite(v)}


def stream_tag(stream: str) -> float:
    """A stream's tag in the saved state: 48 bits of the SHA-256 of its "pseudonym/name", exact in a
    float64 and in JSON (no device id is written, only what the pseudonym already shows)."""
    return float(int.from_bytes(hashlib.sha256(stream.encode()).digest()[:6], "big"))
