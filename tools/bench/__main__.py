"""Command line of the pipeline benchmark; `python -m tools.bench --help`.

    python -m tools.bench throughput   # µs/sample, streams per core, real-rate CPU share, runtime ratio
    python -m tools.bench latency      # arrival -> PUBACK at 50 % of the daemon's capacity, real mosquitto
    python -m tools.bench capacity     # the most 1 Hz vitals streams the whole daemon sustains
    python -m tools.bench rss          # peak RSS with 100 streams, a fresh process per runtime
    python -m tools.bench soak --minutes 10   # the daemon with faults: RSS, fds, threads every 30 s
    python -m tools.bench startup      # start-up to first inference, and import time
    python -m tools.bench disk         # bytes the outbox writes per alarm event and per heartbeat
    python -m tools.bench save --streams 45000   # the heartbeat's state save in an alarm storm
    python -m tools.bench restamp --alarms 10000  # a clock step over alarms waiting in the outbox

Every command prints its figures as JSON on stdout (progress on stderr). Absolute figures depend on
the machine; ratios are measured side by side in one run. Results and commands: docs/benchmarks.md
("Pipeline performance"); profiles and fixes: docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from typing import Any


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def cmd_throughput(args: argparse.Namespace) -> dict[str, Any]:
    from tools.bench.scenarios import workload
    from tools.bench.throughput import flat_out, real_rate, runtime_ratio

    out: dict[str, Any] = {}
    if args.vitals_streams > 0:
        vitals = workload("vitals", args.vitals_streams, 60.0 + args.vitals_seconds)
        runs = [flat_out(vitals, 60.0) for _ in range(args.runs)]
        us = _median([r.us_per_sample for r in runs])
        out["vitals"] = {
            "streams": args.vitals_streams,
            "timed_samples": runs[0].samples,
            "us_per_sample_runs": [round(r.us_per_sample, 2) for r in runs],
            "us_per_sample": round(us, 2),
            "samples_per_s_per_core": round(1e6 / us),
            "events": runs[0].events,
        }
        print(f"vitals flat out: {us:.2f} µs/sample -> {1e6 / us:,.0f} samples/s per core", file=sys.stderr)
    by_backend: dict[str, Any] = {}
    backends = args.backends if args.ecg_streams > 0 else []
    if backends:
        ecg = workload(
            "ecg", args.ecg_streams, 4.0 + args.ecg_seconds, frame=args.ecg_frame, ecg_model=args.ecg_model
        )
        out["ecg_frame_samples"] = args.ecg_frame
        out["ecg_model"] = args.ecg_model
    for backend in backends:
        runs = [flat_out(ecg, 4.0, backend) for _ in range(args.runs)]
        us = _median([r.us_per_sample for r in runs])
        by_backend[backend] = {
            "streams": args.ecg_streams,
            "timed_samples": runs[0].samples,
            "us_per_sample_runs": [round(r.us_per_sample, 3) for r in runs],
            "us_per_sample": round(us, 3),
            "us_per_reading": round(_median([r.us_per_reading for r in runs]), 2),
            "streams_per_core": round(1e6 / (us * 250.0)),
        }
        ratios = [runtime_ratio(ecg, 4.0, backend) for _ in range(args.runs)]
        by_backend[backend]["runtime_ratio"] = {
            "windows": ratios[0].windows,
            "batches": ratios[0].batches,
            "mean_batch": round(ratios[0].windows / ratios[0].batches, 1),
            "agent_us_per_window": round(_median([1e6 * r.agent_cpu_s / r.windows for r in ratios]), 3),
            "scoring_us_per_window": round(_median([1e6 * r.scoring_cpu_s / r.windows for r in ratios]), 3),
            "bare_us_per_window": round(_median([1e6 * r.bare_cpu_s / r.windows for r in ratios]), 3),
            "ratio_whole_agent": round(_median([r.ratio for r in ratios]), 4),
            "ratio_scoring_path": round(_median([r.scoring_ratio for r in ratios]), 4),
        }
        print(f"ecg {backend}: {by_backend[backend]}", file=sys.stderr)
    if by_backend:
        out["ecg"] = by_backend
    if args.real_seconds > 0:
        load = workload("vitals", args.real_vitals_streams, 60.0 + args.real_seconds)
        share, us = real_rate(load, 60.0)
        out["vitals_real_rate"] = {
            "streams": args.real_vitals_streams,
            "core_share": round(share, 4),
            "us_per_sample": round(us, 2),
        }
        load = workload(
            "ecg",
            args.real_ecg_streams,
            4.0 + args.real_seconds,
            frame=args.ecg_frame,
            ecg_model=args.ecg_model,
        )
        share, us = real_rate(load, 4.0, args.backends[0])
        out["ecg_real_rate"] = {
            "streams": args.real_ecg_streams,
            "core_share": round(share, 4),
            "us_per_sample": round(us, 3),
        }
    return out


def cmd_latency(args: argparse.Namespace) -> dict[str, Any]:
    from tools.bench.latency import measure_latency

    return measure_latency(
        args.load,
        args.seconds,
        args.probes_per_s,
        args.streams,
        args.faults,
        args.gc_pacing == "on",
        base=args.capacity,
        daemon_streams=args.daemon_streams,
    )


def cmd_capacity(args: argparse.Namespace) -> dict[str, Any]:
    from tools.bench.capacity import daemon_capacity

    return daemon_capacity(
        faults=args.faults,
        gc_pacing=args.gc_pacing == "on",
        seconds=args.seconds,
        start=args.start,
        tolerance=args.tolerance,
        max_trials=args.max_trials,
        max_lag_s=args.max_lag_s,
    )


def cmd_rss(args: argparse.Namespace) -> dict[str, Any]:
    from tools.bench.memory import rss_per_backend

    return rss_per_backend(args.streams, args.seconds, args.backends, args.ecg_model)


def cmd_soak(args: argparse.Namespace) -> dict[str, Any]:
    from tools.bench.memory import soak

    return soak(args.minutes, args.devices, args.every_s)


def cmd_startup(args: argparse.Namespace) -> dict[str, Any]:
    from tools.bench.startup import measure_startup

    return measure_startup(args.runs, args.backends, args.ecg_model)


def cmd_disk(args: argparse.Namespace) -> dict[str, Any]:
    from tools.bench.disk import disk_report

    return disk_report(
        args.events, args.heartbeats, args.devices, args.rate, offline=args.offline, max_bytes=args.max_bytes
    )


def cmd_save(args: argparse.Namespace) -> dict[str, Any]:
    from tools.bench.save import save_cost

    return save_cost(args.streams, args.runs, sealed=args.sealed)


def cmd_restamp(args: argparse.Namespace) -> dict[str, Any]:
    from tools.bench.restamp import restamp_cost

    return restamp_cost(args.alarms, args.runs)


def _ecg_model_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ecg-model",
        choices=("ecg-window", "ecg-beat"),
        default="ecg-window",
        help="the ECG autoencoder: ecg-window (made for a sliding 250 Hz window), or ecg-beat (64 samples,"
        " cost only; the figures before 2026-12-01)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("throughput", help="flat-out and real-rate throughput, runtime ratio")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--vitals-streams", type=int, default=2000, help="0 skips the vitals runs")
    p.add_argument("--vitals-seconds", type=float, default=30.0, help="timed simulated seconds")
    p.add_argument("--ecg-streams", type=int, default=500, help="0 skips the ECG runs")
    p.add_argument("--ecg-seconds", type=float, default=8.0, help="timed simulated seconds")
    p.add_argument("--ecg-frame", type=int, default=8, help="ECG samples per reading (the model's hop is 8)")
    _ecg_model_option(p)
    p.add_argument("--backends", nargs="+", default=["onnx", "tflite"])
    p.add_argument("--real-seconds", type=float, default=20.0, help="0 skips the real-rate runs")
    p.add_argument("--real-vitals-streams", type=int, default=5000)
    p.add_argument("--real-ecg-streams", type=int, default=500)
    p.set_defaults(fn=cmd_throughput)

    p = sub.add_parser("latency", help="sample arrival to PUBACK at a fraction of capacity")
    p.add_argument("--load", type=float, default=0.5, help="fraction of the --capacity")
    p.add_argument(
        "--capacity",
        choices=("daemon", "pipeline"),
        default="daemon",
        help="load base: the whole daemon's sustained streams (searched first, as `capacity` does) "
        "or the pipeline's flat-out samples per CPU second (the definition before 2026-11-30)",
    )
    p.add_argument(
        "--daemon-streams", type=int, default=0, help="the daemon's capacity if known (skips the search)"
    )
    p.add_argument("--streams", type=int, default=0, help="vitals streams (0: from --load)")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--probes-per-s", type=float, default=10.0)
    p.add_argument("--faults", action="store_true", help="with the fault episodes (an alarm storm)")
    p.add_argument(
        "--gc-pacing", choices=("on", "off"), default="on", help="the daemon's GC pacing (agent.gc_pacing)"
    )
    p.set_defaults(fn=cmd_latency)

    p = sub.add_parser("capacity", help="the most 1 Hz vitals streams the whole daemon sustains")
    p.add_argument("--faults", action="store_true", help="with the fault episodes (an alarm storm)")
    p.add_argument("--seconds", type=float, default=35.0, help="real seconds per trial (a heartbeat at 30)")
    p.add_argument("--start", type=int, default=0, help="first trial's streams (0: 0.4 x pipeline capacity)")
    p.add_argument("--tolerance", type=float, default=0.05, help="stop when the bracket is this narrow")
    p.add_argument("--max-trials", type=int, default=7)
    p.add_argument("--max-lag-s", type=float, default=1.0, help="latest a reading may be done after due")
    p.add_argument(
        "--gc-pacing", choices=("on", "off"), default="on", help="the daemon's GC pacing (agent.gc_pacing)"
    )
    p.set_defaults(fn=cmd_capacity)

    p = sub.add_parser("rss", help="peak RSS with N streams, one fresh process per runtime")
    p.add_argument("--streams", type=int, default=100)
    p.add_argument("--seconds", type=float, default=70.0)
    p.add_argument("--backends", nargs="+", default=["tflite", "onnx"])
    _ecg_model_option(p)
    p.set_defaults(fn=cmd_rss)

    p = sub.add_parser("soak", help="run the daemon with simulated faults; sample RSS, fds, threads")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--devices", type=int, default=100)
    p.add_argument("--every-s", type=float, default=30.0)
    p.set_defaults(fn=cmd_soak)

    p = sub.add_parser("startup", help="start-up to first inference, and import time")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--backends", nargs="+", default=["onnx", "tflite"])
    _ecg_model_option(p)
    p.set_defaults(fn=cmd_startup)

    p = sub.add_parser("disk", help="bytes the outbox writes to the disk per alarm event and heartbeat")
    p.add_argument("--events", type=int, default=1200, help="alarm events, one per pipeline turn")
    p.add_argument("--heartbeats", type=int, default=80)
    p.add_argument("--devices", type=int, default=100, help="devices reported in each heartbeat")
    p.add_argument("--rate", type=float, default=0.5, help="alarm events per simulated second")
    p.add_argument("--offline", action="store_true", help="the link down: heartbeats alone, nothing taken")
    p.add_argument("--max-bytes", type=int, default=0, help="the outbox's bound (0: its default, 64 MiB)")
    p.set_defaults(fn=cmd_disk)

    p = sub.add_parser("save", help="the heartbeat's state save in an alarm storm: on the loop, in a thread")
    p.add_argument("--streams", type=int, default=45000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--sealed", action="store_true", help="encrypted at rest (outbox encryption_key_file)")
    p.set_defaults(fn=cmd_save)

    p = sub.add_parser("restamp", help="a step of the gateway clock over alarms waiting in the outbox")
    p.add_argument("--alarms", type=int, default=10000)
    p.add_argument("--runs", type=int, default=5)
    p.set_defaults(fn=cmd_restamp)

    args = parser.parse_args(argv)
    result = args.fn(args)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
