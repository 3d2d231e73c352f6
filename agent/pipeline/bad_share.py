"""How much of the last minute a stream's quality was bad: the signal-quality alarms' intermittent rule.

The quality alarms' 10 s rule needs 10 s of unbroken flagged readings, so a strap that lost contact 9 s
of every 10 s never alarmed while the physiological rules judged the tenth that was left (review "ble",
F3). `BadShare` measures, per stream and condition, the bad time of the last `WINDOW_S`: the stream is
bad from a flagged reading until its next reading, good from an unflagged one until the next flagged
one. Only the changes are needed (the first flagged reading after good ones, the first good one after
flagged ones), so the tracker is fed the readings `QualityAlarms` notes anyway, plus a stream's good
readings while a bad stretch is open. A silence is not bad quality (`device_lost` tells it): a stretch
ends `HOLD_S` after its last flagged reading at the latest. Time, not readings, is counted, so a strap
notifying twice a second weighs as much as one notifying once.

`agent.pipeline.technical.QualityAlarms` applies the share with hysteresis (`ON_SHARE`, `OFF_SHARE`).

Across a restart or a reload the trackers are saved with the pipeline's state (`pipeline.json`, key
`SAVED_KEY`, sealed when the outbox is; by the stop's and the start's saves, not the heartbeats':
`agent.session._Session.state_snapshot` says why) and taken back when the break since they were copied
is shorter than `WINDOW_S` (an older one holds nothing of the window any more), for the devices and
stream names whose signal-quality books are restored too (`QualityAlarms.load_shares`). After a crash
they start afresh, as before. Until 2026-12-01 they were
not: a restart during intermittent contact began the minute empty, so the alarm did not start or
ended (review "ble", left over).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import Any

WINDOW_S = 60.0  # the span judged
# A pending episode is kept over good readings while the stream was bad for at least this share of the
# window: half, less a margin, so a 5 s on / 5 s off pattern (exactly half, give or take the readings'
# timing) is caught every time; a 2-of-5 s flicker (40 %) is not.
ON_SHARE = 0.45
# An open episode's flagged readings no longer hold it open once the stream was bad for at most this
# share of the window: a blip every few seconds would otherwise keep "no sensor contact" up for good.
OFF_SHARE = 0.25
HOLD_S = 10.0  # a flagged reading stands for at most this long when no reading follows it
SAVED_KEY = "bad_shares"  # in pipeline.json: {"taken_at": wall time, "rows": `saved_rows`}

Copy = tuple[float | None, float, tuple[tuple[float, float], ...]]  # `BadShare.copied()`


class BadShare:
    """The bad stretches of one stream for one condition, over the last `WINDOW_S`."""

    __slots__ = ("_closed", "_closed_s", "_last_bad", "_open_since")

    def __init__(self) -> None:
        self._open_since: float | None = None  # start of the bad stretch under way
        self._last_bad = 0.0  # its latest flagged reading
        self._closed: deque[tuple[float, float]] = deque()  # ended stretches (start, end), oldest first
        self._closed_s = 0.0  # their total length

    @property
    def open(self) -> bool:
        """A bad stretch is under way: the stream's next reading, flagged or not, must be noted."""
        return self._open_since is not None

    def note(self, time: float, bad: bool) -> None:
        """One reading of the stream at `time`, flagged for this condition or not (in time order)."""
        since = self._open_since
        if since is None:
            if bad:
                self._open_since, self._last_bad = time, time
            return
        held = self._last_bad + HOLD_S
        if bad and time <= held:
            self._last_bad = max(self._last_bad, time)
            return
        end = max(min(time, held), since)  # times that went back count nothing, never less than nothing
        self._closed.append((since, end))
        self._closed_s += end - since
        self._open_since = time if bad else None
        self._last_bad = time
        self._forget(time - WINDOW_S)

    def _forget(self, low: float) -> None:
        """Drop the stretches that ended by `low`: the deque holds one window's, however long it runs."""
        closed = self._closed
        while closed and closed[0][1] <= low:
            start, end = closed.popleft()
            self._closed_s = self._closed_s - (end - start) if closed else 0.0  # no rounding left over

    def bad_s(self, now: float) -> float:
        """Seconds of (now - WINDOW_S, now] the stream was bad."""
        low = now - WINDOW_S
        self._forget(low)
        closed = self._closed
        total = self._closed_s
        if closed and closed[0][0] < low:
            total -= low - closed[0][0]
        if self._open_since is not None:
            total += max(0.0, min(now, self._last_bad + HOLD_S) - max(self._open_since, low))
        return max(total, 0.0)

    def copied(self) -> Copy:
        """What `restored` takes back: the open stretch's start, its latest flagged reading, the ended
        stretches; copied, so the live tracker may go on meanwhile (`tuple` of the deque: C speed, as a
        save copies every tracker on the event loop)."""
        return self._open_since, self._last_bad, tuple(self._closed)

    @classmethod
    def restored(cls, open_since: Any, last_bad: Any, closed: Any) -> BadShare:
        """A tracker from `saved()`'s parts; raises ValueError or TypeError on parts of another shape."""
        share = cls()
        if open_since is not None:
            share._open_since = _number(open_since)
        share._last_bad = _number(last_bad)
        for start, end in closed:
            start, end = _number(start), _number(end)
            if end < start:
                raise ValueError("a stretch ends before it starts")
            share._closed.append((start, end))
            share._closed_s += end - start
        return share

    def shift(self, delta: float) -> None:
        """The stream's clock stepped by `delta` s: every stretch moves with it."""
        if self._open_since is not None:
            self._open_since += delta
            self._last_bad += delta
        self._closed = deque((start + delta, end + delta) for start, end in self._closed)


def _number(value: Any) -> float:
    """A saved time: a finite int or float (JSON has no other number), never a bool."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError("a saved time is not a finite number")
    return float(value)


def saved_rows(copies: Iterable[tuple[str, str, str, Copy]]) -> list[list[Any]]:
    """(condition, device pseudonym, stream, `BadShare.copied()`) as `pipeline.json`'s JSON rows
    [condition, device, stream, open_since, last_bad, [[start, end], ...]] (off the event loop)."""
    return [
        [condition, device, stream, open_since, last_bad, [list(stretch) for stretch in closed]]
        for condition, device, stream, (open_since, last_bad, closed) in copies
    ]
