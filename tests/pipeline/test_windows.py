"""Sliding windows: contents, NaN gap fill, many streams, and equality with a naive reference."""

from __future__ import annotations

import tracemalloc

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


@settings(max_examples=40, deadline=None)
@given(
    blocks=st.lists(
        st.tuples(st.integers(0, 2), st.integers(1, 12)),  # (stream, block length)
        min_size=1,
        max_size=40,
    ),
    window=st.integers(1, 9),
)
def test_many_channels_match_a_naive_reference(blocks: list[tuple[int, int]], window: int) -> None:
    """As above with three channels: the windows picked from the buffer's sliding view (every slot
    full) and gathered row by row (a slot still filling) hold each stream's samples, channels in order,
    as one contiguous array."""
    windows = StreamWindows(("x", "y", "z"), window=window)
    history: dict[int, list[list[float]]] = {0: [], 1: [], 2: []}
    counter = 0.0
    for stream, length in blocks:
        slot = windows.slot(f"dev{stream}/s")
        values = np.arange(counter, counter + 3 * length, dtype=float).reshape(length, 3)
        windows.append(slot, values, float(len(history[stream])), 1.0)
        history[stream] += values.tolist()
        counter += 3 * length
    seen = [s for s in (2, 0, 1, 0) if history[s]]
    slots = np.array([windows.slot(f"dev{s}/s") for s in seen], dtype=np.int64)
    for length in range(1, window + 1):
        many = windows.windows(slots, length)
        assert many.shape == (len(seen), length, 3) and many.flags.c_contiguous
        for row, stream in enumerate(seen):
            expected = ([[np.nan] * 3] * window + history[stream])[-length:]
            np.testing.assert_array_equal(many[row], np.array(expected))


def test_full_windows_are_picked_without_an_index_per_sample() -> None:
    """500 full ECG-sized windows (565 samples) are picked by their first rows: the call holds little
    beyond its result (a (500, 565) int64 index of rows, as `take` needs, would double it)."""
    windows = StreamWindows(("x",), window=565)
    slots = np.array([windows.slot(f"d{i}/ecg") for i in range(500)], dtype=np.int64)
    for slot in slots.tolist():
        windows.append(slot, np.arange(700.0)[:, None] + slot, 0.0, 1.0)
    tracemalloc.start()
    try:
        got = windows.windows(slots)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got[7, :, 0].tolist() == (np.arange(135.0, 700.0) + 7).tolist()
    assert peak < 1.5 * got.nbytes
