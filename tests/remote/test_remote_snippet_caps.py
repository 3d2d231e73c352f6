"""A snippet is bounded by its values (rows x channels), not only its rows: review remote #1 (a 12-lead
ECG's 20,000 rows made a 1.5 MB answer, over a broker's 1 MiB packet limit)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from agent.config.loader import parse_config
from agent.readings import Quality, Reading
from agent.remote.envelope import response
from agent.remote.snippets import MAX_SAMPLES, MAX_VALUES, SnippetTaps

from .conftest import BASE

BLOCK = 25  # rows per reading, as the simulator's ECG (0.1 s at 250 Hz)


def snippet_of(tmp_path: Path, channels: int, values: Any) -> dict[str, Any]:
    """A 300 s snippet of device w1's "ecg" fed `channels`-channel readings of `values(rows)` until
    the snippet is full."""
    cfg = parse_config(
        {
            **BASE,
            "privacy": {"raw_snippets": True},
            "remote": {"enabled": True, "allow_unsigned": True, "max_snippet_s": 300},
        },
        base_dir=tmp_path,
    )
    taps = SnippetTaps(cfg, str)
    names = tuple(f"c{n}" for n in range(channels))

    async def scenario() -> dict[str, Any]:
        task = asyncio.create_task(taps.record({"device": "w1", "stream": "ecg", "seconds": 300}))
        await asyncio.sleep(0)
        t = 1_700_000_000.0
        while not task.done():
            rows = values((BLOCK, channels))
            taps.feed([Reading("w1/ecg", names, rows, t, t, 0.004, Quality.OK)])
            t += BLOCK * 0.004
            await asyncio.sleep(0)
        return await task

    return asyncio.run(scenario())


def test_a_many_channel_snippet_stops_at_the_value_cap(tmp_path: Path) -> None:
    result = snippet_of(tmp_path, 12, lambda shape: np.ones(shape))
    # Failed before: 20,000 rows of 12 channels (240,000 values).
    assert result["truncated"] is True
    assert result["samples"] == MAX_VALUES // 12
    assert sum(len(b["values"]) * len(b["channels"]) for b in result["blocks"]) == MAX_VALUES // 12 * 12
    assert all(b["values"] for b in result["blocks"])  # no empty block where the cap fell


def test_a_one_channel_snippet_keeps_its_row_cap(tmp_path: Path) -> None:
    result = snippet_of(tmp_path, 1, lambda shape: np.ones(shape))
    assert result["truncated"] is True and result["samples"] == MAX_SAMPLES


def test_a_full_snippet_of_full_precision_values_fits_in_one_mebibyte(tmp_path: Path) -> None:
    """The cap's reason: at most 40,000 values, each as long as a float's JSON gets, in readings of
    25 rows (a block's fields each time), under the 1 MiB payload of `max_packet_size 1114112`."""
    rng = np.random.default_rng(1)
    result = snippet_of(tmp_path, 2, lambda shape: -rng.uniform(1e-5, 9.9e-5, shape))
    size = len(response("snippet", result=result))
    assert result["samples"] * 2 == MAX_VALUES
    assert size < 1_048_576, size
