"""Decoded serial frames and lines → `Reading`s: channel table, clocks, stream names, quality flags.

Frame protocol (docs/serial-protocol.md). DATA is meaningless without the channel table of the
device's HELLO, so DATA arriving before a HELLO is dropped (counted in `waiting_hello`) and the
source asks the device for one (COMMAND SEND_HELLO). A new HELLO replaces the table: the device
rebooted or was swapped; one unlike the last is logged (without the ids: the log redactor does not
know them), and the device's clock anchor, fault holds and next blocks (GAP) start over.

Stream names. HELLO declares channels, not streams, so the name comes from the block's rate:
a block at or below `WAVEFORM_HZ` is periodic measurements and goes to the device kind's default
stream (``"vitals"`` for a wearable, ``"machine"`` for equipment), the names the detectors use; a
faster block is a waveform and is named after its channels (``"ecg"``; ``acc_x, acc_y`` → ``"acc"``
by their common part before ``_``). Firmware that keeps one rate per block (as the reference encoder
does) therefore gets stable streams with a stable channel set. Vital signs a HELLO declares above
`WAVEFORM_HZ` go to such a stream too, which the pipeline tells when detectors read them on another
(`agent.pipeline.wiring.UnwatchedStreams`); a HELLO with a rate that is none (`unusable_rate`) is
refused and the data waits for a usable one. Every reading declares the HELLO rate as its spacing, a
single sample too (the pipeline checks detectors' ``rate_hz`` against it), and blocks that come faster
than that rate by the device's clock are told once (`_pace`).

Clock. A block's wall time comes from the device's own µs clock (`agent.sources.serial_clock`): its
samples keep the device's spacing however late they are read (a stalled agent, a store-and-forward
backlog), and the clock's anchor starts over only when the device's time goes back (a reboot), a
HELLO names another device, or a HELLO is stamped well before the anchor expects (a reboot while
the link was down: `DeviceClock.hello`). Lines carry no time: the lines of one read are spaced back
from their arrival (`serial_clock.line_times`).

Quality. GAP on the first block of each stream after a sequence gap or a reconnect; DEVICE_FAULT
on blocks within `FAULT_HOLD_S` (device time) after an EVENT FAULT, LOW_BATTERY within
`BATTERY_HOLD_S` after BATTERY_LOW; a device clock that starts over ends both. The holds outlast the
signal-quality alarms' 10 s minimum duration (agent.pipeline.technical.QualityAlarms), so one event
raises device_fault / battery_low: until 2026-11-30 the fault hold was those same 10 s, and a single
FAULT gated 10 s of data and raised nothing (audit auddev, finding 4). Each fault and low battery is
logged when it begins (its code and the state of charge; the fault's detail value is not logged, it
may carry a measurement). A DATA block naming channels the HELLO did not declare, or a channel whose
scale or offset is not finite, is counted as a bad frame (`bad_blocks`); one whose first sample is more
than a second after its frame's header time, or older than any backlog (`BLOCK_AHEAD_US`), too
(`bad_times`), before the clock sees it.

Units. A channel's declared unit is brought to the unit the detectors read it in, where one is known
(`agent.sources.serial_units`): converted, or no value when it cannot be.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from agent.logs import device_name
from agent.readings import Quality, Reading, stream_id
from agent.sources.serial_clock import DeviceClock, line_times, newest_in_runs
from agent.sources.serial_units import HelloUnits
from agent.units import ExpectedUnits
from firmware_bridge import ChannelMapError, Frame, LineSample, channel_names, to_physical
from firmware_bridge.frame_messages import DataBlock, Event, EventKind, Hello

WAVEFORM_HZ = 10.0
# Device seconds the flags hold after one event: longer than the signal-quality alarms' 10 s minimum
# duration plus a few reading periods (readings up to ~2.5 s apart), so one event raises the alarm.
# LOW_BATTERY only informs (agent.readings.INVALIDATING), so its hold costs no data.
FAULT_HOLD_S = 15.0
BATTERY_HOLD_S = 60.0
EARLY_BLOCKS = 10  # blocks in a row beginning half a period or more before the HELLO rate says
WAITING_HELLO_TELL_S = 3.0  # DATA dropped this long for want of a HELLO is told: SEND_HELLO went unanswered
# A block's first sample is taken before the frame carrying it is sent (docs/serial-protocol.md, "Device
# time at the gateway"): a first sample later than its header by more than this, or older than the longest
# believable store-and-forward backlog, is a firmware bug. Such a block is refused: one with samples an hour
# "ahead" pulled the clock anchor back by the hour, and every later block was stamped an hour in the past
# (review of 2026-11-30, finding 1). The later samples may well be after the header: firmware that stamps
# the header at the block's first sample, or a HELLO rate below the real one, spreads them past it. The
# clock takes the block's end as its time (`DeviceClock.wall_time`), so they move the anchor by at most
# the block's own length; refusing them lost every block of such devices (review of the fixes, 2026-11-30).
BLOCK_AHEAD_US = 1_000_000
BLOCK_BACKLOG_US = 30 * 86_400 * 1_000_000
BAD_TIMES_TELL_S = 600.0  # a device sending such blocks is told at most this often
# A HELLO rate outside this is a firmware bug, not a device: a NaN or 1e9 Hz rate named a waveform stream
# after the vital signs' first channel, and the `vitals` detectors saw nothing (review of 2026-11-30,
# finding 3). One sample every 27.8 h to 100 kHz (two bytes a sample already fill a 1.6 Mbit/s link). The
# bounds are compared as the wire's f32 carries them: f32(1e-5) is 9.99999975e-06, and 1e-5 as sent was
# refused (review of the fixes, 2026-11-30); 100 kHz is exact in f32.
MIN_RATE_HZ = float(np.float32(1e-5))
MAX_RATE_HZ = 100_000.0
DEFAULT_STREAM = {"wearable": "vitals", "equipment": "machine"}

log = logging.getLogger("agent.sources.serial")  # the serial source's logger: docs name it


def waveform_stream(names: tuple[str, ...]) -> str:
    """``("ecg",)`` → ``"ecg"``; ``("acc_x", "acc_y")`` → ``"acc"``; otherwise the first name."""
    heads = {name.split("_", 1)[0] for name in names}
    if len(names) > 1 and len(heads) == 1 and all("_" in name for name in names):
        return heads.pop()
    return names[0]


def _tell_dropping(name: str, dropped: int, over_s: float, refused: int) -> None:
    """DATA arrives and is all dropped: without this line the device only looks silent."""
    if refused:
        why = f"its {refused} HELLO(s) were refused (errors bad_hello): fix the firmware's channel rates"
    else:
        why = "it does not answer SEND_HELLO, so firmware that sends HELLO only at boot needs a device reset"
    log.warning(
        "%s: %d DATA frame(s) over %.0f s and no HELLO: they are dropped (errors waiting_hello) until "
        "the device sends one; %s",
        name,
        dropped,
        over_s,
        why,
    )


def unusable_rate(hello: Hello) -> tuple[str, float] | None:
    """The first channel of `hello` whose rate is not a rate (NaN, inf, <= 0, outside `MIN_RATE_HZ`..
    `MAX_RATE_HZ`), with that rate; None when every rate is usable."""
    for channel in hello.channels:
        if not MIN_RATE_HZ <= channel.rate_hz <= MAX_RATE_HZ:  # False for NaN too
            return channel.name, channel.rate_hz
    return None


def _seconds(us: int) -> str:
    """Device µs as seconds for a log line, exact to the µs below 1e7 s: an overshoot of 1 µs past the
    1 s limit must not read "1 s"."""
    if abs(us) < 10**13:
        return f"{us / 1e6:.6f}".rstrip("0").rstrip(".")
    return f"{us / 1e6:.6g}"


def _tell_hello_after_drops(name: str, dropped: int, told: bool) -> None:
    log.log(
        logging.INFO if told else logging.DEBUG,
        "%s: HELLO received; %d DATA frame(s) before it were dropped",
        name,
        dropped,
    )


class FrameReadings:
    """Turns frames of one device link into readings; keeps HELLO, clock anchor and pending flags."""

    def __init__(
        self,
        device_id: str,
        default_stream: str,
        clock: Callable[[], float],
        expected_units: ExpectedUnits | None = None,
        configured_units: Mapping[str, str] | None = None,
    ) -> None:
        self.device_id = device_id
        self.name = device_name(device_id)  # what log lines call it
        self.units = HelloUnits(self.name, expected_units or {}, configured_units)
        self.default_stream = default_stream
        self._clock = clock
        self.hello: Hello | None = None
        self.time = DeviceClock()
        self._gap_streams: set[str] | None = None  # None: every stream's next block is flagged GAP
        self._gap_all = False
        self._fault_until_us = -1
        self._battery_until_us = -1
        self._fault_code = -1  # of the fault being held, to log a new one
        self._frame_us = -1  # device time of the last frame
        self._last_block: dict[str, tuple[int, float]] = {}  # per stream: first sample µs, span µs
        self._early: dict[str, int] = {}  # per stream, blocks in a row that began well before it ended
        self._told_early: set[str] = set()
        self.waiting_hello = 0  # DATA frames dropped for want of a HELLO
        self._first_drop_at: float | None = None  # monotonic; None once told (or before any drop)
        self.bad_blocks = 0  # DATA blocks that do not match the HELLO
        self.bad_hellos = 0  # HELLOs refused for a rate that is none (`unusable_rate`)
        self._hello_before_refusal: Hello | None = None  # the usable HELLO a refused one displaced
        self.bad_times = 0  # DATA blocks whose sample times do not fit their frame's: refused
        self._bad_times_told_at: float | None = None  # monotonic
        self.gaps = 0  # gap episodes (sequence gaps and reconnects after data)
        self.faults = 0
        self._had_data = False

    def link_restarted(self) -> None:
        """The link was lost and re-established: flag the next blocks as GAP. The device's clock ran on
        meanwhile, so its anchor is kept (what it held back keeps its real times), unless its HELLO (the
        source asks for one at the open) shows it rebooted (`DeviceClock.hello`)."""
        if self._had_data:
            self._mark_gap()

    def _hello_changed(self, old: Hello, new: Hello) -> None:
        """A HELLO unlike the last: a swapped device, or the same one re-flashed. Its clock is another
        (the anchor starts over), what came before does not continue (GAP). The ids are not logged:
        the device's own id may identify it and is not known to the log redactor."""
        what = []
        if new.device_id != old.device_id:
            what.append("another device id")
        if new.channels != old.channels:
            names = ", ".join(c.name for c in new.channels) or "none"
            what.append(f"another channel table ({names})")
        if not what:
            what.append(f"firmware {'.'.join(map(str, new.firmware))}")
        log.warning(
            "%s: the serial device announced %s: a swapped or re-flashed device? Its readings go on "
            "under this device's entry (devices.<id>), with the windows, calibration and open alarms of "
            "the one before",
            self.name,
            " and ".join(what),
        )
        self.time.restart()
        self._fault_until_us = self._battery_until_us = -1  # the other device's, in its clock
        self._last_block.clear()
        self._told_early.clear()
        if self._had_data:
            self._mark_gap()

    def _mark_gap(self) -> None:
        self.gaps += 1
        self._gap_all = True
        self._gap_streams = set()

    def take_read(self, frames: Sequence[Frame], monotonic: float) -> list[Reading]:
        """The readings of the frames of one read (arrived together at `monotonic`), in order."""
        newest = newest_in_runs([f.device_time_us for f in frames])
        offset = self._clock() - monotonic  # one for the read: its blocks keep their exact spacing
        return [
            reading
            for frame, newest_us in zip(frames, newest, strict=True)
            if (reading := self.take(frame, monotonic, newest_us, offset)) is not None
        ]

    def take(
        self, frame: Frame, monotonic: float, newest_us: int = 0, wall_minus_mono: float | None = None
    ) -> Reading | None:
        """The reading of one frame that arrived at `monotonic`, if it has one; `newest_us`: the newest
        device time of frames read with it (`serial_clock.newest_in_runs`); `wall_minus_mono`: the
        gateway's at that moment (default: read now)."""
        message = frame.message
        if isinstance(message, Hello):
            if self._refused(message):
                return None
            if self.hello is None and self.waiting_hello:
                _tell_hello_after_drops(self.name, self.waiting_hello, self._first_drop_at is None)
            known, self._hello_before_refusal = self.hello or self._hello_before_refusal, None
            if known is not None and message != known and message.pack() != known.pack():
                self._hello_changed(known, message)
            elif self.time.hello(frame.device_time_us, monotonic, newest_us):  # rebooted meanwhile
                self._fault_until_us = self._battery_until_us = -1  # in the old clock
            self.hello = message
            return None
        if frame.device_time_us < self._frame_us:  # the device's clock started over: a reboot
            self._fault_until_us = self._battery_until_us = -1
        self._frame_us = frame.device_time_us
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
                over_s = monotonic - self._first_drop_at
                _tell_dropping(self.name, self.waiting_hello, over_s, self.bad_hellos)
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
        rate = self.hello.channels[message.channels[0]].rate_hz  # usable: the HELLO was checked
        period = 1.0 / rate
        stream = self.default_stream if rate <= WAVEFORM_HZ else waveform_stream(names)
        factors = self.units.factors(self.hello, message.channels, names, stream)
        if factors is not None:  # into the units the detectors read (`serial_units`)
            values *= factors
        units = self.units.units_of(self.hello, message.channels, names, stream)
        first_us = message.first_sample_us
        last_us = first_us + round((values.shape[0] - 1) * period * 1e6)
        if not self._times_agree(frame.device_time_us, first_us, monotonic):
            return None  # before the clock: such a block must not move its anchor
        if wall_minus_mono is None:
            wall_minus_mono = self._clock() - monotonic
        wall = self.time.wall_time(
            frame.device_time_us, first_us, last_us, monotonic, wall_minus_mono, newest_us
        )
        quality = self._quality(stream, message.first_sample_us)
        self._pace(stream, first_us, values.shape[0], period)
        self._had_data = True
        values.flags.writeable = False
        return Reading(
            stream_id(self.device_id, stream),
            names,
            values,
            wall,
            monotonic,
            period,  # also for a single sample: the pipeline checks detectors' rate_hz against it
            quality,
            units,
        )

    def _refused(self, hello: Hello) -> bool:
        """A HELLO with a rate that is none (`unusable_rate`) is refused: counted in `bad_hellos`, told
        once per device, and the device's DATA waits (`waiting_hello`) for a usable one, as before its
        first HELLO; the table it replaces no longer describes the device's data either."""
        bad = unusable_rate(hello)
        if bad is None:
            return False
        self.bad_hellos += 1
        if self.hello is not None:
            self._hello_before_refusal = self.hello
            self.hello = None
        if self.bad_hellos == 1:
            log.warning(
                '%s: the serial device\'s HELLO declares channel "%s" at %g Hz, not a usable rate (%g to %g '
                "Hz): the HELLO is refused (errors bad_hello) and the device's DATA dropped (errors "
                "waiting_hello) until a HELLO with usable rates comes; check the firmware's channel table "
                "(docs/serial-protocol.md, HELLO)",
                self.name,
                bad[0],
                bad[1],
                MIN_RATE_HZ,
                MAX_RATE_HZ,
            )
        return True

    def _times_agree(self, frame_us: int, first_us: int, monotonic: float) -> bool:
        """Whether a block's first sample time fits its frame's (see `BLOCK_AHEAD_US`); if not it is counted
        in `bad_times` and told at most every `BAD_TIMES_TELL_S`."""
        ahead_us = first_us - frame_us
        if ahead_us <= BLOCK_AHEAD_US and -ahead_us <= BLOCK_BACKLOG_US:
            return True
        self.bad_times += 1
        if self._bad_times_told_at is None or monotonic - self._bad_times_told_at >= BAD_TIMES_TELL_S:
            if ahead_us > BLOCK_AHEAD_US:
                what = (
                    f"its first sample {_seconds(ahead_us)} s after its frame's header time (at most "
                    f"{_seconds(BLOCK_AHEAD_US)} s: the first sample is taken before the frame is sent)"
                )
            else:
                what = (
                    f"its first sample {_seconds(-ahead_us)} s before its frame's header time (at most "
                    f"{_seconds(BLOCK_BACKLOG_US)} s: older than any store-and-forward backlog)"
                )
            log.warning(
                "%s: a DATA block has %s: refused (errors bad_block_times, %d so far) and the device's "
                "clock anchor is not moved by it; check the firmware's time stamps (docs/serial-protocol.md)",
                self.name,
                what,
                self.bad_times,
            )
            self._bad_times_told_at = monotonic
        return False

    def _event(self, event: Event, device_time_us: int) -> None:
        if event.kind is EventKind.FAULT:
            self.faults += 1
            if device_time_us > self._fault_until_us or event.code != self._fault_code:
                log.warning(
                    "%s: the device reports a fault (code %d): its data is flagged device_fault and not "
                    "judged for %.0f s, and the device_fault alarm is raised",
                    self.name,
                    event.code,
                    FAULT_HOLD_S,
                )
            self._fault_code = event.code
            self._fault_until_us = device_time_us + round(FAULT_HOLD_S * 1e6)
        elif event.kind is EventKind.BATTERY_LOW:
            if device_time_us > self._battery_until_us:
                log.warning(
                    "%s: the device reports a low battery (%d %%): the battery_low alarm is raised",
                    self.name,
                    event.code,
                )
            self._battery_until_us = device_time_us + round(BATTERY_HOLD_S * 1e6)

    def _pace(self, stream: str, first_us: int, n: int, period: float) -> None:
        """Blocks that follow each other faster than the HELLO rate says (by the device's own clock):
        `EARLY_BLOCKS` in a row are told once per stream and HELLO. The samples keep the declared spacing,
        so the windows' and alarms' durations are off by the same factor (audit auddev, finding 5: a
        1 Hz HELLO with 5 blocks a second went unsaid)."""
        span_us = n * period * 1e6  # the block's samples, as declared
        previous = self._last_block.get(stream)
        self._last_block[stream] = (first_us, span_us)
        if previous is None or period <= 0:
            return
        spacing_us = first_us - previous[0]
        if not 0 <= spacing_us < previous[1] - period * 0.5e6:  # on time or late, or a reboot
            self._early[stream] = 0
            return
        early = self._early[stream] = self._early.get(stream, 0) + 1
        if early != EARLY_BLOCKS or stream in self._told_early:
            return
        self._told_early.add(stream)
        log.warning(
            '%s: blocks of stream "%s" begin every %.3g s by the device\'s clock, but its HELLO declares'
            " %g Hz (%g sample(s) span %.3g s): the samples are taken as declared, so the stream's"
            " durations are off; check the firmware's rate (docs/serial-protocol.md, HELLO)",
            self.name,
            stream,
            spacing_us / 1e6,
            1.0 / period,
            n,
            span_us / 1e6,
        )

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


