"""Latency from a sample's arrival to its alarm's PUBACK, through the daemon's own loop and a real broker.

The daemon's `_Session` is assembled as `Agent` does it (Pipeline, Outbox, MqttUplink, the session's
pipeline task `_process`, which drains the queue in batches, commits events to the outbox with fsync and
wakes the uplink, and its heartbeat task, which every `heartbeat_interval_s` (30 s) also saves the whole
pipeline state), against a private mosquitto from `LocalBroker` (`running_daemon`). Only the sources are
replaced: a feeder task (`play`) puts every simulated vitals reading into the session's queue at its due
time (speed 1, with the streams' phases spread over the second). A reading's *arrival* is the moment it
enters the queue. `tools.bench.capacity` drives the same assembly to find the daemon's capacity.

Load: `load` × a capacity, in 1 Hz streams. The base is the whole daemon's capacity (`base="daemon"`:
the most streams this assembly sustains at real rate, `tools.bench.capacity`) or, as before 2026-11-30,
the pipeline's alone (`base="pipeline"`: flat-out vitals samples per CPU second, without the outbox,
paho, the feeder or the state save). The pipeline figure is always measured and reported beside it. The
windows are warmed (60 s simulated, straight through the pipeline) before the clock starts, so every
detector is scoring.

GC: the daemon process paces the garbage collector (`agent.gc_pacing`); so does this run unless
`gc_pacing` is off, with one settle pass after the warm-up, as a daemon that has run for 30 s has had.
Every collection during the timed run is recorded (count and longest pause per generation).

Probes: `probes_per_s` times a second, one quiet stream reports HR 150 bpm for one sample. The
latency config starts alarms on the first abnormal hop (min_duration 0), so that sample's tachycardia
START is what gets committed and published; the outbox's `delivered` call, made when the PUBACK comes
back, stops the clock. Percentiles are over all probes of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from agent.config.schema import AgentConfig
from agent.events import AlarmEvent, Heartbeat, Phase
from agent.gc_pacing import CollectorPacer
from agent.localbroker import LocalBroker
from agent.outbox import Outbox, PutResult
from agent.pipeline import Pipeline
from agent.privacy import Pseudonymizer
from agent.readings import Reading
from agent.session import _Session
from agent.uplink.mqtt import MqttUplink
from agent.uplink.topics import Topics
from tools.bench.scenarios import (
    DISTINCT_SEEDS,
    QUIET_SEEDS,
    START_TIME,
    Alter,
    Workload,
    vitals_config,
    workload,
)
from tools.bench.throughput import flat_out

WARMUP_S = 60.0
PROBE_HR = 150.0
SLICE = 500  # readings made up at a time by the feeder, just before they are due
PUBACK_GRACE_S = 3.0  # after the last reading, time for the last PUBACKs to come back

Base = Literal["daemon", "pipeline"]


class TimedOutbox(Outbox):
    """The real outbox, noting when each alarm is committed and when the broker acknowledged it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: dict[str, AlarmEvent] = {}
        self.acked: dict[str, float] = {}
        self.heartbeats = 0

    def put_alarms(
        self, events: Sequence[AlarmEvent], topic: str, *, note: tuple[str, str] | None = None
    ) -> list[PutResult]:
        for event in events:  # the daemon commits each turn's alarms with this one call
            self.events[f"{event.id}:{event.seq}"] = event
        return super().put_alarms(events, topic, note=note)

    def put_heartbeat(self, hb: Heartbeat, topic: str, expiry_s: int) -> PutResult:
        self.heartbeats += 1  # each heartbeat also saves the whole pipeline state
        return super().put_heartbeat(hb, topic, expiry_s)

    def delivered(self, item_id: str) -> None:
        self.acked[item_id] = time.monotonic()
        super().delivered(item_id)


class LagPipeline(Pipeline):
    """The real pipeline, noting how late each batch is done once `schedule` is set: the time from the
    due time of the batch's first (oldest) reading to the end of its ingest."""

    def __init__(self, config: AgentConfig, pseudonym: Callable[[str], str]) -> None:
        super().__init__(config, pseudonym)
        self.schedule: tuple[float, float] | None = None  # (monotonic start, simulated time at start)
        self.lags: list[tuple[float, float]] = []  # (seconds since start, lag in seconds) per batch

    def ingest(self, readings: Iterable[Reading]) -> list[AlarmEvent]:
        batch = readings if isinstance(readings, list) else list(readings)
        events = super().ingest(batch)
        if self.schedule is not None and batch:
            real0, t0 = self.schedule
            since = time.monotonic() - real0
            self.lags.append((since, since - (batch[0].wall_time - t0)))
        return events


