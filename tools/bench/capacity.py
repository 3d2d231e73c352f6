"""The whole daemon's capacity: the most 1 Hz vitals streams it sustains at real rate.

`tools.bench.latency` plays a load of 1 Hz streams through the daemon's own session (pipeline, outbox
commit with fsync, paho to a real mosquitto, the heartbeat with its full state save) and asks for its
latency at "50 % load". Fifty per cent of what? The pipeline's flat-out throughput (samples per CPU
second, `latency.pipeline_capacity`) leaves out everything else the daemon does per reading and per
event: the queue, the outbox, paho's thread, the state save, and the sources (here the bench's feeder,
which makes up every reading as a source would parse it). On 2026-11-29 half of the pipeline's capacity
(75,651 streams) took 0.93 of a core and kept the queue at its bound.

This module measures the 100 % that "50 % load" should be relative to, on the same assembly
(`latency.running_daemon`, fed by `latency.play`), with or without the fault episodes:

- A **trial** plays N streams at real rate for `seconds` (default 35: the heartbeat and its state save,
  every 30 s, fall inside it). The daemon *sustains* N when no reading waited more than `max_lag_s`
  (1 s) from its due time to the end of the pipeline turn that took it (`LagPipeline.lags`), the
  backlog left when the feeding ends included (it must be gone within 2 × `max_lag_s`). A reading put
  late by a busy feeder counts from its due time, so the feeder's own delays count too. And the
  backlog must not be growing: an overload of ε makes the lag grow by ε seconds a second, which a 1 s
  bound over 35 s only sees for ε above about 3 % (a first version of this bench passed 116,100
  streams whose lag had crept to 0.65 s by the end). So the lag's floor (its least value over 5 s,
  which a passing stall such as the heartbeat's does not lift for long) at the end may exceed its
  floor early in the trial (from 2 s on) by at most `MAX_GROWTH_S` (0.1 s): that catches ε above
  about 0.4 %. A heartbeat's backlog not drained within the last 5 s fails the trial too, which errs
  on the low side by a few per cent at most.
- A **search** finds the largest sustained N: from `start`, up by the first trial's CPU share
  (N / share, the point where the process would use one core, at least +25 %, at most ×2) until a trial
  fails, or down by ×0.7 until one passes; then bisection until the bracket is within `tolerance`
  (5 %) or `max_trials` ran. The capacity is the largest sustained N below the smallest failed one.

Why real rate and not a flat-out feed through the same queue (samples per wall second): the workload is
1 Hz streams, and "load" is how many of them. A time-compressed feed makes each stream report many
times a second, so the alarm rate, the events per turn, the turns per reading and the heartbeat's share
per reading all change with the compression: it measures a different mix. At real rate every one of them
is what N real streams give, and "sustained" is the property the latency run needs (its queue does not
grow). Trials are noisy on a shared VM; take the median of several searches.

Every trial warms its own fresh pipeline (60 simulated seconds straight through it, as the latency run
does), so a trial at 70,000 streams costs about a minute.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.localbroker import LocalBroker
from tools.bench.latency import machine_cpu_s, pipeline_capacity, play, running_daemon

TRIAL_S = 35.0  # a heartbeat (every 30 s) and its state save fall inside each trial
MAX_LAG_S = 1.0  # a reading done later than this after its due time: not sustained
MAX_GROWTH_S = 0.1  # the lag's floor rising more than this over a trial: a backlog growing
WINDOW_S = 5.0  # the lag's floor is its least value over this long, early and at the end of a trial
START_SHARE = 0.4  # the first trial: this share of the pipeline's flat-out capacity, in streams
GRAIN = 100  # streams are tried in multiples of this
# Steps of the search before a bracket is found. Up by at least a quarter: the CPU share is no linear
# guide (larger batches cost less per reading; in a storm 45,700 streams took 0.93 of a core and
# 66,900 were still sustained), and steps of +10 % spent a whole search climbing.
UP_MIN, UP_MAX, DOWN = 1.25, 2.0, 0.7


@dataclass(frozen=True)
class Trial:
    """One real-rate run of `streams` streams through the daemon."""

    streams: int
    sustained: bool
    max_lag_s: float  # the latest any reading was done after its due time
    p99_lag_s: float  # over the pipeline turns
    final_lag_s: float  # the median lag of the last 5 s
    cpu_share: float  # process CPU seconds per wall second while feeding
    max_queue: int
    heartbeats: int  # each with the full state save
    alarm_events_per_s: float
    seconds: float
    growth_s: float = 0.0  # the lag's floor over the last 5 s less its floor early in the trial
    others_cpu: float = 0.0  # cores the machine's other processes used meanwhile (/proc/stat; nan: unknown)


@dataclass(frozen=True)
class Search:
    """The trials in the order run; the capacity is the largest sustained N below the smallest failed
    one (0 if none was sustained)."""

    trials: tuple[Trial, ...]
    streams: int
    failed_at: int | None  # the smallest failed N (None: none failed, the capacity is a lower bound)


def _grain(n: float) -> int:
    return max(GRAIN, round(n / GRAIN) * GRAIN)


def next_streams(passed: Trial | None, failed: Trial | None) -> int:
    """The next N to try, given the largest sustained and the smallest failed trial so far."""
    if passed is None and failed is None:
        raise ValueError("no trial yet")
    if failed is None:
        assert passed is not None
        guess = passed.streams / max(passed.cpu_share, 1e-3)  # where the process would use one core
        return _grain(min(max(guess, UP_MIN * passed.streams), UP_MAX * passed.streams))
    if passed is None:
        return _grain(DOWN * failed.streams)
    return _grain((passed.streams + failed.streams) / 2)


def search(
    trial: Callable[[int], Trial],
    start: int,
    *,
    tolerance: float = 0.05,
    max_trials: int = 7,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> Search:
    """The largest N that `trial` finds sustained, searched as the module docstring says."""
    trials: list[Trial] = []
    passed: Trial | None = None
    failed: Trial | None = None
    n = _grain(start)
    while len(trials) < max_trials:
        t = trial(n)
        trials.append(t)
        verdict = "sustained" if t.sustained else "NOT sustained"
        log(
            f"trial {len(trials)}: {t.streams} streams {verdict}: max lag {t.max_lag_s:.2f} s, "
            f"p99 {t.p99_lag_s:.3f} s, floor growth {t.growth_s:.3f} s, cpu {t.cpu_share:.2f}, "
            f"max queue {t.max_queue}, other processes {t.others_cpu:.2f} cores"
        )
        if t.sustained and (passed is None or t.streams > passed.streams):
            passed = t
        if not t.sustained and (failed is None or t.streams < failed.streams):
            failed = t
        if passed and failed and failed.streams - passed.streams <= max(GRAIN, tolerance * passed.streams):
            break
        n = next_streams(passed, failed)
        if any(x.streams == n for x in trials):
            break  # the bracket is down to the grain
    return Search(
        tuple(trials), passed.streams if passed else 0, failed.streams if failed is not None else None
    )


@dataclass(frozen=True)
class Lag:
    """A trial's verdict from its batches' lags."""

    sustained: bool
    worst: float  # inf: no batch done, or a backlog left
    p99: float
    final: float  # the median over the last WINDOW_S
    growth: float  # the floor over the last WINDOW_S less the floor early on


def judge(lags: Sequence[tuple[float, float]], wall_s: float, left: int, max_lag_s: float) -> Lag:
    """`lags`: (seconds since the start, lag) per batch, the drained backlog's included; `left`: the
    readings still queued after the drain. Sustained: the worst lag within `max_lag_s`, the floor's
    growth within MAX_GROWTH_S, nothing left."""
    values = sorted(lag for _, lag in lags)
    if not values or left:
        inf = float("inf")
        return Lag(False, inf, inf, inf, inf)
    last = [lag for since, lag in lags if since >= wall_s - WINDOW_S]
    settled = min(2.0, wall_s / 4)  # the first turns of a trial are uneven
    early = [lag for since, lag in lags if settled <= since < settled + WINDOW_S]
    growth = min(last) - min(early) if last and early else float("inf")
    worst = values[-1]
    return Lag(
        worst <= max_lag_s and growth <= MAX_GROWTH_S,
        worst,
        values[min(len(values) - 1, int(0.99 * len(values)))],
        statistics.median(last) if last else worst,
        growth,
    )


async def trial_run(
    workdir: Path,
    port: int,
    streams: int,
    seconds: float = TRIAL_S,
    faults: bool = False,
    gc_pacing: bool = True,
    max_lag_s: float = MAX_LAG_S,
) -> Trial:
    """Play `streams` streams for `seconds` through the daemon at real rate; sustained or not."""
    async with running_daemon(workdir, port, streams, seconds, faults, gc_pacing) as daemon:
        busy0 = machine_cpu_s()
        played = await play(daemon, int(seconds / daemon.load.step_s))
        others = (machine_cpu_s() - busy0) / played.wall_s - played.cpu_s / played.wall_s
        # The backlog left in the queue counts too: its readings' lags are noted as they are taken.
        queue, deadline = daemon.session.queue, time.monotonic() + 2 * max_lag_s
        while not queue.empty() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        left = queue.qsize()
        await asyncio.sleep(0.1)  # the turn that took the last of them ends
    lag = judge(daemon.pipeline.lags, played.wall_s, left, max_lag_s)
    return Trial(
        streams=streams,
        sustained=lag.sustained,
        max_lag_s=round(lag.worst, 3),
        p99_lag_s=round(lag.p99, 3),
        final_lag_s=round(lag.final, 3),
        cpu_share=round(played.cpu_s / played.wall_s, 3),
        max_queue=played.max_queue,
        heartbeats=daemon.outbox.heartbeats,
        alarm_events_per_s=round(len(daemon.outbox.events) / played.wall_s, 1),
        seconds=round(played.wall_s, 1),
        growth_s=round(lag.growth, 3),
        others_cpu=round(others, 2),
    )


def daemon_capacity(
    faults: bool = False,
    gc_pacing: bool = True,
    seconds: float = TRIAL_S,
    start: int = 0,
    tolerance: float = 0.05,
    max_trials: int = 7,
    max_lag_s: float = MAX_LAG_S,
    pipeline_samples_per_s: float = 0.0,
) -> dict[str, Any]:
    """Search the daemon's capacity against a private mosquitto; `start` 0: START_SHARE of the
    pipeline's flat-out capacity (measured here unless given)."""
    if pipeline_samples_per_s <= 0:
        pipeline_samples_per_s = pipeline_capacity()
    if start <= 0:
        start = _grain(START_SHARE * pipeline_samples_per_s)
    print(
        f"daemon capacity search from {start} streams (pipeline {pipeline_samples_per_s:,.0f} samples/s)",
        file=sys.stderr,
    )
    with LocalBroker() as broker:

        def trial(n: int) -> Trial:
            with tempfile.TemporaryDirectory() as tmp:
                result = asyncio.run(
                    trial_run(Path(tmp), broker.port, n, seconds, faults, gc_pacing, max_lag_s)
                )
            gc.unfreeze()  # the pacer froze this trial's pipeline; let it go before the next one
            gc.collect()
            return result

        found = search(trial, start, tolerance=tolerance, max_trials=max_trials)
    return {
        "streams": found.streams,
        "samples_per_s": found.streams,  # vitals: one sample per stream per second
        "failed_at": found.failed_at,
        "share_of_pipeline_capacity": round(found.streams / pipeline_samples_per_s, 3),
        "pipeline_capacity_samples_per_s": round(pipeline_samples_per_s),
        "faults": faults,
        "trial_seconds": seconds,
        "max_lag_s": max_lag_s,
        "max_growth_s": MAX_GROWTH_S,
        "trials": [asdict(t) for t in found.trials],
    }
