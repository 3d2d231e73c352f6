"""Throughput of the real pipeline: flat out (a backlog in the queue) and at real rates, plus the ratio of
the agent's window throughput to the bare runtime's on the same batches.

Flat out: readings are handed to `Pipeline.ingest` in batches of up to 2,001, as the daemon drains its
queue (`first + 2,000`), with the daemon's per-reading `Health.saw`. The first `warmup_s` simulated
seconds fill the windows untimed; the rest is timed in CPU seconds of the calling thread around `ingest` (the
pipeline and the runtime are single-threaded, so these are seconds of one core; making up the readings
is not counted). µs per sample = CPU / samples; streams
per core = 10^6 / (µs per sample × samples per second of one stream).

Real rate: a loop releases each reading at its simulated time (speed 1) and ingests whatever is due,
like the daemon's pipeline task turning on its queue (at most once every `MIN_TURN_S`); the figure
is CPU seconds per wall second, i.e. the share of one core those N streams cost, and µs per sample
at that (small-batch) regime.

Runtime ratio: during a flat-out run every batch handed to the backend is recorded; afterwards the
same batches are replayed through the bare `backend.run` and timed the same way. Windows per CPU
second through the whole agent divided by windows per CPU second of the bare runtime is the share of
time the model gets; 1 - ratio is the overhead of everything around it (ingest, gating, windows,
normalisation, scoring arithmetic, alarm books).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.health import Health
from agent.inference.detector import AutoencoderDetector
from agent.pipeline import Pipeline
from agent.readings import Reading
from agent.session import MIN_TURN_S
from tools.bench.scenarios import Workload, ecg_config, vitals_config

BATCH = 2_001  # the daemon takes one reading, then drains up to 2,000 more


@dataclass(frozen=True, slots=True)
class Throughput:
    kind: str
    streams: int
    samples: int
    readings: int
    cpu_s: float
    events: int

    @property
    def us_per_sample(self) -> float:
        return 1e6 * self.cpu_s / self.samples

    @property
    def us_per_reading(self) -> float:
        return 1e6 * self.cpu_s / self.readings

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.cpu_s


def _pseudonym(device: str, prefix: str = "d") -> str:
    """A readable stand-in for the keyed pseudonym (the HMAC is not what is measured)."""
    return f"{prefix}-{device}"


def build(load: Workload, workdir: Path, backend: str = "onnx") -> Pipeline:
    cfg = (
        vitals_config(workdir)
        if load.name == "vitals"
        else ecg_config(workdir, backend, model=load.ecg_model)
    )
    return Pipeline(cfg, _pseudonym)


CHUNK_READINGS = 200_000  # generated (untimed) per chunk


def _chunk_steps(load: Workload) -> int:
    return max(1, CHUNK_READINGS // load.streams)


def _ingest(pipeline: Pipeline, health: Health, readings: list[Reading]) -> tuple[float, int]:
    """(CPU seconds of this thread, events) for the readings in daemon-sized batches."""
    t0 = time.thread_time()
    events = 0
    for i in range(0, len(readings), BATCH):
        batch = readings[i : i + BATCH]
        for reading in batch:
            health.saw(reading)
        events += len(pipeline.ingest(batch))
    return time.thread_time() - t0, events


def _warm(pipeline: Pipeline, health: Health, load: Workload, warmup_s: float) -> int:
    first = load.step_of(warmup_s)
    for chunk in load.chunks(0, first, _chunk_steps(load)):
        _ingest(pipeline, health, chunk)
    return first


def flat_out(load: Workload, warmup_s: float, backend: str = "onnx") -> Throughput:
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = build(load, Path(tmp), backend)
        health = Health()
        first = _warm(pipeline, health, load, warmup_s)
        cpu, events, samples, readings = 0.0, 0, 0, 0
        for chunk in load.chunks(first, load.steps, _chunk_steps(load)):
            spent, n_events = _ingest(pipeline, health, chunk)
            cpu += spent
            events += n_events
            readings += len(chunk)
            samples += sum(r.n_samples for r in chunk)
    return Throughput(load.name, load.streams, samples, readings, cpu, events)


def real_rate(load: Workload, warmup_s: float, backend: str = "onnx") -> tuple[float, float]:
    """(share of one core, µs per sample) for the workload played at speed 1 after the warm-up.

    Only the pipeline's CPU counts (thread CPU around ingest); making up the readings does not."""
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = build(load, Path(tmp), backend)
        health = Health()
        first = _warm(pipeline, health, load, warmup_s)
        cpu, samples = 0.0, 0
        real0 = last_turn = time.monotonic()
        t_first: float | None = None
        for chunk in load.chunks(first, load.steps, max(1, round(1.0 / load.step_s))):
            if t_first is None:
                t_first = chunk[0].wall_time
                real0 = time.monotonic()
            i = 0
            while i < len(chunk):
                now = time.monotonic() - real0
                j = i
                while j < len(chunk) and chunk[j].wall_time - t_first <= now:
                    j += 1
                if j > i:
                    spent, _ = _ingest(pipeline, health, chunk[i:j])
                    cpu += spent
                    samples += sum(r.n_samples for r in chunk[i:j])
                    i = j
                    last_turn = time.monotonic()
                if i < len(chunk):
                    # Like the daemon's pipeline task: wait for the next reading, and turn at most
                    # every MIN_TURN_S.
                    due = real0 + chunk[i].wall_time - t_first
                    ahead = max(due, last_turn + MIN_TURN_S) - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
        wall = time.monotonic() - real0
    return cpu / wall, 1e6 * cpu / samples


