"""Chunked generation: a span is the same whatever its length, seams are invisible, memory is bounded."""

from __future__ import annotations

import numpy as np
import pytest
from simhelpers import START, equipment, series, wearable

from agent.config.schema import DeviceConfig
from agent.simulation import make_generator, simulate
from agent.simulation.wearable import WearableGenerator


@pytest.mark.parametrize(
    "device",
    [
        wearable(11, ("af", 50, 100), ("dropout", 170, 30), ("stuck_sensor", 0, 70), ecg=True),
        equipment(11, ("bearing_wear", 30, 200), ("stuck_sensor", 0, 70), ("dropout", 100, 50)),
    ],
)
def test_a_longer_run_starts_with_the_shorter_one(device: DeviceConfig) -> None:
    short, truth_short = simulate(device, 130, START)
    long, _ = simulate(device, 300, START)
    prefix = [r for r in long if r.wall_time < START + 130]
    assert len(prefix) == len(short)
    for a, b in zip(short, prefix, strict=True):
        assert (a.stream, a.wall_time, a.quality) == (b.stream, b.wall_time, b.quality)
        assert np.array_equal(a.values, b.values)
    # ground truth is cut to the simulated span; later episodes are left out
    assert all(g.end <= START + 130 for g in truth_short)
    assert device.simulator is not None
    assert len(truth_short) == len(device.simulator.episodes) - (1 if device.kind == "wearable" else 0)


def test_readings_are_in_time_order_and_start_at_start_time() -> None:
    readings, _ = simulate(wearable(2, ecg=True), 180, START)
    times = [r.wall_time for r in readings]
    assert times == sorted(times)
    assert readings[0].wall_time == START and readings[0].stream == "w1/vitals"
    assert {r.stream for r in readings} == {"w1/vitals", "w1/rr", "w1/ecg"}


def test_no_seam_at_chunk_boundaries() -> None:
    readings, _ = simulate(wearable(3), 1200, START)
    rr = series(readings, "w1/rr")
    jumps = np.abs(np.diff(rr.col("rr")))
    seam = np.array([np.min(np.abs(t - np.arange(60, 1200, 60))) < 2.0 for t in rr.t[1:]])
    # beat-to-beat change near chunk seams is like anywhere else
    assert jumps[seam].max() < 3 * np.percentile(jumps[~seam], 99)
    temp = series(simulate(equipment(3), 1200, START)[0], "pump7/machine").col("bearing_temp")
    assert np.abs(np.diff(temp)).max() < 1.0


def test_an_hour_of_chunks_keeps_state_small() -> None:
    generator = WearableGenerator(wearable(5, ("af", 600, 600), ecg=False), START)
    sizes = []
    for index in range(60):
        generator.chunk(index)
        sizes.append(generator.buffered_beats)  # one chunk ahead plus a little history
    assert max(sizes) < 2 * 60 * 200 / 60


def test_chunks_must_come_in_order() -> None:
    generator = make_generator(equipment(1), START)
    generator.chunk(0)
    with pytest.raises(ValueError, match="in order"):
        generator.chunk(2)