class CollectorPauses:
    """Every garbage collection while recording: its generation and how long it took."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self.recording = False
        self._start = 0.0
        gc.callbacks.append(self._note)

    def _note(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        elif self.recording:
            self.pauses[info["generation"]].append(1e3 * (time.perf_counter() - self._start))

    def close(self) -> None:
        if self._note in gc.callbacks:
            gc.callbacks.remove(self._note)

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            f"gen{g}": {
                "count": len(p),
                "max_ms": round(max(p, default=0.0), 1),
                "total_ms": round(sum(p), 1),
            }
            for g, p in self.pauses.items()
        }


def machine_cpu_s() -> float:
    """CPU seconds every process on this machine has used since boot (/proc/stat), nan if unreadable: a
    trial that fails while others took a core says more about the machine than about the daemon."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return float("nan")
    busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait (user..steal)
    return busy / os.sysconf("SC_CLK_TCK")


def pipeline_capacity(streams: int = 2000) -> float:
    """Vitals samples per CPU second through the pipeline alone, flat out (median of 3 short runs)."""
    load = workload("vitals", streams, WARMUP_S + 10.0)
    return statistics.median(flat_out(load, WARMUP_S).samples_per_s for _ in range(3))


capacity = pipeline_capacity  # the name before the daemon's capacity existed


@dataclass
class Daemon:
    """The daemon's session assembled for a bench run: warmed, its tasks running, not yet fed."""

    load: Workload
    pipeline: LagPipeline
    outbox: TimedOutbox
    session: _Session
    pseudonym: Pseudonymizer
    first: int  # the first timed step; the steps before it went straight through the pipeline
    collections: CollectorPauses = field(default_factory=CollectorPauses)


@dataclass(frozen=True)
class Played:
    """What the feeder saw: wall and process CPU seconds from the first due reading to the last put,
    and the deepest the session's queue got."""

    wall_s: float
    cpu_s: float
    max_queue: int


@contextlib.asynccontextmanager
async def running_daemon(
    workdir: Path, port: int, streams: int, seconds: float, faults: bool, gc_pacing: bool = True
) -> AsyncIterator[Daemon]:
    """The session with `streams` vitals streams (`seconds` of them to play after the warm-up) and its
    uplink, pipeline and heartbeat tasks running against the broker on `port`; stopped on exit."""
    cfg = vitals_config(workdir, port, instant=True)
    load = workload("vitals", streams, WARMUP_S + seconds + 2.0, faults)
    pseudonym = Pseudonymizer(b"k" * 32)
    topics = Topics(cfg.mqtt.topic_prefix, cfg.gateway.site, cfg.gateway.id)
    pipeline = LagPipeline(cfg, pseudonym)
    outbox = TimedOutbox(cfg.outbox)
    uplink = MqttUplink(cfg.mqtt, topics, outbox, 1)
    state_dir = workdir / "state"
    state_dir.mkdir()
    pacer = CollectorPacer() if gc_pacing else None
    session = _Session(cfg, topics, pipeline, outbox, uplink, 1, pseudonym, state_dir, gc_pacer=pacer)

    first = load.step_of(WARMUP_S)
    for k in range(0, first, 10):  # warm the windows straight through the pipeline
        pipeline.ingest(load.readings(k, min(k + 10, first)))
    if pacer is not None:
        pacer.settle()
    daemon = Daemon(load, pipeline, outbox, session, pseudonym, first)

    uplink_task = asyncio.create_task(uplink.run())
    for _ in range(100):
        if uplink.connected:
            break
        await asyncio.sleep(0.05)
    process_task = asyncio.create_task(session._process())
    heartbeat_task = asyncio.create_task(session._heartbeats())  # with the full state save, as the daemon
    try:
        yield daemon
    finally:
        daemon.collections.close()
        process_task.cancel()
        heartbeat_task.cancel()
        await asyncio.gather(process_task, heartbeat_task, return_exceptions=True)
        await uplink.stop()
        uplink_task.cancel()
        await asyncio.gather(uplink_task, return_exceptions=True)
        session.save_state()  # as the daemon ends a session; it also waits for a heartbeat's save thread
        outbox.close()


async def play(
    daemon: Daemon,
    steps: int,
    alter: Alter | None = None,
    marked: set[int] | None = None,
    arrived: Callable[[Reading], None] | None = None,
) -> Played:
    """Put `steps` steps of every stream into the session's queue, each reading at its due time, from
    the first timed step on. `alter` may replace readings as they are made; `arrived` is called as each
    reading whose id() is in `marked` enters the queue (ids are dropped once seen: they are reused once
    a reading is freed). Batches are timed from the first due reading on (`LagPipeline.lags`)."""
    load, session, first = daemon.load, daemon.session, daemon.first
    marked = marked if marked is not None else set()
    daemon.collections.recording = True
    cpu0, real0 = time.process_time(), time.monotonic()
    t_first = START_TIME + first * load.step_s  # simulated time of the first timed step
    daemon.pipeline.schedule = (real0, t_first)
    max_queue = 0
    slices = [(k, lo) for k in range(first, first + steps) for lo in range(0, load.streams, SLICE)]
    for k, lo in slices:
        readings = load.step_slice(k, lo, lo + SLICE, alter)
        i = 0
        while i < len(readings):
            now = time.monotonic() - real0
            queue = session.queue
            while i < len(readings) and readings[i].wall_time - t_first <= now:
                r = readings[i]
                if marked and id(r) in marked:
                    marked.discard(id(r))
                    if arrived is not None:
                        arrived(r)
                if queue.full():
                    await queue.put(r)
                else:
                    queue.put_nowait(r)
                i += 1
            max_queue = max(max_queue, session.queue.qsize())
            if i < len(readings):
                await asyncio.sleep(max(0.0, readings[i].wall_time - t_first - (time.monotonic() - real0)))
    played = Played(time.monotonic() - real0, time.process_time() - cpu0, max_queue)
    daemon.collections.recording = False
    return played


