"""Everything that happens to one stream name (e.g. "vitals") across all devices that have it.

Readings are gated and appended to per-stream windows; each detector scores every stream that has
`hop` new samples, all such streams in one vectorised call; each alarm rule's book turns the scores
into episodes. Scoring is flushed before a stream would receive a second hop, so alarms do not depend
on how readings happen to be batched on the way in. Technical (signal-quality) alarms are noted per
reading and stepped at each flush, all streams of a flush in one book update.

The per-reading path is the hot one (a 250 Hz ECG stream in 8-sample frames is 31 readings/s): it
does a few dictionary and small-array operations and never touches an alarm book.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np
import numpy.typing as npt

from agent.alarms import AlarmBook, StreamRef
from agent.detectors.base import Detector, WindowBlock
from agent.events import AlarmEvent
from agent.pipeline.quality import QualityGate
from agent.pipeline.technical import QualityAlarms
from agent.pipeline.windows import StreamWindows
from agent.readings import Quality, Reading

MAX_BLOCK_SAMPLES = 256


@dataclass(slots=True)
class _Watch:
    """One detector on this stream name, with the alarm books that read its scores."""

    detector: Detector
    books: list[AlarmBook]
    new: npt.NDArray[np.int64]  # new samples per slot since the last score
    flags: npt.NDArray[np.int64]  # OR of quality flags per slot since the last score


class _QualityTexts(Sequence[str]):
    """Each scored stream's quality flags as text, worded only for the rows a book turns into an
    event (a few per thousand hops): wording every row was the largest cost of a flush."""

    __slots__ = ("_flags",)

    def __init__(self, flags: npt.NDArray[np.int64]) -> None:
        self._flags = flags

    def __len__(self) -> int:
        return len(self._flags)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        if isinstance(index, slice):
            return [_describe(int(f)) for f in self._flags[index]]
        return _describe(int(self._flags[index]))


@functools.cache
def _describe(flags: int) -> str:
    return Quality(flags).describe()


class StreamPipeline:
    def __init__(
        self,
        name: str,
        detectors: Sequence[tuple[Detector, list[AlarmBook]]],
        quality_alarms: QualityAlarms,
        pseudonym: Callable[[str], str],
        nominal_period_s: float,
    ) -> None:
        self.name = name
        self.nominal_period_s = nominal_period_s
        channels: list[str] = []
        for detector, _ in detectors:
            channels += [c for c in detector.channels if c not in channels]
        self.channels = tuple(channels)
        self.gate = QualityGate(self.channels)
        # Room for the longest window plus one device block of new samples (a Polar H10 ECG frame is
        # 73 samples, a simulator ECG block 25): a block spanning several hops is scored in one call.
        self.windows = StreamWindows(self.channels, max(d.window for d, _ in detectors) + MAX_BLOCK_SAMPLES)
        self.watches = [
            _Watch(d, books, np.zeros(0, np.int64), np.zeros(0, np.int64)) for d, books in detectors
        ]
        self._columns = {d.id: np.array([self.channels.index(c) for c in d.channels]) for d, _ in detectors}
        self.quality_alarms = quality_alarms
        self._pseudonym = pseudonym
        self._refs: list[StreamRef] = []
        self._last_time = np.zeros(0)
        self.samples = 0
        self.gated_samples = 0

    def ingest(self, reading: Reading) -> list[AlarmEvent]:
        events: list[AlarmEvent] = []
        slot = self._slot(reading.stream)
        if any(w.new[slot] >= w.detector.hop for w in self.watches):
            events += self.flush()
        gated = self.gate.apply(reading)
        period = reading.period_s or self.nominal_period_s  # single samples: the stream's nominal rate
        added = self.windows.append(slot, gated.values, reading.wall_time, period)
        self._last_time[slot] = reading.end_time
        self.samples += reading.n_samples
        self.gated_samples += gated.bad_samples
        for watch in self.watches:
            watch.new[slot] += added
            watch.flags[slot] |= int(gated.quality)
        self.quality_alarms.observe(self._refs[slot], gated.quality, reading.end_time)
        return events

    def flush(self) -> list[AlarmEvent]:
        """Score every stream with at least a hop of new samples, one detector call per detector.

        A block of readings may carry more than one hop (25 ECG samples against a hop of 8): the
        detector then gets its window extended by the extra new samples and is told how many are
        new, so none goes unseen. Streams with different counts are scored in separate calls
        (almost always there is one count)."""
        events = self.quality_alarms.drain()
        for watch in self.watches:
            detector = watch.detector
            due = np.flatnonzero(watch.new >= detector.hop)
            if due.size == 0:
                continue
            ready = self.windows.ready(due, detector.window)
            if not ready.all():
                # Samples before a full window can never be judged: forget them, or a warming-up
                # stream would trigger a flush (scoring only its neighbours) on every reading.
                waiting = due[~ready]
                watch.new[waiting] = 0
                watch.flags[waiting] = 0
                due = due[ready]
            most = self.windows.window - detector.window + detector.hop  # what the buffer can show
            new = np.minimum(watch.new[due], most)
            for count in np.unique(new):
                events += self._score(watch, due[new == count], int(count))
        return events

    def _score(self, watch: _Watch, due: npt.NDArray[np.int64], new_samples: int) -> list[AlarmEvent]:
        detector = watch.detector
        length = detector.window + new_samples - detector.hop
        values = self.windows.windows(due, length)[:, :, self._columns[detector.id]]
        times = self._last_time[due]
        scores = detector.score(WindowBlock(values=values, slots=due, end_times=times, hop=new_samples))
        flags = watch.flags[due]
        watch.new[due] = 0
        watch.flags[due] = 0
        quality_ok = flags == 0
        quality_text = _QualityTexts(flags)
        refs = [self._refs[s] for s in due]
        events: list[AlarmEvent] = []
        for book in watch.books:
            events += book.update(refs, scores, times, quality_ok, quality_text)
        return events

    def _slot(self, stream: str) -> int:
        slot = self.windows.slot(stream)
        if slot == len(self._refs):
            device, name = stream.split("/", 1)
            self._refs.append(StreamRef(self._pseudonym(device), name))
            size = len(self._refs)
            for watch in self.watches:
                watch.new = np.resize(watch.new, size)
                watch.new[slot] = 0
                watch.flags = np.resize(watch.flags, size)
                watch.flags[slot] = 0
            self._last_time = np.resize(self._last_time, size)
        return slot
