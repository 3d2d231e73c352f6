"""Per-stream sliding windows kept in one numpy array for all streams of the same name.

Each stream owns a row ("slot") of a (slots, 2*W, C) buffer and appends at its own write position;
when a row fills, its newest W samples are shifted to the front (amortised O(1) per sample). A
window is then a contiguous view `buf[slot, pos-W:pos]`, and the windows of many streams are taken
with one fancy index. Gaps in time become NaN rows so windows keep their time meaning.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from agent.readings import FloatArray

IntArray = npt.NDArray[np.int64]

GAP_PERIODS = 2.5  # a silence longer than this many sample periods is a gap


class StreamWindows:
    """Windows of `window` samples over `channels` for a growing set of streams."""

    def __init__(self, channels: tuple[str, ...], window: int, max_gap_fill: int | None = None) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self.channels = channels
        self.window = window
        self.max_gap_fill = window if max_gap_fill is None else max_gap_fill
        self._cap = 2 * window
        self._buf: FloatArray = np.full((0, self._cap, len(channels)), np.nan)
        self._pos: IntArray = np.zeros(0, dtype=np.int64)
        self._filled: IntArray = np.zeros(0, dtype=np.int64)  # samples seen, capped at window
        self._filled_list: list[int] = []  # the same, for reading one slot at a time
        self._last_time: list[float] = []  # per slot; read one at a time, so a list is cheapest
        self._slots: dict[str, int] = {}

    @property
    def streams(self) -> list[str]:
        return list(self._slots)

    def slot(self, stream: str) -> int:
        """The stream's row, created on first sight."""
        slot = self._slots.get(stream)
        if slot is None:
            slot = len(self._slots)
            self._slots[stream] = slot
            grow = max(4, len(self._slots))  # grow geometrically to keep appends cheap
            if slot >= self._buf.shape[0]:
                self._buf = np.concatenate(
                    [self._buf, np.full((grow, self._cap, len(self.channels)), np.nan)]
                )
                self._pos = np.concatenate([self._pos, np.zeros(grow, dtype=np.int64)])
                self._filled = np.concatenate([self._filled, np.zeros(grow, dtype=np.int64)])
                self._filled_list += [0] * grow
                self._last_time += [math.nan] * grow
        return slot

    def append(self, slot: int, samples: FloatArray, first_time: float, period_s: float) -> int:
        """Append (n, C) samples spaced `period_s` apart; returns how many rows were added (samples
        plus NaN gap fill). A silence longer than `GAP_PERIODS` periods is filled with NaN rows, so
        a dropout stays visible in the window; shorter jitter (or an irregular stream) is not."""
        added = 0
        last = self._last_time[slot]
        if period_s > 0 and (first_time - last) / period_s > GAP_PERIODS:  # False while last is NaN
            fill = min(round((first_time - last) / period_s) - 1, self.max_gap_fill)
            added += self._write(slot, np.full((fill, samples.shape[1]), np.nan))
        added += self._write(slot, samples)
        self._last_time[slot] = first_time + (samples.shape[0] - 1) * period_s
        return added

    def shift_time(self, slot: int, delta: float) -> None:
        """The clock of the slot's readings stepped by `delta` s: its last sample time moves with it, so
        the step is neither taken for a silence (NaN fill) nor for samples going back."""
        self._last_time[slot] += delta

    def _write(self, slot: int, rows: FloatArray) -> int:
        n = int(rows.shape[0])
        if n >= self.window:  # only the newest `window` rows can ever be read
            rows = rows[-self.window :]
        m = rows.shape[0]
        pos = int(self._pos[slot])
        if pos + m > self._cap:
            keep = self.window - m
            self._buf[slot, :keep] = self._buf[slot, pos - keep : pos] if keep > 0 else self._buf[slot, :0]
            pos = keep
        self._buf[slot, pos : pos + m] = rows
        self._pos[slot] = pos + m
        filled = self._filled_list[slot]
        if filled < self.window:  # `_filled` (for vectorised `ready`) only changes while warming up
            filled = self._filled_list[slot] = min(self.window, filled + n)
            self._filled[slot] = filled
        return n

    def continues(self, slots: IntArray, times: FloatArray, periods: FloatArray) -> npt.NDArray[np.bool_]:
        """Which single samples at `times` (spaced `periods` in their streams) `append` would write with
        no gap fill after a known previous sample: those `append_rows` may take. Same arithmetic as
        `append`; an unknown (NaN) last time or a period that is not finite and positive says False."""
        last = np.array([self._last_time[s] for s in slots.tolist()])
        with np.errstate(invalid="ignore", divide="ignore"):
            steps = (times - last) / periods
        # A NaN step (no last time) compares False.
        ok: npt.NDArray[np.bool_] = np.isfinite(periods) & (periods > 0) & (steps <= GAP_PERIODS)
        return ok

    def append_rows(self, slots: IntArray, rows: FloatArray, times: FloatArray) -> None:
        """`append` one sample to each of `slots` at once: `rows` (k, C), `slots` distinct, and each
        sample one `continues` allowed (no gap fill). A row that would run past the buffer first has
        its newest `window - 1` samples shifted to the front, as `_write` does."""
        pos = self._pos[slots]
        full = pos >= self._cap
        if full.any():  # once every `window` samples of a stream: a few rows per round
            keep = self.window - 1
            wrap = slots[full][:, None]
            self._buf[wrap, np.arange(keep)] = self._buf[wrap, self._cap - keep + np.arange(keep)]
            pos[full] = keep
        self._buf[slots, pos] = rows
        self._pos[slots] = pos + 1
        filled = self._filled[slots]
        warming = filled < self.window
        if warming.any():
            grown = slots[warming]
            self._filled[grown] = filled[warming] + 1
            for slot, count in zip(grown.tolist(), (filled[warming] + 1).tolist(), strict=True):
                self._filled_list[slot] = count
        for slot, time in zip(slots.tolist(), times.tolist(), strict=True):
            self._last_time[slot] = time

    def append_frames(
        self, slots: IntArray, frames: FloatArray, times: FloatArray, periods: FloatArray
    ) -> None:
        """`append` one frame to each of `slots` at once: `frames` (k, n, C) with their first samples at
        `times`, spaced `periods`; `slots` distinct, and each frame one `continues` allowed (no gap
        fill). As `_write`: only the newest `window` samples are kept, and a row that would run past the
        buffer first has its newest samples shifted to the front."""
        n = frames.shape[1]
        rows = frames[:, -self.window :] if n >= self.window else frames
        m = rows.shape[1]
        pos = self._pos[slots]
        full = pos + m > self._cap
        if full.any():
            keep = self.window - m
            if keep > 0:  # a few slots a round: a slice copy each costs a tenth of one fancy-indexed copy
                for slot, end in zip(slots[full].tolist(), pos[full].tolist(), strict=True):
                    self._buf[slot, :keep] = self._buf[slot, end - keep : end]
            pos[full] = keep
        # Along the buffer's (slots * 2W, C) rows, as `windows` reads: half the cost of (slot, position)
        # pairs (500 frames of 73 samples: 53 against 105 µs). A view, or the write would be lost.
        channels = self._buf.shape[2]
        index = ((slots * self._cap + pos)[:, None] + np.arange(m)).ravel()
        self._buf.reshape((-1, channels), copy=False)[index] = rows.reshape(-1, channels)
        self._pos[slots] = pos + m
        filled = self._filled[slots]
        warming = filled < self.window
        if warming.any():
            grown, counts = slots[warming], np.minimum(self.window, filled[warming] + n)
            self._filled[grown] = counts
            for slot, count in zip(grown.tolist(), counts.tolist(), strict=True):
                self._filled_list[slot] = count
        lasts = times + (n - 1) * periods  # as `append` has it
        for slot, time in zip(slots.tolist(), lasts.tolist(), strict=True):
            self._last_time[slot] = time

    def ready(self, slots: IntArray, length: int | None = None) -> npt.NDArray[np.bool_]:
        """Which of `slots` have seen `length` samples (default: the full window) yet."""
        return self._filled[slots] >= (self.window if length is None else length)

    def windows(self, slots: IntArray, length: int | None = None) -> FloatArray:
        """(len(slots), length, C) newest windows, oldest sample first; a copy.

        Each window is a contiguous run of rows of the buffer seen as one (slots * 2W, C) array, so
        when every slot holds `length` samples the windows are picked by their first row from that
        array's sliding-window view: one fancy index of len(slots) rows, no (len(slots), length) index
        array (500 ECG windows of 565 samples: ~0.25 against ~0.65-1.6 ms, 2,000 60-sample vitals
        windows: 0.23 against 0.38 ms, micro-benchmarks). Otherwise (a slot still filling) the
        rows are gathered with `take` along its first axis, which costs a tenth of indexing the
        (slot, position) pairs (60-sample vitals windows of 2,000 streams: 0.2 ms against 3.4 ms)."""
        length = self.window if length is None else length
        channels = self._buf.shape[2]
        ends = self._pos[slots]
        rows = self._buf.reshape(-1, channels)
        starts = slots * self._cap + (ends - length)
        short = ends < length  # rows not yet filled that far: read the missing samples as NaN
        if len(slots) and length and not short.any():
            runs = sliding_window_view(rows, length, axis=0)  # (rows - length + 1, C, length), a view
            picked: FloatArray = np.ascontiguousarray(runs[starts].transpose(0, 2, 1))
            return picked
        steps = np.arange(length)
        index = starts[:, None] + steps[None, :]
        if short.any():
            index = np.maximum(index, (slots * self._cap)[:, None])
        out: FloatArray = np.take(rows, index.ravel(), axis=0).reshape(len(slots), length, channels)
        if short.any():
            out[(ends - length)[:, None] + steps[None, :] < 0] = np.nan
        return out
