"""Serial source: a device on a (USB) serial port speaking the frame protocol, CSV or JSON lines.

I/O strategy: the port is opened non-blocking (pyserial ``timeout=0``) and we wait for readability
with ``loop.add_reader`` on its file descriptor, then read whatever the kernel holds. We chose this
over a blocking read in an executor thread because it needs no thread per device, cancellation
(shutdown, reload) is immediate instead of waiting out a read timeout, and bytes are only read when
the consumer asks for the next reading, so a slow pipeline applies back-pressure to the kernel
buffer rather than to an unbounded queue of ours. pyserial still does the port setup (termios,
exclusive ``flock``) and turns the Linux unplug signature (readable but no data, or EIO) into
`SerialException`.

Unplug and reconnect. Any `SerialException`/`OSError` from open, read or write closes the port;
the source then waits a jittered, growing delay (`Backoff`) and reopens the same configured path,
forever. Configure a stable path (``/dev/serial/by-id/usb-…``): it reappears under the same name
when the adapter re-enumerates as another ``ttyUSBn``. The backoff is reset once data flows again.
The daemon raises the technical ``device_lost`` alarm from the silence (``lost_after_s``); the
source itself never raises for link trouble or bad bytes, which are counted in `stats`.

What the operator is told: a port that does not open is logged when the cause first appears or
changes (no such file, permission denied, held by another program, not a serial device), with what
to fix, then again every 10 minutes while it lasts (`LinkTrouble`), never once per retry; the open
after failures says how many there were. A link that delivers bytes of which nothing decodes (a
wrong baud rate, protocol or channel map) is logged once per connection naming `serial.baudrate` and
`serial.protocol` (and `serial.channels` for lines), by the rule of `agent.sources.serial_undecodable`,
the same for frames, CSV and JSON lines; the rejected input itself is only counted
(`stats.bad_frames`), never logged.

After every (re)open of a frame-protocol port the source sends COMMAND SEND_HELLO, and repeats it
every `HELLO_RETRY_S` while no HELLO is known: a device that kept running while its cable was out
will not reboot to announce itself. The last HELLO is kept across reconnects (firmware that ignores
commands still streams usable DATA) and replaced by any new one. `expected_units` (from the pipeline's
wiring: the unit each detector reads a channel in) turns the HELLO's declared units into those
(`agent.sources.serial_units`).

The gateway is a sender too (docs/serial-protocol.md, "Sequence numbers"): its frames on a port carry
their own sequence number, +1 per frame, and its monotonic clock in µs as their time. A receiver drops
a frame whose sequence number and time repeat a recent one as a duplicate, so every SEND_HELLO sent as
seq 0 at time 0 was dropped by a device that had seen the previous agent's: after a restart or a reload
with the device left powered, no HELLO came and all DATA was dropped (review of 2026-11-30, finding 2).
The sequence starts at a random number and the time never repeats within a boot of the gateway, so a
restarted agent's first frame is never taken for a repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable
from types import MappingProxyType, TracebackType
from typing import Protocol

from agent.config.schema import DeviceConfig, SerialConfig
from agent.errors import ConfigError
from agent.link_trouble import LinkTrouble, Tell
from agent.logs import device_name
from agent.readings import Reading
from agent.sources.backoff import Backoff, BackoffPolicy
from agent.sources.counters import SourceStats
from agent.sources.declared_units import DeclaredUnits
from agent.sources.decoder_counts import decoder_errors
from agent.sources.serial_frames import DEFAULT_STREAM, FrameReadings, LineReadings
from agent.sources.serial_undecodable import UNDECODABLE_S, UndecodableInput
from agent.units import ExpectedUnits
from firmware_bridge import NEED_DATA, CsvLineDecoder, FrameDecoder, JsonLineDecoder, encode_frame
from firmware_bridge.frame_codec import SEQ_MODULO
from firmware_bridge.frame_messages import Command, CommandCode

log = logging.getLogger("agent.sources.serial")

READ_CHUNK = 65536
HELLO_RETRY_S = 1.0
IDLE_WAKE_S = 1.0  # wake up this often without data, to resend SEND_HELLO when needed

# errno of a failed open -> what the operator should do about it
OPEN_HINTS = {
    errno.ENOENT: "no such device file: is the device plugged in, and is serial.port right? "
    "(a /dev/serial/by-id/... path survives re-plugging)",
    errno.EACCES: "permission denied: the agent's user needs read and write access to the port "
    "(add it to the port's group, usually 'dialout', or a udev rule) and restart the agent",
    errno.EPERM: "permission denied: the agent's user may not open the port",
    errno.EAGAIN: "another program holds the port (it is opened exclusively): stop that program",
    errno.EBUSY: "the port is busy: another program holds it",
    errno.ENXIO: "the device file exists but no device answers behind it: re-plug the device",
    errno.ENODEV: "the device file exists but no device answers behind it: re-plug the device",
    errno.ENOTTY: "it is not a serial device: check serial.port",
    errno.EISDIR: "it is a directory, not a device file: check serial.port (the full path to the port, "
    "e.g. /dev/serial/by-id/usb-...)",
}


class SerialPort(Protocol):
    """What the source needs from a port: pyserial's `Serial` opened with ``timeout=0``."""

    def fileno(self) -> int: ...
    def read(self, size: int = 1) -> bytes: ...
    def write(self, data: bytes, /) -> int | None: ...
    def close(self) -> None: ...


