"""Benchmark the inference backends on the shipped models: latency, throughput, file size, process RSS.

    python -m tools.bench_inference [--models models/pump models/pump-residual models/ecg-beat] [--runs 5]

Each (model, artifact) is measured in its own fresh Python process, so the RSS figure is what a gateway
process holding that one runtime and model costs (RSS after load and a batch-1024 run, and the growth
over a bare Python + numpy process). Latency: the median of `runs` runs, each the median of 300 calls at
batch 1, in µs, through `LoadedModel.backend.run` (the path the detector takes). Throughput: windows/s
at batch 64 and 1024, median of runs. For ONNX the batch-1 and batch-64 latencies are also measured
with io-binding, which is how the ONNX backend's "no io-binding" choice was made. Detector hop: µs per
`AutoencoderDetector.score` call for 1, 32 and 256 streams (everything the gateway does per hop).
Single-threaded runtimes, as on the gateway. Figures are machine-dependent: record them with the
machine description.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ARTIFACTS = (("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "int8"))


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _time_calls(fn: Any, x: Any, calls: int) -> float:
    """Median seconds per call over `calls` calls."""
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(model_dir: Path, backend: str, precision: str, runs: int) -> dict[str, Any]:
    """Runs inside the child process."""
    rss_base = _rss_kib()
    from agent.inference import load_model

    model = load_model(model_dir, backend=backend, precision=precision)  # type: ignore[arg-type]
    card = model.card
    rng = np.random.default_rng(0)

    def batch(n: int) -> np.ndarray:
        return rng.standard_normal((n, card.window, len(card.channels))).astype(np.float32)

    run = model.backend.run
    x1, x64, x1024 = batch(1), batch(64), batch(1024)
    for x in (x1, x64, x1024):  # warm-up, and LiteRT's resize for each batch size
        run(x)
    lat1, thr64, thr1024 = [], [], []
    for _ in range(runs):
        lat1.append(_time_calls(run, x1, 300) * 1e6)
        thr64.append(64 / _time_calls(run, x64, 100))
        thr1024.append(1024 / _time_calls(run, x1024, 10))
    result: dict[str, Any] = {
        "model": card.name,
        "artifact": f"{backend}_{precision}",
        "bytes": (model_dir / card.artifact(f"{backend}_{precision}").file).stat().st_size,
        "latency_b1_us": statistics.median(lat1),
        "throughput_b64_wps": statistics.median(thr64),
        "throughput_b1024_wps": statistics.median(thr1024),
    }
    if backend == "onnx":
        result.update(_iobinding(model, x1, x64, runs))
    result.update(_detector_hop(model, runs))
    result["rss_mib"] = _rss_kib() / 1024
    result["rss_over_bare_mib"] = (_rss_kib() - rss_base) / 1024
    return result


def _detector_hop(model: Any, runs: int) -> dict[str, float]:
    """µs per `AutoencoderDetector.score` call (one hop) for 1, 32 and 256 streams: the gateway's cost,
    normalisation, the one batched backend call, scoring and the ScoreBlock included."""
    from agent.detectors.base import WindowBlock
    from agent.inference.detector import AutoencoderDetector

    card = model.card
    out = {}
    rng = np.random.default_rng(1)

    def block_of(streams: int) -> WindowBlock:
        x = np.asarray(card.mean) + np.asarray(card.scale) * rng.standard_normal(
            (streams, card.window, len(card.channels))
        )
        return WindowBlock(x, np.arange(streams), np.zeros(streams), hop=1)

    for streams in (1, 32, 256):
        if card.pca_fraction:  # a residual model needs each stream's subspace: adapt first (not timed)
            adapt = card.window * len(card.channels) + card.window + 20
            detector = AutoencoderDetector(card.name, model, adapt_rows=adapt)
            for _ in range(adapt):
                detector.score(block_of(streams))
        else:
            detector = AutoencoderDetector(card.name, model)
        block = block_of(streams)
        detector.score(block)
        out[f"detector_hop_{streams}_us"] = statistics.median(
            _time_calls(detector.score, block, 200) * 1e6 for _ in range(runs)
        )
    return out


def _iobinding(model: Any, x1: np.ndarray, x64: np.ndarray, runs: int) -> dict[str, float]:
    session = model.backend._session
    name_in, name_out = session.get_inputs()[0].name, session.get_outputs()[0].name

    def bound(x: np.ndarray) -> np.ndarray:
        binding = session.io_binding()
        binding.bind_cpu_input(name_in, x)
        binding.bind_output(name_out)
        session.run_with_iobinding(binding)
        return np.asarray(binding.copy_outputs_to_cpu()[0])

    bound(x1)
    b1 = statistics.median(_time_calls(bound, x1, 300) * 1e6 for _ in range(runs))
    b64 = statistics.median(64 / _time_calls(bound, x64, 100) for _ in range(runs))
    return {"iobinding_latency_b1_us": b1, "iobinding_throughput_b64_wps": b64}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--models",
        type=Path,
        nargs="+",
        default=[Path("models/pump"), Path("models/pump-residual"), Path("models/ecg-beat")],
    )
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--child", nargs=3, metavar=("MODEL", "BACKEND", "PRECISION"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(Path(args.child[0]), args.child[1], args.child[2], args.runs)))
        return 0
    rows = []
    for model_dir in args.models:
        for backend, precision in ARTIFACTS:
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tools.bench_inference",
                    "--runs",
                    str(args.runs),
                    "--child",
                    str(model_dir),
                    backend,
                    precision,
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(
                f"{r['model']:9s} {r['artifact']:12s} {r['bytes'] / 1024:6.1f} KiB"
                f"  b1 {r['latency_b1_us']:7.1f} µs"
                f"  b64 {r['throughput_b64_wps']:10.0f} w/s  b1024 {r['throughput_b1024_wps']:10.0f} w/s"
                f"  RSS {r['rss_mib']:5.1f} MiB (+{r['rss_over_bare_mib']:.1f})",
                flush=True,
            )
    print()
    print(
        "| model | artifact | file KiB | batch 1 latency µs | batch 64 windows/s | batch 1024 windows/s |"
        " RSS MiB (over bare Python) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['artifact']} | {r['bytes'] / 1024:.1f} | {r['latency_b1_us']:.1f} |"
            f" {r['throughput_b64_wps']:,.0f} | {r['throughput_b1024_wps']:,.0f} |"
            f" {r['rss_mib']:.0f} (+{r['rss_over_bare_mib']:.0f}) |"
        )
    onnx_rows = [r for r in rows if "iobinding_latency_b1_us" in r]
    if onnx_rows:
        print()
        print("| model | artifact | run() b1 µs | io-binding b1 µs | run() b64 w/s | io-binding b64 w/s |")
        print("|---|---|---:|---:|---:|---:|")
        for r in onnx_rows:
            print(
                f"| {r['model']} | {r['artifact']} | {r['latency_b1_us']:.1f} |"
                f" {r['iobinding_latency_b1_us']:.1f} |"
                f" {r['throughput_b64_wps']:,.0f} | {r['iobinding_throughput_b64_wps']:,.0f} |"
            )
    print()
    print("| model | artifact | detector hop, 1 stream µs | 32 streams µs | 256 streams µs |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['artifact']} | {r['detector_hop_1_us']:.0f} |"
            f" {r['detector_hop_32_us']:.0f} | {r['detector_hop_256_us']:.0f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
