"""Damaged recordings replay what can be read and end normally.

Before, a byte that is not UTF-8 in a plain file, a truncated or damaged gzip file, or an absurdly nested
line raised out of `read_recording`, so the replay source raised; the daemon then reopened it, and the
recording played again from its start, again and again (found by replaying 400 damaged copies of a plain
and of a gzip recording: 249 plain and every damaged gzip copy raised)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
import pytest

from agent.config.schema import DeviceConfig, ReplayConfig
from agent.readings import Reading
from agent.sources.record import ReadingRecorder, read_recording, recording_files
from agent.sources.replay import ReplaySource

COUNT = 200


def record(folder: Path, compress: bool, files: int = 1) -> list[Path]:
    size = 1 << 20 if files == 1 else 8 * 1024  # small files rotate into several
    with ReadingRecorder(folder, max_file_bytes=size, max_files=100, compress=compress) as recorder:
        for i in range(COUNT):
            values = np.full((1, 2), float(i))
            recorder.write(Reading("bed/vitals", ("hr", "spo2"), values, 1.8e9 + i, float(i)))
    return recording_files(folder)


def replayed(path: Path) -> list[Reading]:
    device = DeviceConfig(id="bed", kind="wearable", transport="replay", replay=ReplayConfig(path, 0.0))

    async def run() -> list[Reading]:
        async with ReplaySource(device) as source:
            return [r async for r in source]  # ends with StopAsyncIteration, never an exception

    return asyncio.run(run())


def test_a_byte_that_is_not_utf8_costs_only_its_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (file,) = record(tmp_path, compress=False)
    data = bytearray(file.read_bytes())
    data[data.index(b'"v":[[100.0') + 6] = 0xFF  # inside the reading of second 100
    file.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="agent.sources.record"):
        back = replayed(file)
    assert [r.values[0, 0] for r in back] == [float(i) for i in range(COUNT) if i != 100]
    assert "bad recorded reading skipped" in caplog.text


def test_a_truncated_gzip_file_gives_what_it_holds_then_the_next_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = record(tmp_path, compress=True, files=3)
    assert len(files) >= 3
    whole = [r.values[0, 0] for r in read_recording(files[1])]
    files[1].write_bytes(files[1].read_bytes()[:-40])  # cut inside the deflate stream and its trailer
    with caplog.at_level(logging.WARNING, logger="agent.sources.record"):
        back = [r.values[0, 0] for r in replayed(tmp_path)]
    assert back[-1] == COUNT - 1  # the files after the damaged one are replayed
    assert 0 < COUNT - len(back) <= len(whole)  # what is lost is within the damaged file
    assert "rest of the file skipped" in caplog.text


def test_an_absurdly_nested_line_is_skipped(tmp_path: Path) -> None:
    (file,) = record(tmp_path, compress=False)
    with file.open("ab") as f:
        f.write(b"[" * 100_000 + b"\n")
    assert len(replayed(file)) == COUNT
