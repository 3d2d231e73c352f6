"""Run an agent configuration over one labelled series through the daemon's own pipeline.

The series becomes `Reading`s of one simulated device, in time order, exactly as a replay source would
deliver them, and goes through `agent.pipeline.Pipeline.ingest` (quality gate, windows, detectors,
alarm books). Every detector's `score` is tapped on its way out, so the per-sample scores are those the
pipeline computed, not a re-implementation. Optionally each detector is first calibrated on the series'
first rows (its configured baseline period) with `Detector.calibrate`, as the daemon would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path
from typing import TypeVar

import numpy as np

from agent.config.loader import load_config
from agent.config.schema import AgentConfig, BeatsConfig, DeviceConfig
from agent.detectors.base import Detector, ScoreBlock, WindowBlock
from agent.errors import ConfigError
from agent.events import AlarmEvent, Phase
from agent.pipeline import Pipeline
from agent.readings import Reading
from tools.evaluate.datasets import FloatArray, Series

DEVICE = "eval-device"
BLIND_LOG = "agent.pipeline.blind"  # channel_missing's ERROR line, once per pipeline (agent.pipeline.blind)


class _SaidOnce(logging.Filter):
    """Lets each distinct message through once in this process. An evaluation builds a fresh pipeline per
    case or series, and each told channel_missing's ERROR anew: a detector reading a channel the data
    lacks (a real mistake of the config) was said per case, for as many cases as the run has."""

    def __init__(self) -> None:
        super().__init__()
        self._said: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self._said:
            return False
        self._said.add(message)
        return True


_SAID_ONCE = _SaidOnce()


@contextlib.contextmanager
def blind_said_once() -> Iterator[None]:
    """Within it, channel_missing's ERROR line is said once per distinct line in this process (each
    worker of a `--jobs` pool says it once too), however many pipelines the evaluation builds. Only
    within it: the daemon's own pipelines, and their tests, keep their line per pipeline."""
    logger = logging.getLogger(BLIND_LOG)
    logger.addFilter(_SAID_ONCE)
    try:
        yield
    finally:
        logger.removeFilter(_SAID_ONCE)


def stage_device(rr_stream: str) -> DeviceConfig:
    """A stand-in for the device whose ECG a tool's beats stage reads (`agent.ecg.rr_from_ecg`), for a
    config whose own devices are dropped: its `[devices.beats]` tells the pipeline what the daemon knows of
    such a device, that the stage gives its channels on `rr_stream`, some of them late (qrs_shape once its
    templates are made). Without it every case logged channel_missing's ERROR for qrs_shape and qrs_core
    (72 lines in `vt_runs --part cpsc`, 2026-12-01), by design of the replay, not of the config. A
    detector reading a channel the stage never gives is still told (`blind_said_once`)."""
    beats = BeatsConfig(rr_stream=rr_stream)
    return DeviceConfig(id=DEVICE, kind="wearable", transport="replay", beats=beats)

Task = TypeVar("Task")
Result = TypeVar("Result")


def pool_map(fn: Callable[[Task], Result], tasks: Sequence[Task], jobs: int) -> list[Result]:
    """`fn` of each task, in order, in `jobs` worker processes (in this one when jobs is 1): one
    evaluation job per series or setting, each picklable and independent."""
    if jobs > 1:
        with Pool(jobs) as pool:
            return pool.map(fn, tasks, chunksize=1)
    return [fn(t) for t in tasks]


