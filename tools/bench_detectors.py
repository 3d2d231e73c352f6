"""Benchmark the statistical detectors and the alarm book: cost per call and per stream.

    python -m tools.bench_detectors

Prints one Markdown table per scenario (the figures in docs/benchmarks.md, "Statistical detectors and
alarms"). Each figure is the median of `REPEATS` timed calls after one warm-up call; data is seeded AR(1).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from agent.alarms import AlarmBook, StreamRef
from agent.config.schema import AlarmRuleConfig, DetectorConfig
from agent.detectors import ScoreBlock, StreamingDetector, WindowBlock, build_detector

REPEATS = 7
# The generic statistical detectors, which score any numeric channel. The domain detectors need their
# own inputs (RR, SpO2, accelerometer, a model) and are measured in their own sections of the docs.
STATISTICAL = ("limit", "robust_z", "ewma", "cusum", "rate_of_change", "flatline", "dropout", "new_extreme")
PARAMS: dict[str, dict[str, Any]] = {
    "limit": {"above": 100.0, "below": 40.0},
    "rate_of_change": {"max_rate": 5.0},
}


def timed(call: Callable[[], object]) -> float:
    """Median seconds of one call."""
    call()
    samples = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def detector(
    type_: str, channels: tuple[str, ...], rate: float, window_s: float, hop_s: float
) -> StreamingDetector:
    params = dict(PARAMS.get(type_, {}), hop_s=hop_s)
    if type_ not in ("limit", "rate_of_change", "new_extreme"):
        params["window_s"] = window_s
    return build_detector(DetectorConfig(type_, type_, "s", channels, params=params), rate)


def block(d: StreamingDetector, streams: int, channels: int, seed: int = 0) -> WindowBlock:
    rng = np.random.default_rng(seed)
    values = 70.0 + rng.normal(0.0, 1.0, (streams, d.window, channels))
    values[rng.random(values.shape) < 0.02] = np.nan
    return WindowBlock(values, np.arange(streams), np.full(streams, 1.8e9), d.hop)


def score_table(
    title: str, rate: float, window_s: float, hop_s: float, channels: int, sizes: list[int]
) -> None:
    names = tuple(f"c{i}" for i in range(channels))
    print(f"\n{title}\n")
    print(
        "| detector | window x hop (samples) | "
        + " | ".join(f"S={s}: ms/call (µs/stream)" for s in sizes)
        + " |"
    )
    print("|---|---|" + "---|" * len(sizes))
    for type_ in STATISTICAL:
        chans = names[:1] if type_ == "limit" else names
        d = detector(type_, chans, rate, window_s, hop_s)
        cells = []
        for s in sizes:
            b = block(d, s, len(chans))
            seconds = timed(partial(d.score, b))
            cells.append(f"{seconds * 1e3:.2f} ({seconds * 1e6 / s:.1f})")
        print(f"| {type_} | {d.window} x {d.hop} | " + " | ".join(cells) + " |")


def book_seconds(streams: int) -> float:
    """Median seconds of one AlarmBook.update over `streams` streams."""
    rule = AlarmRuleConfig(
        condition="c", detector="d", min_duration_s=3.0, clear_after_s=3.0, cooldown_s=10.0
    )
    book = AlarmBook(rule, "gw", "h", ("x",))
    refs = [StreamRef(f"d{i}", "vitals") for i in range(streams)]
    rng = np.random.default_rng(1)
    ok = np.ones(streams, dtype=bool)
    text = ["ok"] * streams
    clock = [1.8e9]

    def hop() -> None:
        scores = np.where(rng.random(streams) < 0.02, 2.0, 0.0)
        clock[0] += 1.0
        ones = np.ones(streams)
        block = ScoreBlock(scores, ones, ones[:, None], scores, ones, np.full((streams, 1), np.nan))
        book.update(refs, block, np.full(streams, clock[0]), ok, text)

    return timed(hop)


def book_table(sizes: list[int]) -> None:
    print("\nAlarmBook.update, one rule, 2 % of streams above threshold each hop\n")
    print("| streams | ms/call | µs/stream |")
    print("|---|---|---|")
    for s in sizes:
        seconds = book_seconds(s)
        print(f"| {s} | {seconds * 1e3:.2f} | {seconds * 1e6 / s:.2f} |")


def calibration_table() -> None:
    print("\nCalibration: 40 streams x 1 h of 1 Hz normal data, 1 channel, hop 1 s\n")
    print("| detector | seconds |")
    print("|---|---|")
    rng = np.random.default_rng(2)
    values = 70.0 + rng.normal(0.0, 1.0, (40, 3600, 1))
    normal = WindowBlock(values, np.arange(40), np.full(40, 1.8e9), 1)
    for type_ in STATISTICAL:
        d = detector(type_, ("x",), 1.0, 60.0, 1.0)
        start = time.perf_counter()
        d.calibrate(normal, 1.0, 1.0)
        print(f"| {type_} | {time.perf_counter() - start:.2f} |")


def main() -> None:
    score_table("Vitals: 1 Hz, 60 s window, 1 s hop, 4 channels", 1.0, 60.0, 1.0, 4, [1, 100, 1000])
    score_table(
        "ECG: 250 Hz, 4 s window, 1 s hop (250 new samples), 1 channel", 250.0, 4.0, 1.0, 1, [1, 10, 50]
    )
    book_table([1, 100, 1000, 10000])
    calibration_table()


if __name__ == "__main__":
    main()