class LineReadings:
    """CSV / JSON lines → one single-sample reading each on the default stream. The lines of one read
    are spaced back from its arrival (`serial_clock.line_times`) at `rate_hz` (0: unknown), which the
    readings also declare as their spacing, for the pipeline to check detectors' `rate_hz` against."""

    def __init__(
        self, device_id: str, default_stream: str, channels: Iterable[str], rate_hz: float = 0.0
    ) -> None:
        self.stream = stream_id(device_id, default_stream)
        self.channels = tuple(channels)
        self.period_s = 1.0 / rate_hz if rate_hz > 0 else 0.0
        self._gap_next = False
        self._had_data = False
        self._last_mono: float | None = None  # monotonic time given to the last line of this link
        self.gaps = 0

    def link_restarted(self) -> None:
        self._last_mono = None  # what the device sent while the link was down was dropped at the open
        if self._had_data:
            self.gaps += 1
            self._gap_next = True

    def take(self, samples: Sequence[LineSample], wall_time: float, monotonic: float) -> list[Reading]:
        """Readings of the lines of one read, which arrived at `wall_time` / `monotonic`."""
        if not samples:
            return []
        times = line_times(len(samples), monotonic, self._last_mono, self.period_s)
        self._last_mono = times[-1]
        offset = wall_time - monotonic
        readings = []
        for sample, at in zip(samples, times, strict=True):
            quality = Quality.GAP if self._gap_next else Quality.OK
            self._gap_next = False
            values = np.array([sample.values], dtype=np.float64)
            reading = Reading(
                self.stream, self.channels, values, offset + at, monotonic, self.period_s, quality
            )
            readings.append(reading)
        self._had_data = True
        return readings