@dataclass(slots=True)
class Replayed:
    series: Series
    scores: dict[str, FloatArray]  # detector id -> (T,) score at each sample (NaN: none)
    thresholds: dict[str, float]  # detector id -> its configured or calibrated threshold
    # detector id -> (T,) the threshold each score was judged against: a per-stream adapted one
    # (autoencoder adapt_rows, window_pca) differs from the detector's own
    judged_against: dict[str, FloatArray] = field(default_factory=dict)
    events: list[AlarmEvent] = field(default_factory=list)
    uncalibrated: list[str] = field(default_factory=list)  # detectors left at their configured threshold

    @property
    def starts(self) -> FloatArray:
        """Detection times of alarm START events (physiological/equipment conditions)."""
        return np.array(
            sorted(
                e.detection_time
                for e in self.events
                if e.phase is Phase.START and e.kind.value != "technical"
            )
        )

    def ensemble(self) -> FloatArray:
        """Per-sample max over detectors of score / threshold (> 1 where any detector exceeds)."""
        parts = []
        for d, s in self.scores.items():
            limit = self.judged_against.get(d, np.full(len(s), self.thresholds[d]))
            with np.errstate(invalid="ignore", divide="ignore"):
                parts.append(np.where(np.isfinite(limit) & (limit > 0), s / limit, np.nan))
        if not parts:
            return np.full(len(self.series.times), np.nan)
        with np.errstate(invalid="ignore"):
            stacked = np.stack(parts)
            out: FloatArray = np.where(
                np.isnan(stacked).all(axis=0), np.nan, np.nanmax(np.nan_to_num(stacked, nan=-np.inf), axis=0)
            )
        return out


def readings(series: Series, stream: str, period_s: float = 0.0) -> Iterator[Reading]:
    """One reading per sample, in time order (a beat stream is irregular: period 0)."""
    ident = f"{DEVICE}/{stream}"
    t0 = float(series.times[0])
    for t, row in zip(series.times, series.values, strict=True):
        yield Reading(ident, series.channels, row[None, :], float(t), float(t) - t0, period_s)


@dataclass(frozen=True, slots=True)
class Episode:
    """One alarm episode, timed by the readings that raised its START and END (None: still open)."""

    condition: str
    start: float
    end: float | None


def timed_episodes(
    config: AgentConfig, timed: Iterable[tuple[Reading, float]], conditions: Collection[str]
) -> list[Episode]:
    """The episodes of `conditions` a fresh pipeline raises on the readings, fed one at a time, each
    START and END timed by the time given with the reading that raised it.

    Not `replay`, which feeds a whole `Series` in one `ingest` call: its events give the same STARTs, but
    an END says only its `end_time` (where the clearing began), not the beat that raised it
    `clear_after_s` later (30 s for AF, 60 s for PVCs: on MIT-BIH 105, 106, 119, 30-122 s less alarmed
    time per rule that way, 2026-11-30); and a stage's readings (pause readings with hr alone among
    them) are no Series."""
    pipeline = Pipeline(config, lambda device: device)
    open_at: dict[tuple[str, str], float] = {}
    out: list[Episode] = []
    with blind_said_once():
        for reading, at in timed:
            for event in pipeline.ingest([reading]):
                if event.condition not in conditions:
                    continue
                key = (event.condition, event.id)
                if event.phase is Phase.START:
                    open_at[key] = at
                elif event.phase is Phase.END and key in open_at:
                    out.append(Episode(event.condition, open_at.pop(key), at))
    out += [Episode(condition, start, None) for (condition, _), start in open_at.items()]
    return sorted(out, key=lambda e: e.start)


def _tap(detector: Detector, sink: list[tuple[FloatArray, FloatArray, FloatArray]]) -> None:
    original = detector.score

    def tapped(block: WindowBlock) -> ScoreBlock:
        out = original(block)
        sink.append((block.end_times.copy(), out.scores.copy(), out.thresholds.copy()))
        return out

    object.__setattr__(detector, "score", tapped)


def calibrate(
    pipeline: Pipeline,
    series: Series,
    rows: int,
    target_per_hour: float,
    hop_s: float,
    own_targets: dict[str, float] | None = None,
) -> list[str]:
    """Calibrate every detector on the series' first `rows` samples (its baseline period) at
    `target_per_hour`, or at its own target in `own_targets`; returns the ids of detectors that could
    not be (baseline shorter than their window): they keep their config."""
    skipped = []
    for detector in pipeline.detectors:
        target = (own_targets or {}).get(detector.id, target_per_hour)
        columns = [series.channels.index(c) for c in detector.channels]
        normal = series.values[None, :rows, columns]
        block = WindowBlock(normal, np.zeros(1, np.int64), series.times[rows - 1 : rows].copy(), 1)
        try:
            detector.calibrate(block, target, hop_s * detector.hop)
        except ConfigError:
            skipped.append(detector.id)
    return skipped


