"""Latency from a sample's arrival to its alarm's PUBACK, through the daemon's own loop and a real broker.

The daemon's `_Session` is assembled as `Agent` does it (Pipeline, Outbox, MqttUplink, the session's
pipeline task `_process`, which drains the queue in batches, commits events to the outbox with fsync and
wakes the uplink, and its heartbeat task, which every `heartbeat_interval_s` (30 s) also saves the whole
pipeline state on the same event loop), against a private mosquitto from `LocalBroker`. Only the
sources are replaced: a feeder task puts every simulated vitals reading into the session's queue at its
due time (speed 1, with the streams' phases spread over the second). A reading's *arrival* is the
moment it enters the queue.

Load: the flat-out capacity of the vitals pipeline is measured first (samples per CPU second); the run
then plays `load` × capacity streams at 1 Hz. The windows are warmed (60 s simulated, straight through
the pipeline) before the clock starts, so every detector is scoring.

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
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.events import AlarmEvent, Phase
from agent.gc_pacing import CollectorPacer
from agent.localbroker import LocalBroker
from agent.outbox import Outbox, PutResult
from agent.pipeline import Pipeline
from agent.privacy import Pseudonymizer
from agent.readings import Reading
from agent.session import _Session
from agent.uplink.mqtt import MqttUplink
from agent.uplink.topics import Topics
from tools.bench.scenarios import DISTINCT_SEEDS, QUIET_SEEDS, START_TIME, vitals_config, workload
from tools.bench.throughput import flat_out

WARMUP_S = 60.0
PROBE_HR = 150.0
SLICE = 500  # readings made up at a time by the feeder, just before they are due


class TimedOutbox(Outbox):
    """The real outbox, noting when each alarm is committed and when the broker acknowledged it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: dict[str, AlarmEvent] = {}
        self.acked: dict[str, float] = {}

    def put_alarms(
        self, events: Sequence[AlarmEvent], topic: str, *, note: tuple[str, str] | None = None
    ) -> list[PutResult]:
        for event in events:  # the daemon commits each turn's alarms with this one call
            self.events[f"{event.id}:{event.seq}"] = event
        return super().put_alarms(events, topic, note=note)

    def delivered(self, item_id: str) -> None:
        self.acked[item_id] = time.monotonic()
        super().delivered(item_id)


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


def capacity(streams: int = 2000) -> float:
    """Vitals samples per CPU second, flat out (median of 3 short runs)."""
    load = workload("vitals", streams, WARMUP_S + 10.0)
    return statistics.median(flat_out(load, WARMUP_S).samples_per_s for _ in range(3))


def measure_latency(
    load_fraction: float,
    seconds: float,
    probes_per_s: float,
    streams: int,
    faults: bool = False,
    gc_pacing: bool = True,
) -> dict[str, Any]:
    cap = capacity()
    if streams <= 0:
        streams = max(100, round(load_fraction * cap))
    print(f"capacity {cap:,.0f} samples/s per core -> {streams} streams at 1 Hz", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp, LocalBroker() as broker:
        result = asyncio.run(
            timed_run(Path(tmp), broker.port, streams, seconds, probes_per_s, faults, gc_pacing)
        )
    result.update(
        {
            "capacity_samples_per_s": round(cap),
            "load_fraction": load_fraction,
            "streams": streams,
            "faults": faults,
            "gc_pacing": gc_pacing,
            "alarm_events_per_s": round(result["alarm_events"] / result["seconds"], 1),
        }
    )
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
    cfg = vitals_config(workdir, port, instant=True)
    load = workload("vitals", streams, WARMUP_S + seconds + 2.0, faults)
    pseudonym = Pseudonymizer(b"k" * 32)
    topics = Topics(cfg.mqtt.topic_prefix, cfg.gateway.site, cfg.gateway.id)
    pipeline = Pipeline(cfg, pseudonym)
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
    collections = CollectorPauses()

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

    uplink_task = asyncio.create_task(uplink.run())
    for _ in range(100):
        if uplink.connected:
            break
        await asyncio.sleep(0.05)
    process_task = asyncio.create_task(session._process())
    heartbeat_task = asyncio.create_task(session._heartbeats())  # with the full state save, as the daemon

    collections.recording = True
    cpu0, real0 = time.process_time(), time.monotonic()
    t_first = START_TIME + first * load.step_s  # simulated time of the first timed step
    max_queue = 0
    slices = [(k, lo) for k in range(first, first + timed_steps + 1) for lo in range(0, streams, SLICE)]
    for k, lo in slices:
        readings = load.step_slice(k, lo, lo + SLICE, alter)
        i = 0
        while i < len(readings):
            now = time.monotonic() - real0
            queue = session.queue
            while i < len(readings) and readings[i].wall_time - t_first <= now:
                r = readings[i]
                if id(r) in probe_readings:
                    probe_readings.discard(id(r))  # ids are reused once a reading is freed
                    arrivals[(pseudonym(r.device), r.end_time)] = time.monotonic()
                if queue.full():
                    await queue.put(r)
                else:
                    queue.put_nowait(r)
                i += 1
            max_queue = max(max_queue, session.queue.qsize())
            if i < len(readings):
                await asyncio.sleep(max(0.0, readings[i].wall_time - t_first - (time.monotonic() - real0)))
    wall = time.monotonic() - real0
    cpu = time.process_time() - cpu0
    collections.close()
    await asyncio.sleep(3.0)  # let the last PUBACKs come back
    process_task.cancel()
    heartbeat_task.cancel()
    await asyncio.gather(process_task, heartbeat_task, return_exceptions=True)
    await uplink.stop()
    uplink_task.cancel()
    await asyncio.gather(uplink_task, return_exceptions=True)
    outbox.close()

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
        "process_cpu_share": round(cpu / wall, 3),
        "max_queue": max_queue,
        "seconds": round(wall, 1),
        "gc": collections.summary(),
    }