PortOpener = Callable[[SerialConfig], SerialPort]


def open_pyserial(config: SerialConfig) -> SerialPort:
    """Open `config.port` non-blocking and exclusive (a second agent on the port fails to open)."""
    import serial

    port: SerialPort = serial.Serial(config.port, config.baudrate, timeout=0, write_timeout=0, exclusive=True)
    return port


def _link_errors() -> tuple[type[BaseException], ...]:
    import serial

    return (serial.SerialException, OSError)


def _write_timeout() -> type[BaseException]:
    import serial

    timeout: type[BaseException] = serial.SerialTimeoutException  # a SerialException: "buffer full"
    return timeout


def _errno_of(exc: BaseException) -> int | None:
    """The errno behind a failed open; pyserial drops it when termios refuses a non-tty (ENOTTY)."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int):
        return code
    inner = exc.__cause__ or exc.__context__
    if inner is not None and inner.args and isinstance(inner.args[0], int):
        return int(inner.args[0])
    return None


class SerialSource:
    """Async context manager and async iterator of one serial device's readings."""

    def __init__(
        self,
        device: DeviceConfig,
        *,
        open_port: PortOpener = open_pyserial,
        backoff: BackoffPolicy | None = None,
        clock: Callable[[], float] = time.time,
        undecodable_after_s: float = UNDECODABLE_S,
        expected_units: ExpectedUnits | None = None,
    ) -> None:
        if device.serial is None:
            raise ConfigError(f"devices.{device.id}.serial", "transport serial needs a [serial] table")
        self.device = device
        self._name = device_name(device.id)  # what log lines call it
        self.config = device.serial
        self._open_port = open_port
        self._backoff = Backoff(backoff)
        self._clock = clock
        self._errors = _link_errors()
        self._write_full = _write_timeout()
        self._port: SerialPort | None = None
        self._pending: deque[Reading] = deque()
        self._closed = False
        self._ever_open = False
        self._readings = 0
        self._reconnects = 0
        self._link_failures = 0
        self._open_failures = 0
        self._bad_frames_before = 0  # bad frames of decoders of earlier connections
        self._decoder_errors_before: Counter[str] = Counter()  # their kinds
        self._bytes_before = 0
        self._hello_sent_at = -1e9
        self._seq = secrets.randbelow(SEQ_MODULO)  # of our next frame on this port; see the module docstring
        self._trouble = LinkTrouble()  # failed opens of the current outage, and what was logged
        self._undecodable = UndecodableInput(self.config, after_s=undecodable_after_s)
        default = DEFAULT_STREAM[device.kind]
        self._frames = FrameReadings(device.id, default, clock, expected_units, dict(device.units))
        self._lines = LineReadings(device.id, default, self.config.channels, self.config.rate_hz)
        # lines carry no unit (a CSV header is the channel names only): the config's `units` say them
        self._line_units = DeclaredUnits(self._name, dict(device.units), expected_units or {})
        self._decoder: FrameDecoder | CsvLineDecoder | JsonLineDecoder = self._new_decoder()

    def _new_decoder(self) -> FrameDecoder | CsvLineDecoder | JsonLineDecoder:
        if self.config.protocol == "csv":
            return CsvLineDecoder(self.config.channels)
        if self.config.protocol == "jsonl":
            return JsonLineDecoder(self.config.channels)
        return FrameDecoder()

    @property
    def connected(self) -> bool:
        return self._port is not None

    @property
    def stats(self) -> SourceStats:
        dec = self._decoder.stats
        frames = self._frames
        refused = frames.bad_blocks + frames.bad_times + frames.bad_hellos
        bad = self._bad_frames_before + dec.rejected + refused
        gaps = self._frames.gaps + self._lines.gaps
        errors = {
            **(self._decoder_errors_before + Counter(decoder_errors(dec))),
            "open_failures": self._open_failures,
            "link_failures": self._link_failures,
            "waiting_hello": self._frames.waiting_hello,
            "device_faults": self._frames.faults,
            "bad_blocks": self._frames.bad_blocks,  # DATA not matching the HELLO: in bad_frames too
            "bad_block_times": self._frames.bad_times,  # samples after their frame was sent: the same
            "bad_hello": self._frames.bad_hellos,  # HELLOs with a rate that is none: the same
            "undecodable": self._undecodable.told,  # the 'nothing decodes' warnings logged
        }
        return SourceStats(
            connected=self.connected,
            readings=self._readings,
            bytes_in=self._bytes_before + dec.bytes_in,
            bad_frames=bad,
            gaps=gaps,
            reconnects=self._reconnects,
            errors=MappingProxyType(errors),
        )

    async def __aenter__(self) -> SerialSource:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closed = True
        self._close_port()

    def __aiter__(self) -> SerialSource:
        return self

    async def __anext__(self) -> Reading:
        while not self._closed:
            if self._pending:
                self._readings += 1
                return self._pending.popleft()
            if self._port is None:
                await self._open()
                continue
            data = await self._read_some(self._port)
            if data:
                self._decode(data)
        raise StopAsyncIteration

    async def _open(self) -> None:
        """Open the port, retrying with backoff until it opens or the source is closed."""
        while not self._closed:
            try:
                port = self._open_port(self.config)
            except self._errors as exc:
                self._open_failures += 1
                delay = self._backoff.next_delay()
                self._tell_open_failure(exc, delay)
                await asyncio.sleep(delay)
                continue
            self._port = port
            if self._ever_open:
                self._reconnects += 1
                self._frames.link_restarted()
                self._lines.link_restarted()
            self._ever_open = True
            log.info("%s: serial port %s open%s", self._name, self.config.port, self._trouble.recovered())
            self._undecodable.link_opened()
            self._request_hello(force=True)
            return

    def _tell_open_failure(self, exc: BaseException, delay: float) -> None:
        """Log why the port does not open when that is news (first time, other cause, or REMIND_S)."""
        code = _errno_of(exc)
        problem = OPEN_HINTS.get(code, str(exc)) if code is not None else str(exc)
        tell = self._trouble.failed(problem)
        if tell is Tell.QUIET:
            port = self.config.port
            log.debug("%s: cannot open %s (%s); retry in %.2f s", self._name, port, exc, delay)
            return
        again = " still" if tell is Tell.REMINDER else ""
        log.warning(
            "%s:%s cannot open serial port %s (serial.port): %s; retrying every %.0f s at most, "
            "the other devices are not affected",
            self._name,
            again,
            self.config.port,
            problem,
            self._backoff.policy.max_s,
        )

    def _close_port(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(*self._errors):
                port.close()

    def _link_lost(self, reason: object) -> None:
        self._link_failures += 1
        log.warning("%s: serial link lost (%s); reopening %s", self._name, reason, self.config.port)
        self._close_port()
        # a fresh decoder: the partial frame of the old link must not glue onto the new one
        self._bad_frames_before += self._decoder.stats.rejected
        self._decoder_errors_before.update(decoder_errors(self._decoder.stats))
        self._bytes_before += self._decoder.stats.bytes_in
        self._decoder = self._new_decoder()

    async def _read_some(self, port: SerialPort) -> bytes:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def on_readable() -> None:
            if not ready.done():
                ready.set_result(None)

        try:
            fd = port.fileno()
            loop.add_reader(fd, on_readable)
        except self._errors as exc:
            self._link_lost(exc)
            return await self._pause_after_loss()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDLE_WAKE_S):  # not wait_for: see agent.session._process
                    await ready
        finally:
            loop.remove_reader(fd)
        try:
            data = port.read(READ_CHUNK) if ready.done() else b""
        except self._errors as exc:
            self._link_lost(exc)
            return await self._pause_after_loss()
        if not data:
            self._maybe_request_hello()
        return data

    async def _pause_after_loss(self) -> bytes:
        await asyncio.sleep(self._backoff.next_delay())
        return b""

    def _decode(self, data: bytes) -> None:
        monotonic = time.monotonic()
        decoder = self._decoder
        decoder.feed(data)
        if isinstance(decoder, FrameDecoder):
            frames = []
            while (frame := decoder.next_frame()) is not NEED_DATA:
                frames.append(frame)
            self._pending += self._frames.take_read(frames, monotonic)
            self._maybe_request_hello()
        else:
            samples = []
            while (sample := decoder.next_frame()) is not NEED_DATA:
                samples.append(sample)
            self._pending += map(self._line_units.apply, self._lines.take(samples, self._clock(), monotonic))
        if self._pending:
            self._backoff.reset()  # the link has proved itself
        self._undecodable.check(self._name, decoder.stats, decoder.buffered, monotonic)

    def _frame(self, message: Command) -> bytes:
        """The wire bytes of our next frame: the port's next sequence number, the gateway's monotonic µs."""
        seq, self._seq = self._seq, (self._seq + 1) % SEQ_MODULO
        return encode_frame(message, seq, time.monotonic_ns() // 1000)

    def _maybe_request_hello(self) -> None:
        if self.config.protocol == "frames" and self._frames.hello is None:
            self._request_hello(force=False)

    def _request_hello(self, *, force: bool) -> None:
        if self.config.protocol != "frames" or self._port is None:
            return
        now = time.monotonic()
        if not force and now - self._hello_sent_at < HELLO_RETRY_S:
            return
        self._hello_sent_at = now
        try:
            self._port.write(self._frame(Command(CommandCode.SEND_HELLO)))
        except self._write_full:  # the device is not reading its input: it will send HELLO or not
            log.debug("%s: SEND_HELLO not written, output buffer full", self._name)
        except self._errors as exc:
            self._link_lost(exc)