def replay(
    config: AgentConfig,
    series: Series,
    *,
    calibrate_rows: int = 0,
    target_per_hour: float = 1.0,
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> Replayed:
    """Feed `series` through a fresh pipeline built from `config`; the detectors' stream name is used.
    `ranges`: the replayed device's configured channel spans (`[[devices]] ranges`), none by default."""
    streams = {d.stream for d in config.detectors}
    if len(streams) != 1:
        raise ValueError(f"evaluation expects detectors on one stream, config has {sorted(streams)}")
    stream = streams.pop()
    rates = {d.rate_hz for d in config.detectors}
    spans = tuple((ranges or {}).items())  # pairs, as a loaded config holds them
    device = DeviceConfig(id=DEVICE, kind="equipment", transport="replay", ranges=spans)
    config = dataclasses.replace(config, devices=(device,) if ranges else ())
    own_targets = {
        d.id: d.calibration.target_false_alarms_per_hour for d in config.detectors if d.calibration
    }
    if calibrate_rows:
        # A detector's own `calibration` target replaces `target_per_hour`, on the dataset's calibration
        # rows instead of its baseline_s: the pipeline must not learn again live.
        detectors = tuple(dataclasses.replace(d, calibration=None) for d in config.detectors)
        config = dataclasses.replace(config, detectors=detectors)
    pipeline = Pipeline(config, lambda device: device)
    uncalibrated = []
    if calibrate_rows:
        uncalibrated = calibrate(
            pipeline, series, calibrate_rows, target_per_hour, 1.0 / max(rates), own_targets
        )
    sinks: dict[str, list[tuple[FloatArray, FloatArray, FloatArray]]] = {}
    for detector in pipeline.detectors:
        _tap(detector, sinks.setdefault(detector.id, []))
    with blind_said_once():
        events = pipeline.ingest(readings(series, stream))
    scores: dict[str, FloatArray] = {}
    judged_against: dict[str, FloatArray] = {}
    for detector_id, sink in sinks.items():
        out = np.full(len(series.times), np.nan)
        limits = np.full(len(series.times), np.nan)
        for times, values, thresholds_at in sink:
            index = np.searchsorted(series.times, times)
            ok = (index < len(series.times)) & np.isclose(
                series.times[np.minimum(index, len(series.times) - 1)], times
            )
            out[index[ok]] = values[ok]
            limits[index[ok]] = thresholds_at[ok]
        scores[detector_id] = out
        judged_against[detector_id] = limits
    thresholds = {d.id: float(getattr(d, "threshold", np.nan)) for d in pipeline.detectors}
    return Replayed(series, scores, thresholds, judged_against, events, uncalibrated)


ScoresJob = tuple[Path, str, dict[str, float], Series]


def _scores_job(job: ScoresJob) -> FloatArray:
    config_path, detector_type, overrides, series = job
    config = load_config(config_path)
    detectors = tuple(
        dataclasses.replace(d, params={**d.params, **overrides}) if d.type == detector_type else d
        for d in config.detectors
    )
    result = replay(dataclasses.replace(config, detectors=detectors), series)
    (scores,) = [result.scores[d.id] for d in detectors if d.type == detector_type]
    return scores


def scores_with_params(
    config_path: Path, detector_type: str, work: Sequence[tuple[dict[str, float], Series]], jobs: int
) -> list[FloatArray]:
    """The scores of the config's one detector of `detector_type` on each (params overrides, series) of
    `work`, each series replayed through a fresh pipeline, in `jobs` worker processes (a grid of
    settings over a data set: tools.evaluate.af_fit, pvc_gateway)."""
    tasks = [(config_path, detector_type, overrides, series) for overrides, series in work]
    return pool_map(_scores_job, tasks, jobs)
