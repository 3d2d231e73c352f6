"""Raw snippets for diagnosis: a bounded copy of one device stream's readings, only where allowed.

Strategy: the daemon hands every batch of readings to `SnippetTaps.feed` right after the pipeline sees
it. With no snippet open that is one truthiness test; with one open, the readings of the requested
`{device}/{stream}` are copied (values as lists) until `seconds` of gateway time have passed or the
sample caps (rows, and values: rows x channels) are reached. Requests name a device by its pseudonym,
the only name that leaves the gateway, and answers carry the pseudonym too. Permission is the site
switch `privacy.raw_snippets` and, when `remote.snippet_devices` lists devices, membership of that
list; anything else is refused before any reading is copied. An answer the broker would not take (its
Maximum Packet Size) is replaced by a `too_large` error saying how many seconds would fit
(`agent.remote.commands.answer_too_large`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.config.schema import AgentConfig
from agent.readings import Reading
from agent.remote.envelope import CommandRefusedError

MAX_SAMPLES = 20_000  # per snippet, all channels' rows together (80 s of 250 Hz ECG)
# Per snippet, rows x channels: the answer's size grows with the values, not the rows (a 12-lead ECG's
# 20,000 rows made a 1.5 MB answer: review remote #1). 40,000 values of at most about 20 JSON bytes
# stay under the 1 MiB of payload a broker with `max_packet_size 1114112` takes.
MAX_VALUES = 40_000


@dataclass(slots=True)
class _Tap:
    stream_id: str  # local "{device}/{stream}"
    blocks: list[dict[str, Any]] = field(default_factory=list)
    samples: int = 0
    values: int = 0  # samples x channels
    truncated: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)


class SnippetTaps:
    """Open taps on device streams; `feed` is called by the daemon's pipeline loop."""

    def __init__(self, cfg: AgentConfig, pseudonym: Callable[[str], str]) -> None:
        self.cfg = cfg
        self._by_pseudonym = {pseudonym(d.id): d.id for d in cfg.devices}
        self._taps: list[_Tap] = []

    def feed(self, readings: list[Reading]) -> None:
        if not self._taps:
            return
        for tap in self._taps:
            if tap.done.is_set():
                continue
            for reading in readings:
                if reading.stream == tap.stream_id:
                    self._copy(tap, reading)
                    if tap.done.is_set():
                        break

    def _copy(self, tap: _Tap, reading: Reading) -> None:
        width = max(1, len(reading.channels))
        room = min(MAX_SAMPLES - tap.samples, (MAX_VALUES - tap.values) // width)
        rows = reading.values[: max(0, room)]
        if len(rows) < len(reading.values):
            tap.truncated = True  # the stream went on; the copy stops here
            tap.done.set()
        if not len(rows):
            return
        tap.blocks.append(
            {
                "time": reading.wall_time,
                "period_s": reading.period_s,
                "channels": list(reading.channels),
                "quality": reading.quality.describe(),
                "values": [[v if math.isfinite(v) else None for v in row] for row in rows.tolist()],
            }
        )
        tap.samples += len(rows)
        tap.values += len(rows) * width
        if tap.samples >= MAX_SAMPLES:
            tap.truncated = True
            tap.done.set()

    def check(self, args: Mapping[str, Any]) -> tuple[str, str, str, float]:
        """(pseudonym, local device id, stream, seconds) of an allowed request; CommandRefusedError if not."""
        device, stream, seconds = args.get("device"), args.get("stream"), args.get("seconds", 5)
        if not isinstance(device, str) or not isinstance(stream, str) or not stream or "/" in stream:
            raise CommandRefusedError(
                "bad_request", "snippet needs 'device' (pseudonym) and 'stream' strings"
            )
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
            raise CommandRefusedError("bad_request", "'seconds' must be a number > 0")
        if seconds > self.cfg.remote.max_snippet_s:
            raise CommandRefusedError(
                "bad_request", f"'seconds' is limited to {self.cfg.remote.max_snippet_s:g}"
            )
        if not self.cfg.privacy.raw_snippets:
            raise CommandRefusedError("not_allowed", "raw snippets are disabled on this gateway (privacy)")
        local = self._by_pseudonym.get(device)
        if local is None:
            raise CommandRefusedError("refused", "no such device on this gateway")
        allowed = self.cfg.remote.snippet_devices
        if allowed and local not in allowed:
            raise CommandRefusedError("not_allowed", "raw snippets are not allowed for this device")
        return device, local, stream, float(seconds)

    async def record(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Copy the requested stream for the requested seconds, then return it."""
        device, local, stream, seconds = self.check(args)
        tap = _Tap(f"{local}/{stream}")
        self._taps.append(tap)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):  # not wait_for: see agent.session._process
                    await tap.done.wait()
        finally:
            tap.done.set()
            self._taps.remove(tap)
        return {
            "device": device,
            "stream": stream,
            "seconds": seconds,
            "samples": tap.samples,
            "truncated": tap.truncated,
            "blocks": tap.blocks,
        }
