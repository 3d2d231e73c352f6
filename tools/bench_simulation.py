"""Benchmark of the device simulator: generation speed, source overhead and memory of an endless run.

Run: ``python -m tools.bench_simulation`` (about half a minute). Prints, per device model, how many simulated
seconds are generated per real second by `simulate`, how many readings per second `SimulatorSource` hands out
unpaced (speed 0), and the peak traced memory of generating an hour chunk by chunk while dropping each chunk
(what a source does) against generating one chunk.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import tracemalloc

from agent.config.schema import DeviceConfig, DeviceKind, EpisodeConfig, SimulatorConfig
from agent.simulation import SimulatorSource, make_generator, simulate


def device(kind: DeviceKind, ecg: bool = False) -> DeviceConfig:
    episodes: tuple[EpisodeConfig, ...]
    if kind == "wearable":
        episodes = (EpisodeConfig("af", 600, 600), EpisodeConfig("tachycardia", 1500, 300))
    else:
        episodes = (EpisodeConfig("bearing_wear", 600, 1800),)
    return DeviceConfig("bench", kind, "simulator", simulator=SimulatorConfig(1, 0.0, ecg, episodes))


def generation_rate(dev: DeviceConfig, span_s: float = 1800.0, repeats: int = 3) -> tuple[float, int]:
    rates = []
    n = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        readings, _ = simulate(dev, span_s, 0.0)
        rates.append(span_s / (time.perf_counter() - t0))
        n = len(readings)
    return statistics.median(rates), n


def source_rate(dev: DeviceConfig, count: int = 50_000) -> float:
    async def run() -> float:
        t0 = time.perf_counter()
        n = 0
        async with SimulatorSource(dev, start_time=0.0) as source:
            async for _ in source:
                n += 1
                if n == count:
                    break
        return count / (time.perf_counter() - t0)

    return asyncio.run(run())


def peak_memory(dev: DeviceConfig, chunks: int) -> int:
    tracemalloc.start()
    generator = make_generator(dev, 0.0)
    for index in range(chunks):
        generator.chunk(index)  # dropped at once, as the source does once it has handed the chunk out
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main() -> None:
    print("simulator benchmark (shared 2-core x86-64 VM)")
    for label, dev in [
        ("wearable vitals+rr", device("wearable")),
        ("wearable vitals+rr+ecg 250 Hz", device("wearable", ecg=True)),
        ("equipment machine", device("equipment")),
    ]:
        rate, n = generation_rate(dev)
        src = source_rate(dev)
        one = peak_memory(dev, 1)
        hour = peak_memory(dev, 60)
        print(
            f"{label:32s} simulate: {rate:9.0f} sim-s/s ({n / 1800:6.1f} readings per sim-s) | "
            f"source unpaced: {src:8.0f} readings/s | peak memory 1 chunk {one / 1e6:5.2f} MB, "
            f"60 chunks {hour / 1e6:5.2f} MB"
        )


if __name__ == "__main__":
    main()
