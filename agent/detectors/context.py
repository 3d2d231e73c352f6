"""Context: the Contextual Anomaly Detector (CAD OSE, M. Smirnov 2016) per stream and channel.

CAD OSE scored 69.9 on NAB's standard profile (the NAB scoreboard). Each sample is quantised to one of
2^bits levels of a value range, the level's bits become "facts", and a per-stream `ContextMemory`
(agent.detectors.context_memory) learns which fact sets follow which; the raw score is high when the
sample was not predicted and the memory's contexts failed and had to grow (see that module).

The range: NAB hands CAD OSE the minimum and maximum of the *whole* series (NAB's `inputMin`/`inputMax`),
future anomalies included. A gateway has the same kind of range only when it is configured: a device's
`ranges` (the sensor's measurable span, from its datasheet). With one for the channel, the stream is
quantised as CAD OSE does it: 2^bits - 1 steps from low to high (high alone is the top level), no
warm-up, verdicts from the first sample; a value beyond the span takes the edge level (the quality gate
already makes values outside the configured span missing, so this only guards a state restored under
another span). Without one, each stream learns its range causally from its first `warmup_s` valid
samples (widened by `range_margin` of that span on both sides); those samples are then replayed through
the memory so it starts with what they taught, and verdicts start with the next sample. Values outside
the learned range get levels below 0 or above 2^bits - 1, whose facts the memory has never seen, so they
score as surprises (no clipping). A stream whose configured span changes (or is removed) starts over.

The memory follows CAD OSE step for step, tie-breaks included (see context_memory), and only grows: about
300 - 330 bytes per context in CPython; with NAB's spans its series reach 1 - 12,405 contexts, and
art_noisy (pure noise) 63,892 in 4,032 rows. At `max_contexts` a stream's memory stops storing new
contexts but keeps what it has, keeps updating it and keeps counting what it could not store as new, so
verdicts go on without a gap (an earlier version started the memory over, blind for `warmup_s`).

After a raw score >= `rest_level` (0.75 in CAD OSE) the detector reports 0 for the next `rest_s` of
samples (CAD OSE's rest period, probation / 5 on NAB): one event, one verdict. Score = the reported
value, in [0, 1]; threshold = `threshold`. Nothing to calibrate (a `calibration` table is refused): the
score is a share of the stream's own memory. The memory lives in `state()`, so a restart keeps what was
learned.

Cost is a Python loop over streams and samples (the memory is a dict-based structure per stream).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from agent.config.schema import DetectorConfig
from agent.detectors.base import FloatArray, IntArray, ScoreBlock, StreamingDetector, WindowBlock, shares
from agent.detectors.context_memory import ContextMemory, Facts
from agent.detectors.params import ParamReader
from agent.errors import ConfigError

RELATIVE_FLOOR = 0.01  # the learned span is at least 1 % of the largest magnitude seen
NEGATIVE_FACT = 1 << 20  # marks a level below the learned range


def level_facts(level: int, bits: int) -> Facts:
    """The sensor facts of a quantisation level: fact 2i + b for bit i (least significant first) of |level|
    with value b, over at least `bits` bits, plus a sign fact for levels below the range."""
    magnitude = abs(level)
    width = max(bits, magnitude.bit_length())
    facts = [2 * i + ((magnitude >> i) & 1) for i in range(width)]
    if level < 0:
        facts.append(NEGATIVE_FACT)
    return tuple(facts)


class _Stream:
    """One (stream, channel): warm-up samples, then the learned range, the memory and the rest counter."""

    def __init__(self) -> None:
        self.warmup: list[float] = []
        self.low = math.nan
        self.step = math.nan  # value span of one level
        self.memory: ContextMemory | None = None
        self.since_high = 1  # raw scores since the last one >= rest_level, counting that one (CAD OSE: 1)
        self.relearning = 0  # samples left without verdict after the memory started over
        self.span = False  # quantised within a configured span (clipped to its levels), not a learned range


class ContextDetector(StreamingDetector):
    type_name = "context"
    lowest_score = 0.0
    judges_whole_frames = True  # every new sample is judged; the frame gets its worst
    quantity = "context anomaly"  # observed is the reported score, not a value of the channel

    def __init__(
        self,
        id: str,
        channels: tuple[str, ...],
        hop: int,
        threshold: float,
        *,
        warmup: int = 300,
        range_margin: float = 0.5,
        bits: int = 3,
        rest: int = 150,
        rest_level: float = 0.75,
        max_left_facts: int = 7,
        max_active: int = 15,
        max_contexts: int = 20_000,
        min_scale: float = 1e-3,
    ) -> None:
        super().__init__(id, channels, hop, hop, threshold)
        self.warmup = warmup
        self.range_margin = range_margin
        self.bits = bits
        self.rest = rest
        self.rest_level = rest_level
        self.max_left_facts = max_left_facts
        self.max_active = max_active
        self.max_contexts = max_contexts
        self.min_scale = min_scale
        self._streams: dict[tuple[int, int], _Stream] = {}
        self._spans: dict[tuple[int, int], tuple[float, float]] = {}  # (slot, channel) -> configured span

    @classmethod
    def from_config(cls, config: DetectorConfig, rate_hz: float) -> ContextDetector:
        reader = ParamReader(config, rate_hz)
        reader.channel_count()
        hop = reader.samples("hop_s", 1.0)
        threshold = reader.bounded("threshold", 0.75, 0.0, 1.0)
        range_margin = reader.bounded("range_margin", 0.5, 0.0)  # a fraction of the warm-up's span
        bits = reader.count("bits", 3)
        if not 1 <= bits <= 16:
            raise reader.fail("bits", f"expected 1 to 16 bits, got {bits}")
        rest_s = reader.bounded("rest_s", 150.0, 0.0)
        rest_level = reader.bounded("rest_level", 0.75, 0.0, 1.0)
        max_contexts = reader.count("max_contexts", 20_000)
        if max_contexts < 1:
            raise reader.fail("max_contexts", "expected at least 1")
        detector = cls(
            config.id,
            config.channels,
            hop,
            threshold,
            warmup=reader.samples("warmup_s", 300.0),
            range_margin=range_margin,
            bits=bits,
            rest=round(rest_s * rate_hz),
            rest_level=rest_level,
            max_left_facts=reader.count("max_left_facts", 7),
            max_active=reader.count("max_active", 15),
            max_contexts=max_contexts,
            min_scale=reader.positive("min_scale", 1e-3),
        )
        reader.finish()
        return detector

    def calibrate(self, normal: WindowBlock, target_false_alarms_per_hour: float, hop_seconds: float) -> None:
        """The score is a share of each stream's own memory: nothing to learn from a recording."""

    def calibration_refusal(self) -> str:
        return "its score is a share of each stream's own context memory, and its warm-up is the baseline"

    # -- scoring --------------------------------------------------------------------------------------

    def score_hop(self, block: WindowBlock) -> ScoreBlock:
        n, channels = block.n_streams, len(self.channels)
        new = block.values[:, -min(block.hop, block.values.shape[1]) :, :]  # (S, hop, C)
        per_channel = np.full((n, channels), np.nan)
        for row in range(n):
            slot = int(block.slots[row])
            for c in range(channels):
                per_channel[row, c] = self._feed(self._stream(slot, c), new[row, :, c])
        has = ~np.isnan(per_channel).all(axis=1)
        scores = np.full(n, np.nan)
        top = np.zeros(n, dtype=np.int64)
        if has.any():
            filled = np.where(np.isnan(per_channel), -np.inf, per_channel)
            top = np.argmax(filled, axis=1)
            scores[has] = filled[has, top[has]]
        return ScoreBlock(
            scores=scores,
            thresholds=self._thresholds(n),
            contributions=shares(per_channel),
            observed=scores.copy(),
            limits=np.where(has, self.threshold, np.nan),
            baseline=np.full((n, channels), np.nan),
        )

    def set_spans(self, slot: int, spans: Mapping[str, tuple[float, float]]) -> None:
        for c, name in enumerate(self.channels):
            key = (slot, c)
            span = spans.get(name)
            if span is None:
                self._spans.pop(key, None)
            else:
                self._spans[key] = span
            stream = self._streams.get(key)
            if stream is None:
                continue
            if span is None:
                if stream.span:  # quantised within a span no longer configured: learn a range afresh
                    del self._streams[key]
            elif not (stream.span and (stream.low, stream.step) == self._span_levels(span)):
                del self._streams[key]  # learned, or under another span: start over within this one

    def _span_levels(self, span: tuple[float, float]) -> tuple[float, float]:
        """(low, step) of CAD OSE's quantisation of `span`: 2^bits - 1 steps from low to high."""
        low, high = span
        return low, (high - low) / (2**self.bits - 1)

    def _stream(self, slot: int, channel: int) -> _Stream:
        stream = self._streams.get((slot, channel))
        if stream is None:
            stream = self._streams[(slot, channel)] = _Stream()
            span = self._spans.get((slot, channel))
            if span is not None:  # no warm-up: the span is known before the first sample
                stream.low, stream.step = self._span_levels(span)
                stream.span = True
                stream.memory = ContextMemory(self.max_left_facts, self.max_active, self.max_contexts)
        return stream

    def _feed(self, stream: _Stream, samples: FloatArray) -> float:
        """Step the stream through its new samples; the highest reported score (NaN: no verdict)."""
        best = math.nan
        for value in samples.tolist():
            if math.isnan(value):
                continue
            if stream.memory is None:
                stream.warmup.append(value)
                if len(stream.warmup) >= self.warmup:
                    self._learn_range(stream)
                continue
            reported = self._step(stream, value)
            if stream.relearning:  # a memory that an earlier version started over, restored mid-relearning
                stream.relearning -= 1
            else:
                best = reported if math.isnan(best) else max(best, reported)
        return best

    def _learn_range(self, stream: _Stream) -> None:
        low, high = min(stream.warmup), max(stream.warmup)
        floor = max(self.min_scale, RELATIVE_FLOOR * max(abs(low), abs(high)))
        span = max(high - low, floor)
        stream.low = low - self.range_margin * span
        stream.step = span * (1 + 2 * self.range_margin) / (2**self.bits - 1)
        stream.memory = ContextMemory(self.max_left_facts, self.max_active, self.max_contexts)
        for value in stream.warmup:  # the memory learns the warm-up too; those rows get no verdict
            self._step(stream, value)
        stream.warmup = []

    def _step(self, stream: _Stream, value: float) -> float:
        assert stream.memory is not None
        level = math.floor((value - stream.low) / stream.step)
        if stream.span:  # CAD OSE's levels 0 .. 2^bits - 1; beyond the span is its edge
            level = min(max(level, 0), 2**self.bits - 1)
        raw = stream.memory.step(level_facts(level, self.bits))
        reported = raw if stream.since_high > self.rest else 0.0
        stream.since_high = 1 if raw >= self.rest_level else stream.since_high + 1
        return reported

    # -- per-stream state -----------------------------------------------------------------------------

    def learning(self, slots: IntArray) -> tuple[IntArray, int]:
        """Warm-up samples per slot, of its most-fed channel (a state saved by an earlier version while its
        memory was relearning after starting over counts the same)."""
        seen = np.zeros(len(slots), np.int64)
        index = {slot: row for row, slot in enumerate(slots.tolist())}
        for (slot, _), stream in self._streams.items():
            row = index.get(slot)
            if row is not None:
                done = len(stream.warmup) if stream.memory is None else self.warmup - stream.relearning
                seen[row] = max(int(seen[row]), done)
        return seen, self.warmup

    def reset_streams(self) -> None:
        super().reset_streams()
        self._streams = {}  # the configured spans stay: they belong to the streams' devices

    def stream_state(self) -> dict[str, Any]:
        return {
            f"{slot}/{channel}": {
                "warmup": stream.warmup,
                "low": stream.low if stream.memory is not None else None,
                "step": stream.step if stream.memory is not None else None,
                "since_high": stream.since_high,
                "relearning": stream.relearning,
                "span": stream.span,
                "memory": None if stream.memory is None else stream.memory.to_json(),
            }
            for (slot, channel), stream in self._streams.items()
        }

    def load_stream_state(self, state: Mapping[str, Any]) -> None:
        streams: dict[tuple[int, int], _Stream] = {}
        for key, saved in state.items():
            where = f"state.detectors.{self.id}.streams.{key}"
            try:
                slot, channel = (int(part) for part in str(key).split("/"))
                if not 0 <= channel < len(self.channels):
                    raise ValueError(f"channel {channel} of {len(self.channels)}")
                stream = _Stream()
                stream.warmup = [float(v) for v in saved["warmup"]]
                stream.since_high = int(saved["since_high"])
                stream.relearning = int(saved.get("relearning", 0))
                stream.span = bool(saved.get("span", False))
                if saved["memory"] is not None:
                    stream.low, stream.step = float(saved["low"]), float(saved["step"])
                    stream.memory = ContextMemory.from_json(
                        saved["memory"], self.max_left_facts, self.max_active, self.max_contexts
                    )
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(where, f"unreadable: {exc}") from exc
            streams[(slot, channel)] = stream
        self._streams = streams
