"""The one warning for a serial link whose bytes arrive but never decode (wrong baud rate or protocol).

One rule for the three protocols (frames, CSV lines, JSON lines). It fires when, since the port opened
or since the last frame or line that decoded, not one has decoded, some input is plainly not the
protocol (more than one rejected frame or line, or bytes waiting for a delimiter or line end that does
not come) and there is enough of it: `UNDECODABLE_BYTES` bytes, or bytes that have kept arriving for
`UNDECODABLE_S` (a pause as long as that starts the count again). The byte count tells a fast device at
once; the time tells a slow one: a CSV device sending ``72,98`` once a second gives about 6 bytes a
second, so 4096 bytes would take 11 minutes, long after ``device_lost`` has started with no word about
why. Blank lines and a CSV header are not evidence, a device may send them while its sensor warms up;
nor is the one cut frame or line of a device plugged in mid-stream, or a stray byte at plug-in followed
by a device that starts sending a while later (the pause restarts the count, and its first good line
ends the question).

Told once per connection and stretch: a reopened port, or a link whose lines stop decoding after good
ones (a firmware update that added a CSV column), may be told again; a device that decodes again before
the rule's bytes or time have passed is not warned about. The line names the device, the port and its
key (``serial.port``), the protocol and the counts, with what to check (``serial.baudrate``,
``serial.protocol`` and, for lines, the number of fields or keys a line must hold: ``serial.channels``).
The rejected input itself is never logged, because it may be patient data; it is counted as bad frames
in the source's stats.
"""

from __future__ import annotations

import logging
from typing import Protocol

from agent.config.schema import SerialConfig

log = logging.getLogger("agent.sources.serial")  # the serial source's logger: docs name it

UNDECODABLE_BYTES = 4096  # this much input without one good frame or line: say so
UNDECODABLE_S = 10.0  # or bytes arriving this long without one (below the default lost_after_s, 30 s)
TOLERATED_REJECTS = 1  # the cut first frame or line of a device plugged in mid-stream


class DecodeCounts(Protocol):
    """The counters of a frame or line decoder that the rule reads."""

    @property
    def bytes_in(self) -> int: ...
    @property
    def frames(self) -> int: ...
    @property
    def rejected(self) -> int: ...


class UndecodableInput:
    """Decides, for one source, when its link's undecodable input is told; holds the per-link state."""

    def __init__(
        self,
        config: SerialConfig,
        *,
        after_bytes: int = UNDECODABLE_BYTES,
        after_s: float = UNDECODABLE_S,
    ) -> None:
        self.config = config
        self.after_bytes = after_bytes
        self.after_s = after_s
        self.told = 0  # warnings logged, over every link of the source
        self._told_this_link = False
        self._run_start = 0.0  # first byte of the current run of arrivals without a long pause
        self._last_byte_at: float | None = None
        self._first_byte_at = 0.0  # of this link
        self._frames = 0  # decoded on this link when last checked
        self._since: tuple[int, int] = (0, 0)  # (bytes_in, rejected) at the last frame that decoded

    def link_opened(self) -> None:
        """A new connection: its decoder starts from zero, and it may be told about once."""
        self._told_this_link = False
        self._last_byte_at = None
        self._frames, self._since = 0, (0, 0)

    def check(self, device: str, counts: DecodeCounts, buffered: int, now: float) -> bool:
        """After bytes arrived and were decoded at monotonic `now`: log the warning when due (True)."""
        if self._last_byte_at is None:
            self._first_byte_at = now
        if self._last_byte_at is None or now - self._last_byte_at >= self.after_s:
            self._run_start = now
        self._last_byte_at = now
        if counts.frames != self._frames:  # decoded: the question starts again from here
            self._frames, self._since = counts.frames, (counts.bytes_in, counts.rejected)
            self._told_this_link, self._run_start, self._first_byte_at = False, now, now
            return False
        if self._told_this_link:
            return False
        rejected, bytes_in = counts.rejected - self._since[1], counts.bytes_in - self._since[0]
        if rejected <= TOLERATED_REJECTS and not buffered:
            return False  # only blank lines, a header or a cut first line so far
        if bytes_in < self.after_bytes and now - self._run_start < self.after_s:
            return False
        self._told_this_link = True
        self.told += 1
        self._tell(
            device, bytes_in, rejected, buffered, now - self._first_byte_at, after_good=self._frames > 0
        )
        return True

    def _tell(
        self, device: str, bytes_in: int, rejected: int, buffered: int, elapsed: float, *, after_good: bool
    ) -> None:
        config = self.config
        if config.protocol == "frames":
            found = f"{rejected} rejected"
            check = f"serial.baudrate ({config.baudrate}) and serial.protocol"
        else:
            found = f"{rejected} bad lines"
            if buffered:
                found += f", {buffered} bytes without a line end"
            unit = "fields" if config.protocol == "csv" else "keys"
            channels = ", ".join(config.channels)
            check = (
                f"serial.baudrate ({config.baudrate}), serial.protocol and serial.channels "
                f"({len(config.channels)} {unit} a line: {channels})"
            )
        over = f" over {elapsed:.0f} s" if elapsed >= 1 else ""  # a fast device is told within 1 s
        log.warning(
            "%s: %d bytes%s from %s (serial.port) and nothing decodes as serial.protocol %r%s "
            "(%s): check %s against what the device sends; bad input is counted as bad frames, "
            "not logged",
            device,
            bytes_in,
            over,
            config.port,
            config.protocol,
            " any more (it did before on this connection)" if after_good else "",
            found,
            check,
        )
