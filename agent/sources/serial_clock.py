"""When a serial device's samples were taken, in gateway wall time, however late they are read.

Serial bytes can reach the agent late: the source reads only when the pipeline asks (a stall leaves
them in the kernel buffer), and a device may hold a store-and-forward backlog and flush it at once.
Stamping samples at their arrival folds such a backlog into an instant or a saw-tooth, and an episode
the device sent in real time never lasts long enough to alarm (audit of 2026-11-30, finding 1).

Frames carry the device's µs clock (docs/serial-protocol.md), so `DeviceClock` keeps its spacing. It
maps device time onto the gateway's *monotonic* clock with an offset taken from the frames that
arrived with the least delay: ``offset = min(arrival − device time)`` over the frames seen. A late
frame has a larger difference and leaves the offset alone, so a backlog keeps its real, past times
and stays in order. The frames of one read arrived together, so each is also bounded by the newest
of them (`newest_in_runs`): a backlog read right after a fresh anchor keeps its spacing too. The
offset shrinks at once to any frame's difference, so no sample is ever stamped after its arrival;
it may grow (a device clock running slow) by `SLEW` of the time that passed by both clocks (the
lesser), so a backlog read at once cannot drag it. The wall time is that monotonic time plus the
gateway's current ``wall − monotonic``: a step of the gateway clock (NTP, an admin) moves every
later reading with it (agent.clock). The offset is taken afresh when the device's clock starts
over: its time goes backwards (a reboot: it counts µs since boot), a HELLO announces another
device, or a HELLO is stamped well before the time the anchor expects at its arrival (`hello`). The
last is the reboot that going back misses: a device off for longer than it had been up (unplugged
an hour after 5 s of uptime) comes back with a time past its last one, and its live data would be
stamped in the past by the whole outage (review of 2026-11-30, finding 3). Devices send HELLO at boot
and the source asks for one at every open, and a frame's header is stamped when it is sent, so a
running device's HELLO is on time while a rebooted one's is behind by the outage. A backlog the
device held while the link was down keeps its real times: its HELLO is on time. A device clock
running ahead of the gateway's, or jumping forward, is pulled back to the arrival, so its blocks may
go back in time across reads.

Lines (CSV, JSON) carry no time. `line_times` spaces the lines of one read over what the kernel held
them for: at the configured line rate (``serial.rate_hz``), ending at the arrival, never before the
previous reading (in monotonic time) and never after the arrival. Without a configured rate the lines
are spread evenly since the previous read, which is right whenever the device kept sending while the
agent was not reading.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

SLEW = 0.02  # the offset grows by at most 2 % of the time passed: clocks that slow are broken anyway
# A HELLO this much behind the anchor's expectation (beyond a SLEW-slow clock's lag) is a reboot: more
# than a frame's way through a USB adapter and a busy agent's read, far less than a reboot's outage.
HELLO_LATE_S = 1.0


class DeviceClock:
    """Device µs of one link → gateway wall seconds; see the module docstring."""

    def __init__(self) -> None:
        self._offset: float | None = None  # gateway monotonic − device seconds, least delay seen
        self._frame_us = -1  # header time of the last block (per sender, it never goes back)
        self._end_s = 0.0  # device seconds of the last block's end
        self._arrival = 0.0  # gateway monotonic seconds it was read at
        self.restarts = 0  # times the device clock started over (went back, a late HELLO) after an anchor

    def restart(self) -> None:
        """Another clock (another device): the next block sets the offset afresh."""
        self._offset = None

    def hello(self, frame_us: int, arrival_mono: float, newest_us: int = 0) -> bool:
        """A HELLO of the same device, sent at `frame_us` and read at `arrival_mono` (`newest_us`: as in
        `wall_time`). True, and the next block sets the offset afresh, when the device's clock started
        over: its time is behind what the anchor expects by more than a clock `SLEW` slow would lag
        since the last block, plus `HELLO_LATE_S`."""
        offset = self._offset
        if offset is None:
            return False
        sent = max(frame_us, newest_us) / 1e6  # frames read with it had been sent too
        behind = arrival_mono - offset - sent
        if not behind > SLEW * max(0.0, arrival_mono - self._arrival) + HELLO_LATE_S:
            return False
        self.restarts += 1
        self._offset = None
        return True

    def wall_time(
        self,
        frame_us: int,
        first_us: int,
        last_us: int,
        arrival_mono: float,
        wall_minus_mono: float,
        newest_us: int = 0,
    ) -> float:
        """Gateway wall time of a block's first sample. `frame_us`: the frame header's device time;
        `first_us`, `last_us`: its first and last samples'; `arrival_mono`: gateway monotonic time the
        bytes were read at; `wall_minus_mono`: the gateway's wall − monotonic at that moment;
        `newest_us`: the newest device time read with it (`newest_in_runs`), which had arrived too."""
        end_s = max(frame_us, last_us) / 1e6  # the block was complete by then
        least = arrival_mono - max(end_s, newest_us / 1e6)
        offset = self._offset
        if offset is None or frame_us < self._frame_us:
            if offset is not None:
                self.restarts += 1
            offset = least
        else:
            # a slow device clock shows as frames arriving later and later, block after block, in real
            # time: growth is bounded by the device time and by the real time that passed, so blocks
            # read together (a backlog, a flush) cannot move it
            passed = min(end_s - self._end_s, arrival_mono - self._arrival)
            offset = min(least, offset + SLEW * max(0.0, passed))
        self._offset, self._frame_us, self._end_s, self._arrival = offset, frame_us, end_s, arrival_mono
        wall = wall_minus_mono + offset + first_us / 1e6
        if not math.isfinite(wall):  # absurd device times: the block ends at its arrival
            wall = wall_minus_mono + arrival_mono - (last_us - first_us) / 1e6
        return wall


def line_times(count: int, arrival_mono: float, previous_mono: float | None, period_s: float) -> list[float]:
    """Monotonic times of `count` lines read together at `arrival_mono`, the last one at it. They are
    `period_s` apart (0: unknown), squeezed to fit after `previous_mono` (the previous line's time;
    None: none on this link)."""
    if count == 1:
        return [arrival_mono]
    room = math.inf if previous_mono is None else max(0.0, arrival_mono - previous_mono)
    spread = room / count  # evenly since the previous line; inf without one
    if period_s > 0:
        spread = min(period_s, spread)
    step = spread if math.isfinite(spread) else 0.0
    return [arrival_mono - (count - 1 - i) * step for i in range(count)]


def newest_in_runs(times_us: Sequence[int]) -> list[int]:
    """For the device times of the frames of one read, in order: the newest time of each one's run
    (frames up to the device's time going back, a restart). All of them had arrived, so none of the
    run's samples can be later than the read minus how much older than the newest they are."""
    newest = list(times_us)
    for i in range(len(newest) - 2, -1, -1):
        if times_us[i + 1] >= times_us[i]:  # the run goes on: its newest is the next one's
            newest[i] = newest[i + 1]
    return newest
