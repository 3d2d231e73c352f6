"""Live calibration: a detector with a `calibration` table learns its threshold on the gateway.

While the baseline runs, every score the detector gives live is kept (one float per stream and hop,
never raw windows) and the detector keeps alarming with its configured threshold: a missed alarm is
the worst failure, so learning never silences anything. The baseline is counted in stream time of
data that passed the quality gate (new samples with at least one of the detector's channels valid,
divided by the configured `rate_hz`), per stream: a gap, a disconnected device or a gated-out stretch
adds nothing. It is complete when one of the detector's streams has `baseline_s` of such data; every
stream's scores are in the sample, so more devices give a larger sample, not a shorter period.

Scores of a stream during an alarm episode of one of the detector's rules (from its onset to its end)
are left out when the baseline completes if, with them, the learned threshold would be above the
configured one: a genuine event in the baseline must not teach the detector that events are normal
(one 30 s episode on one of 12 streams raised a 0.5/h threshold ninefold). If the threshold learned
with them is still at or below the configured one, they stay in: every score the configured
threshold alarmed on still exceeds it, so nothing the detector alarmed on was learnt as normal, and
those exceedances are part of the tail the target accepts (left out, they lowered the threshold and
a 36/h target gave 68/h, audit audml finding 6). Hops above the threshold that the alarm machine
does not confirm always stay in.

Then the threshold is set with `threshold_for_rate` (through the detector's `_calibrated` hook, which
may only raise the configured one) at the mean stream time per collected score, logged, and kept in
the detector's saved state with a digest of its configuration; a changed configuration (type,
stream, channels, rate, params, calibration target, model version) makes the saved threshold void
and learning starts again. A restart during the baseline starts the baseline again: the partial
sample is not saved, because the state is written at every heartbeat and a long baseline's scores
would be rewritten to flash every interval.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from agent.config.schema import CalibrationConfig, DetectorConfig
from agent.detectors.base import FloatArray, IntArray, StreamingDetector
from agent.detectors.calibration import MIN_EXCEEDANCES, exceedance_probability, threshold_for_rate
from agent.errors import ConfigError
from agent.events import AlarmEvent, Phase, iso_time

log = logging.getLogger(__name__)

# Per detector: 131 072 scores, each with its time and stream slot, are 3.1 MB (36 h of one stream at
# a 1 s hop, or 1 h of 36 streams). Beyond that the sample is thinned to every 2nd, 4th, ... score: a
# systematic sample of the same score distribution, so the quantile stays unbiased and memory bounded.
MAX_BASELINE_SCORES = 131_072


def config_digest(spec: DetectorConfig, model_version: str = "") -> str:
    """A digest of everything that decides a detector's scores and its calibration target."""
    payload = {
        "type": spec.type,
        "stream": spec.stream,
        "channels": list(spec.channels),
        "rate_hz": spec.rate_hz,
        "params": spec.params,
        "calibration": None
        if spec.calibration is None
        else [spec.calibration.baseline_s, spec.calibration.target_false_alarms_per_hour],
        "model": model_version,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def calibration_problem(spec: DetectorConfig, detector: StreamingDetector) -> ConfigError | None:
    """Why `spec.calibration` cannot work for this detector, with its key path; None when it can."""
    cal = spec.calibration
    if cal is None:
        return None
    where = f"detectors.{spec.id}.calibration"
    refusal = detector.calibration_refusal()
    if refusal:
        article = "an" if spec.type[:1] in ("a", "e", "i", "o", "u") else "a"
        return ConfigError(
            where, f"nothing to calibrate for {article} {spec.type} detector: {refusal}; remove this key"
        )
    hop_s = detector.hop / spec.rate_hz
    try:
        exceedance_probability(cal.target_false_alarms_per_hour, hop_s)
    except ValueError:
        return ConfigError(
            f"{where}.target_false_alarms_per_hour",
            f"{cal.target_false_alarms_per_hour:g}/h at one score per {hop_s:g} s would alarm on every "
            f"score; must be below {3600.0 / hop_s:g}",
        )
    if cal.baseline_s / hop_s < MIN_EXCEEDANCES:
        return ConfigError(
            f"{where}.baseline_s",
            f"{cal.baseline_s:g} s gives {math.floor(cal.baseline_s / hop_s)} score(s) at one per "
            f"{hop_s:g} s; calibration needs at least {MIN_EXCEEDANCES}: use baseline_s >= "
            f"{MIN_EXCEEDANCES * hop_s:g}",
        )
    return None


class ScoreSample:
    """Rows of (score, time, slot) appended in time order, at most `capacity` (even) kept: when full,
    every second row is dropped and from then on only every `stride`-th arriving row is kept."""

    def __init__(self, capacity: int = MAX_BASELINE_SCORES) -> None:
        self.capacity = capacity
        self.stride = 1
        self.seen = 0
        self._data = np.empty((min(capacity, 4096), 3))
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, scores: FloatArray, times: FloatArray | None = None, slots: IntArray | None = None) -> None:
        rows = np.empty((scores.size, 3))
        rows[:, 0] = scores
        rows[:, 1] = np.nan if times is None else times
        rows[:, 2] = -1 if slots is None else slots
        index = self.seen + np.arange(scores.size)
        self.seen += scores.size
        kept = rows[index % self.stride == 0] if self.stride > 1 else rows
        while kept.shape[0]:
            if self._size == self.capacity:
                self._data[: self._size // 2] = self._data[: self._size : 2][: self._size // 2]
                self._size //= 2
                self.stride *= 2
                kept = kept[::2]
                continue
            if self._size + kept.shape[0] > self._data.shape[0]:
                size = min(self.capacity, max(2 * self._data.shape[0], self._size + kept.shape[0]))
                grown = np.empty((size, 3))
                grown[: self._size] = self._data[: self._size]
                self._data = grown
            take = min(kept.shape[0], self.capacity - self._size)
            self._data[self._size : self._size + take] = kept[:take]
            self._size += take
            kept = kept[take:]

    def shift_times(self, slot: int, delta: float) -> None:
        """Move the times of the slot's rows by `delta` seconds (its clock stepped)."""
        rows = self._data[: self._size]
        rows[rows[:, 2] == slot, 1] += delta

    def values(self) -> FloatArray:
        """The kept scores, in arrival order."""
        return self._data[: self._size, 0]

    def rows(self) -> FloatArray:
        """(n, 3): score, end time of its window, stream slot."""
        return self._data[: self._size]


class LiveCalibration:
    """The baseline of one detector: progress, collected scores, and the calibrated result."""

    def __init__(
        self, detector: StreamingDetector, config: CalibrationConfig, rate_hz: float, digest: str
    ) -> None:
        self.detector = detector
        self.config = config
        self.rate_hz = rate_hz
        self.digest = digest
        self.configured_threshold = detector.threshold
        self.learning = True
        self.calibrated_at: float | None = None  # Unix time of the newest sample of the baseline
        self.learned: float | None = None  # before `_calibrated` combined it with the configured one
        self.scores_used = 0
        self._restart()

    def _restart(self) -> None:
        self._sample = ScoreSample()
        self._valid_s = np.zeros(8)  # per slot: stream seconds of gated-in data behind scored hops
        self._scored_samples = 0  # stream samples behind the collected scores (gated or not)
        self.alarms_during_baseline = 0
        self._open: dict[tuple[int, str], float] = {}  # (slot, condition) -> onset of an open episode
        self._episodes: list[tuple[int, float, float]] = []  # (slot, onset, end) of ended episodes

    @property
    def progress(self) -> float:
        if not self.learning:
            return 1.0
        return min(1.0, float(self._valid_s.max()) / self.config.baseline_s)

    def observe(self, slots: IntArray, new: FloatArray, scores: FloatArray, end_times: FloatArray) -> None:
        """One scoring call while learning: `new` (S, k, C) are the samples new in it, `scores` (S,).

        For a causal detector the scores it gives live, hop after hop, are exactly those
        `replay_scores` would give on the same recording (its windows slide at the same hop, and a
        score depends only on its window and earlier state), so calibrating from them is
        `StreamingDetector.calibrate` without keeping the recording."""
        if slots.size == 0:
            return
        valid = (~np.isnan(new)).any(axis=2).sum(axis=1)  # (S,) samples with a channel past the gate
        top = int(slots.max())
        if top >= self._valid_s.size:
            self._valid_s = np.concatenate([self._valid_s, np.zeros(max(top + 1, 2 * self._valid_s.size))])
        self._valid_s[slots] += valid / self.rate_hz
        self._sample.add(np.asarray(scores, dtype=np.float64), end_times, slots)
        self._scored_samples += new.shape[1] * slots.size
        if self._valid_s.max() >= self.config.baseline_s:
            self._complete(float(end_times.max()))

    def note_events(self, events: list[AlarmEvent], slot_of: Mapping[tuple[str, str], int]) -> None:
        """Alarm events of the detector's rules while learning (raised with the configured threshold);
        `slot_of` maps (device pseudonym, stream name) to the stream's slot. Episodes are left out of
        the sample when the baseline completes."""
        for event in events:
            slot = slot_of.get((event.device, event.stream))
            if slot is None:
                continue
            key = (slot, event.condition)
            if event.phase is Phase.START:
                self.alarms_during_baseline += 1
                self._open[key] = event.onset_time
            elif event.phase is Phase.END and key in self._open:
                onset = self._open.pop(key)
                end = event.end_time if event.end_time is not None else event.detection_time
                self._episodes.append((slot, onset, end))

    def shift_times(self, slot: int, delta: float) -> None:
        """The clock of the slot's readings stepped by `delta` s: the times its collected scores and
        alarm episodes were noted at move with it, so episodes still leave out the right scores."""
        self._sample.shift_times(slot, delta)
        for key in [k for k in self._open if k[0] == slot]:
            self._open[key] += delta
        self._episodes = [(s, a + delta, b + delta) if s == slot else (s, a, b) for s, a, b in self._episodes]

    def _normal_scores(self) -> FloatArray:
        """The collected scores outside every alarm episode (open ones run to the end)."""
        rows = self._sample.rows()
        keep = np.ones(rows.shape[0], dtype=bool)
        episodes = self._episodes + [(slot, onset, math.inf) for (slot, _), onset in self._open.items()]
        for slot, onset, end in episodes:
            keep &= ~((rows[:, 2] == slot) & (rows[:, 1] >= onset) & (rows[:, 1] <= end))
        normal: FloatArray = rows[keep, 0]
        return normal

    def _baseline_scores(self, target: float, seconds_per_score: float) -> FloatArray:
        """The sample the threshold is learnt from: every score if the threshold learnt from all of them
        is at or below the configured one (nothing alarmed on is taught as normal), else the scores
        outside the alarm episodes (see the module docstring)."""
        everything = self._sample.values()
        normal = self._normal_scores()
        if normal.size == everything.size:
            return normal
        try:
            with_episodes = threshold_for_rate(everything, target, seconds_per_score)
        except ValueError:
            return normal
        return everything if with_episodes <= self.configured_threshold else normal

    def _complete(self, at: float) -> None:
        seconds_per_score = self._scored_samples / self._sample.seen / self.rate_hz
        target = self.config.target_false_alarms_per_hour
        scores = self._baseline_scores(target, seconds_per_score)
        try:
            learned = self.detector.calibrate_from_scores(scores, target, seconds_per_score)
        except ValueError as exc:  # e.g. almost every hop without a verdict: keep alarming, learn again
            log.warning(
                "detector %s: baseline complete but no threshold can be set (%s); keeping the configured"
                " threshold and learning again",
                self.detector.id,
                exc,
            )
            self._restart()
            return
        self.learning = False
        self.learned = learned
        self.calibrated_at = at
        self.scores_used = self._sample.seen
        left_out = len(self._sample) - scores.size
        log.info(
            "detector %s calibrated: threshold %.4g (configured %.4g, learned %.4g) from %d scores, "
            "target %g false alarms/h per stream",
            self.detector.id,
            self.detector.threshold,
            self.configured_threshold,
            learned,
            self.scores_used,
            target,
        )
        if self.alarms_during_baseline and left_out:
            log.warning(
                "detector %s: %d alarm episode(s) during its baseline; their %d score(s) were left out",
                self.detector.id,
                self.alarms_during_baseline,
                left_out,
            )
        elif self.alarms_during_baseline:
            log.info(
                "detector %s: %d alarm episode(s) during its baseline; their scores were kept (the"
                " threshold learnt with them is not above the configured %.4g)",
                self.detector.id,
                self.alarms_during_baseline,
                self.configured_threshold,
            )
        self._sample = ScoreSample(capacity=2)  # free the scores; only the result is kept

    # -- persistence and status ------------------------------------------------------------------------

    def state(self) -> dict[str, Any] | None:
        """The calibrated result for the detector's saved state; None while learning (not saved)."""
        if self.learning:
            return None
        return {
            "digest": self.digest,
            "threshold": self.detector.threshold,
            "learned": self.learned,
            "at": self.calibrated_at,
            "scores": self.scores_used,
            "alarms_during_baseline": self.alarms_during_baseline,
        }

    def restore(self, saved: Any) -> None:
        """Take a saved result back if it belongs to this configuration; otherwise the configured
        threshold applies (whatever `Detector.load_state` restored) and the baseline starts again."""
        self.learning = True
        self.detector.threshold = self.configured_threshold
        self._restart()
        if not isinstance(saved, Mapping) or saved.get("digest") != self.digest:
            return
        threshold, at = saved.get("threshold"), saved.get("at")
        if not (_finite(threshold) and _finite(at)):
            log.warning("detector %s: unreadable saved calibration ignored; learning again", self.detector.id)
            return
        self.detector.threshold = float(threshold)  # type: ignore[arg-type]  # checked by _finite
        self.learning = False
        self.calibrated_at = float(at)  # type: ignore[arg-type]
        self.learned = float(saved["learned"]) if _finite(saved.get("learned")) else None
        self.scores_used = int(saved["scores"]) if _finite(saved.get("scores")) else 0
        self.alarms_during_baseline = (
            int(saved["alarms_during_baseline"]) if _finite(saved.get("alarms_during_baseline")) else 0
        )

    def status(self) -> dict[str, Any]:
        """For the heartbeat and `edge-agent status`."""
        if self.learning:
            return {
                "state": "learning",
                "progress": round(self.progress, 4),
                "baseline_s": self.config.baseline_s,
                "alarms_during_baseline": self.alarms_during_baseline,
            }
        assert self.calibrated_at is not None
        return {
            "state": "calibrated",
            "threshold": _rounded(self.detector.threshold),
            "configured_threshold": _rounded(self.configured_threshold),
            "at": iso_time(self.calibrated_at),
            "alarms_during_baseline": self.alarms_during_baseline,
        }


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _rounded(value: float) -> float | None:
    return float(f"{value:.6g}") if math.isfinite(value) else None
