"""Decoded serial frames and lines → `Reading`s: channel table, clocks, stream names, quality flags.

Frame protocol (docs/serial-protocol.md). DATA is meaningless without the channel table of the
device's HELLO, so DATA arriving before a HELLO is dropped (counted in `waiting_hello`) and the
source asks the device for one (COMMAND SEND_HELLO). A new HELLO replaces the table: the device
rebooted or was swapped.

Stream names. HELLO declares channels, not streams, so the name comes from the block's rate:
a block at or below `WAVEFORM_HZ` is periodic measurements and goes to the device kind's default
stream (``"vitals"`` for a wearable, ``"machine"`` for equipment), the names the detectors use; a
faster block is a waveform and is named after its channels (``"ecg"``; ``acc_x, acc_y`` → ``"acc"``
by their common part before ``_``). Firmware that keeps one rate per block (as the reference
encoder does) therefore gets stable streams with a stable channel set.

Clock. Wall time of a block = device time of its first sample + an offset fixed on the first DATA
after a HELLO or reconnect (gateway wall clock minus the frame's device time). The offset is
re-anchored when the two clocks disagree by more than `REANCHOR_S` (device reset, drift).

Quality. GAP on the first block of each stream after a sequence gap or a reconnect; DEVICE_FAULT
on blocks within `FAULT_HOLD_S` (device time) after an EVENT FAULT, LOW_BATTERY likewise after
BATTERY_LOW. A DATA block naming channels the HELLO did not declare, or holding several samples
while HELLO declared no usable rate (0, negative, NaN, inf), is counted as a bad frame.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable

import numpy as np

from agent.readings import Quality, Reading, stream_id
from firmware_bridge import ChannelMapError, Frame, LineSample, channel_names, to_physical
from firmware_bridge.frame_messages import DataBlock, Event, EventKind, Hello

WAVEFORM_HZ = 10.0
REANCHOR_S = 2.0
FAULT_HOLD_S = 10.0
WAITING_HELLO_TELL_S = 3.0  # DATA dropped this long for want of a HELLO is told: SEND_HELLO went unanswered
DEFAULT_STREAM = {"wearable": "vitals", "equipment": "machine"}

log = logging.getLogger("agent.sources.serial")  # the serial source's logger: docs name it


def waveform_stream(names: tuple[str, ...]) -> str:
    """``("ecg",)`` → ``"ecg"``; ``("acc_x", "acc_y")`` → ``"acc"``; otherwise the first name."""
    heads = {name.split("_", 1)[0] for name in names}
    if len(names) > 1 and len(heads) == 1 and all("_" in name for name in names):
        return heads.pop()
    return names[0]


def _tell_dropping(device_id: str, dropped: int, over_s: float) -> None:
    """DATA arrives and is all dropped: without this line the device only looks silent."""
    log.warning(
        "%s: %d DATA frame(s) over %.0f s and no HELLO: they are dropped (errors waiting_hello) until "
        "the device sends one; it does not answer SEND_HELLO, so firmware that sends HELLO only at "
        "boot needs a device reset",
        device_id,
        dropped,
        over_s,
    )


def _tell_hello_after_drops(device_id: str, dropped: int, told: bool) -> None:
    log.log(
        logging.INFO if told else logging.DEBUG,
        "%s: HELLO received; %d DATA frame(s) before it were dropped",
        device_id,
        dropped,
    )


class FrameReadings:
    """Turns frames of one device link into readings; keeps HELLO, clock anchor and pending flags."""

    def __init__(self, device_id: str, default_stream: str, clock: Callable[[], float]) -> None:
        self.device_id = device_id
        self.default_stream = default_stream
        self._clock = clock
        self.hello: Hello | None = None
        self._offset_s: float | None = None
        self._gap_streams: set[str] | None = None  # None: every stream's next block is flagged GAP
        self._gap_all = False
        self._fault_until_us = -1
        self._battery_until_us = -1
        self.waiting_hello = 0  # DATA frames dropped for want of a HELLO
        self._first_drop_at: float | None = None  # monotonic; None once told (or before any drop)
        self.bad_blocks = 0  # DATA blocks that do not match the HELLO
        self.gaps = 0  # gap episodes (sequence gaps and reconnects after data)
        self.faults = 0
        self._had_data = False

    def link_restarted(self) -> None:
        """The link was lost and re-established: re-anchor the clock, flag the next blocks as GAP."""
        self._offset_s = None
        if self._had_data:
            self._mark_gap()

    def _mark_gap(self) -> None:
        self.gaps += 1
        self._gap_all = True
        self._gap_streams = set()

    def take(self, frame: Frame, monotonic: float) -> Reading | None:
        message = frame.message
        if isinstance(message, Hello):
            if self.hello is None and self.waiting_hello:
                _tell_hello_after_drops(self.device_id, self.waiting_hello, self._first_drop_at is None)
            if self.hello is not None and self._had_data and message != self.hello:
                self._mark_gap()  # a different device or table: what came before does not continue
            self.hello = message
            self._offset_s = None
            return None
        if isinstance(message, Event):
            self._event(message, frame.device_time_us)
            return None
        if not isinstance(message, DataBlock):
            return None  # ACK and our own COMMAND echoes carry no samples
        if self.hello is None:
            self.waiting_hello += 1
            if self.waiting_hello == 1:
                self._first_drop_at = monotonic
            elif self._first_drop_at is not None and monotonic - self._first_drop_at >= WAITING_HELLO_TELL_S:
                _tell_dropping(self.device_id, self.waiting_hello, monotonic - self._first_drop_at)
                self._first_drop_at = None  # once per source
            return None
        if frame.gap_before and self._had_data:
            self._mark_gap()
        try:
            names = channel_names(message, self.hello)
            values = to_physical(message, self.hello)
        except ChannelMapError:
            self.bad_blocks += 1
            return None
        rate = self.hello.channels[message.channels[0]].rate_hz
        period = 1.0 / rate if rate > 0 else 0.0
        if values.shape[0] > 1 and not 0.0 < period < math.inf:
            # a block of samples needs a spacing; HELLO declared a rate of 0, < 0, NaN or inf
            self.bad_blocks += 1
            return None
        stream = self.default_stream if rate <= WAVEFORM_HZ else waveform_stream(names)
        wall = self._wall_time(frame.device_time_us, message.first_sample_us, values.shape[0], period)
        quality = self._quality(stream, message.first_sample_us)
        self._had_data = True
        values.flags.writeable = False
        return Reading(
            stream_id(self.device_id, stream),
            names,
            values,
            wall,
            monotonic,
            period if values.shape[0] > 1 else 0.0,
            quality,
        )

    def _event(self, event: Event, device_time_us: int) -> None:
        hold = device_time_us + int(FAULT_HOLD_S * 1e6)
        if event.kind is EventKind.FAULT:
            self.faults += 1
            self._fault_until_us = hold
        elif event.kind is EventKind.BATTERY_LOW:
            self._battery_until_us = hold

    def _quality(self, stream: str, first_us: int) -> Quality:
        quality = Quality.OK
        if self._gap_all and self._gap_streams is not None and stream not in self._gap_streams:
            self._gap_streams.add(stream)
            quality |= Quality.GAP
        if first_us <= self._fault_until_us:
            quality |= Quality.DEVICE_FAULT
        if first_us <= self._battery_until_us:
            quality |= Quality.LOW_BATTERY
        return quality

    def _wall_time(self, frame_us: int, first_us: int, n: int, period: float) -> float:
        now = self._clock()
        end_s = frame_us / 1e6
        if self._offset_s is None or abs(self._offset_s + end_s - now) > REANCHOR_S:
            self._offset_s = now - end_s
        wall = self._offset_s + first_us / 1e6
        if not math.isfinite(wall):  # absurd device times: fall back to arrival time
            wall = now - (n - 1) * period
        return wall


class LineReadings:
    """CSV / JSON lines → one single-sample reading each on the default stream, stamped at arrival."""

    def __init__(self, device_id: str, default_stream: str, channels: Iterable[str]) -> None:
        self.stream = stream_id(device_id, default_stream)
        self.channels = tuple(channels)
        self._gap_next = False
        self._had_data = False
        self.gaps = 0

    def link_restarted(self) -> None:
        if self._had_data:
            self.gaps += 1
            self._gap_next = True

    def take(self, sample: LineSample, wall_time: float, monotonic: float) -> Reading:
        quality = Quality.GAP if self._gap_next else Quality.OK
        self._gap_next = False
        self._had_data = True
        values = np.array([sample.values], dtype=np.float64)
        return Reading(self.stream, self.channels, values, wall_time, monotonic, 0.0, quality)
