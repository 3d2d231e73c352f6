"""Sliding windows: contents, NaN gap fill, many streams, and equality with a naive reference."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.pipeline.windows import StreamWindows


def test_window_holds_the_newest_samples_oldest_first() -> None:
    windows = StreamWindows(("a", "b"), window=4)
    slot = windows.slot("dev/vitals")
    for i in range(10):
        windows.append(slot, np.array([[i, -i]], dtype=float), float(i), 1.0)
    got = windows.windows(np.array([slot]))
    assert got.shape == (1, 4, 2)
    assert got[0, :, 0].tolist() == [6, 7, 8, 9]
    assert got[0, :, 1].tolist() == [-6, -7, -8, -9]
    assert windows.ready(np.array([slot])).tolist() == [True]


def test_time_gaps_become_nan_rows() -> None:
    windows = StreamWindows(("x",), window=5)
    slot = windows.slot("d/s")
    windows.append(slot, np.array([[1.0]]), 0.0, 1.0)
    added = windows.append(slot, np.array([[2.0]]), 3.0, 1.0)  # samples at t=1 and t=2 are missing
    assert added == 3
    got = windows.windows(np.array([slot]))[0, :, 0]
    assert np.isnan(got[0]) and got[1] == 1.0 and np.isnan(got[2:4]).all() and got[4] == 2.0
    assert windows.append(slot, np.array([[3.0]]), 5.2, 1.0) == 1  # 2.2 periods: jitter, not a gap


def test_not_ready_until_a_full_window_and_unfilled_part_is_nan() -> None:
    windows = StreamWindows(("x",), window=3)
    slot = windows.slot("d/s")
    windows.append(slot, np.array([[5.0]]), 0.0, 1.0)
    assert windows.ready(np.array([slot])).tolist() == [False]
    got = windows.windows(np.array([slot]))[0, :, 0]
    assert np.isnan(got[:2]).all() and got[2] == 5.0


@settings(max_examples=60, deadline=None)
@given(
    blocks=st.lists(
        st.tuples(st.integers(0, 2), st.integers(1, 12)),  # (stream, block length)
        min_size=1,
        max_size=40,
    ),
    window=st.integers(1, 9),
)
def test_many_streams_match_a_naive_reference(blocks: list[tuple[int, int]], window: int) -> None:
    windows = StreamWindows(("x",), window=window)
    history: dict[int, list[float]] = {0: [], 1: [], 2: []}
    counter = 0.0
    for stream, length in blocks:
        slot = windows.slot(f"dev{stream}/s")
        values = np.arange(counter, counter + length, dtype=float)[:, None]
        start = float(len(history[stream]))  # contiguous in time: no gap fill
        windows.append(slot, values, start, 1.0)
        history[stream] += values[:, 0].tolist()
        counter += length
    for stream, seen in history.items():
        if not seen:
            continue
        slot = windows.slot(f"dev{stream}/s")
        got = windows.windows(np.array([slot]))[0, :, 0]
        expected = ([np.nan] * window + seen)[-window:]
        np.testing.assert_array_equal(got, np.array(expected))
    # Many slots in one call, in any order and with repeats, for every length up to the window: a
    # stream that has seen fewer samples reads NaN before them, never its neighbour's row.
    slots = np.array([windows.slot(f"dev{s}/s") for s in (2, 0, 1, 0)], dtype=np.int64)
    names = [int(name[3]) for name in windows.streams]
    for length in range(1, window + 1):
        many = windows.windows(slots, length)
        assert many.shape == (4, length, 1)
        for row, slot in enumerate(slots.tolist()):
            expected = ([np.nan] * window + history[names[slot]])[-length:]
            np.testing.assert_array_equal(many[row, :, 0], np.array(expected))