@dataclass(frozen=True, slots=True)
class RuntimeRatio:
    windows: int
    batches: int
    agent_cpu_s: float  # the whole pipeline, flat out
    scoring_cpu_s: float  # inside AutoencoderDetector.score (normalise, model, error, shares)
    bare_cpu_s: float  # the same batches through the bare backend.run

    @property
    def ratio(self) -> float:
        return self.bare_cpu_s / self.agent_cpu_s

    @property
    def scoring_ratio(self) -> float:
        return self.bare_cpu_s / self.scoring_cpu_s


def runtime_ratio(load: Workload, warmup_s: float, backend: str = "onnx") -> RuntimeRatio:
    """Agent vs bare runtime, side by side on the batches of one flat-out run."""
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = build(load, Path(tmp), backend)
        detector = next(d for d in pipeline.detectors if isinstance(d, AutoencoderDetector))
        health = Health()
        first = _warm(pipeline, health, load, warmup_s)
        run = detector.model.backend.run
        batches: list[np.ndarray[Any, Any]] = []
        scoring = [0.0]

        def recording(batch: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
            batches.append(batch.copy())
            return run(batch)

        score = detector.score

        def timed_score(block: Any) -> Any:
            t = time.thread_time()
            try:
                return score(block)
            finally:
                scoring[0] += time.thread_time() - t

        detector.model.backend.run = recording  # type: ignore[method-assign]
        detector.score = timed_score  # type: ignore[method-assign]
        agent_cpu = 0.0
        for chunk in load.chunks(first, load.steps, _chunk_steps(load)):
            agent_cpu += _ingest(pipeline, health, chunk)[0]
        detector.model.backend.run = run  # type: ignore[method-assign]
        # The recording copy is inside the agent's time but not the bare runtime's: take it out.
        copy_cpu = _cpu(lambda: [b.copy() for b in batches])
        t0 = time.thread_time()
        for batch in batches:
            run(batch)
        bare_cpu = time.thread_time() - t0
    windows = sum(b.shape[0] for b in batches)
    return RuntimeRatio(windows, len(batches), agent_cpu - copy_cpu, scoring[0] - copy_cpu, bare_cpu)


def _cpu(fn: Callable[[], object]) -> float:
    t0 = time.thread_time()
    fn()
    return time.thread_time() - t0