def measure_latency(
    load_fraction: float,
    seconds: float,
    probes_per_s: float,
    streams: int,
    faults: bool = False,
    gc_pacing: bool = True,
    base: Base = "daemon",
    daemon_streams: int = 0,
) -> dict[str, Any]:
    """The latency run at `streams` streams, or at `load_fraction` of the `base` capacity. The daemon's
    capacity is searched for first (with the same `faults`) unless `daemon_streams` gives it or
    `streams` or `base="pipeline"` make it unneeded."""
    cap = pipeline_capacity()
    print(f"pipeline capacity {cap:,.0f} samples/s per core", file=sys.stderr)
    search: dict[str, Any] | None = None
    if daemon_streams <= 0 and streams <= 0 and base == "daemon":
        from tools.bench.capacity import daemon_capacity  # it builds on this module

        search = daemon_capacity(faults=faults, gc_pacing=gc_pacing, pipeline_samples_per_s=cap)
        daemon_streams = search["streams"]
    if streams <= 0:
        whole = daemon_streams if base == "daemon" else cap
        streams = max(100, round(load_fraction * whole))
    print(f"-> {streams} streams at 1 Hz (load base: {base})", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp, LocalBroker() as broker:
        result = asyncio.run(
            timed_run(Path(tmp), broker.port, streams, seconds, probes_per_s, faults, gc_pacing)
        )
    result.update(
        {
            "pipeline_capacity_samples_per_s": round(cap),
            "daemon_capacity_streams": daemon_streams or None,  # 1 Hz streams, so samples/s as well
            "load_base": base,
            "load_fraction": load_fraction,
            "streams": streams,
            "faults": faults,
            "gc_pacing": gc_pacing,
            "alarm_events_per_s": round(result["alarm_events"] / result["seconds"], 1),
        }
    )
    if search is not None:
        result["daemon_capacity_search"] = search
    return result


async def timed_run(
    workdir: Path,
    port: int,
    streams: int,
    seconds: float,
    probes_per_s: float,
    faults: bool,
    gc_pacing: bool = True,
) -> dict[str, Any]:
    async with running_daemon(workdir, port, streams, seconds, faults, gc_pacing) as daemon:
        load, first = daemon.load, daemon.first
        # One probe per quiet stream, spread over the timed steps.
        quiet = [s for s in range(streams) if s % DISTINCT_SEEDS in QUIET_SEEDS]
        per_step = max(1, round(probes_per_s * load.step_s))
        timed_steps = int(seconds / load.step_s)
        probes: dict[tuple[int, int], bool] = {}
        for j, s in enumerate(quiet[: per_step * timed_steps]):
            probes[(s, first + 1 + j // per_step)] = True

        probe_readings: set[int] = set()  # id() of the probe readings, to stamp their arrival

        def alter(s: int, k: int, r: Reading) -> Reading:
            if (s, k) not in probes:
                return r
            values = r.values.copy()
            values[0, r.channels.index("hr")] = PROBE_HR
            probe = Reading(r.stream, r.channels, values, r.wall_time, r.monotonic, r.period_s, r.quality)
            probe_readings.add(id(probe))
            return probe

        arrivals: dict[tuple[str, float], float] = {}

        def arrived(r: Reading) -> None:
            arrivals[(daemon.pseudonym(r.device), r.end_time)] = time.monotonic()

        busy0 = machine_cpu_s()
        played = await play(daemon, timed_steps + 1, alter, probe_readings, arrived)
        others = (machine_cpu_s() - busy0 - played.cpu_s) / played.wall_s
        daemon.collections.close()
        await asyncio.sleep(PUBACK_GRACE_S)  # let the last PUBACKs come back
    outbox = daemon.outbox

    latencies = []
    for item_id, event in outbox.events.items():
        if event.condition != "tachycardia" or event.phase is not Phase.START:
            continue
        arrival = arrivals.get((event.device, event.onset_time))
        if arrival is None or item_id not in outbox.acked:
            continue
        latencies.append(1e3 * (outbox.acked[item_id] - arrival))
    lat = np.array(latencies)
    return {
        "probes": len(arrivals),
        "probes_acked": int(lat.size),
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
        "max_ms": round(float(lat.max()), 2) if lat.size else None,
        "alarm_events": len(outbox.events),
        "process_cpu_share": round(played.cpu_s / played.wall_s, 3),
        "other_processes_cpu": round(others, 2),  # cores the rest of the machine used meanwhile
        "max_queue": played.max_queue,
        "seconds": round(played.wall_s, 1),
        "heartbeats": outbox.heartbeats,
        "gc": daemon.collections.summary(),
    }
