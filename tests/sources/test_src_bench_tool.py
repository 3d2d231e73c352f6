"""Smoke test of tools/bench_sources: every measured path runs and delivers what it claims."""

from __future__ import annotations

from pathlib import Path

from tools.bench_sources import ble_run, ecg_readings, record_run, replay_run, serial_run


def test_bench_paths_run(tmp_path: Path) -> None:
    seconds, wire = serial_run(50)  # returns only once all 50 readings came out of the source
    assert seconds > 0 and wire > 50 * 70
    assert ble_run(1500) > 0  # 1500 values drained as 4500 readings
    elapsed, size = record_run(ecg_readings(300), tmp_path)
    assert elapsed > 0 and size > 300 * 500
    assert replay_run(tmp_path, 300) > 0  # asserts the count itself
