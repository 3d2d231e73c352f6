"""Recording raw readings for training: JSON lines in rotating, size-bounded files.

One line per `Reading`: ``{"s": stream, "c": channels, "v": [[...]], "w": wall_time, "m": monotonic,
"p": period_s, "q": quality}``, and ``"u": units`` when the reading has them (a serial HELLO's, the
device's `units`: a replay converts them as the live source did). Python's JSON float repr round-trips
float64 exactly, so a replay
gives back bit-identical values (NaN is written as ``NaN``, which Python's reader accepts). The first
line of every file is a header naming the format, so a stray file is refused rather than misread.

Rotation: a file is closed before a line would take it past `max_file_bytes`; after opening a new
file, the oldest files beyond `max_files` are deleted, so the folder never holds more than
``max_files * max_file_bytes`` bytes (with gzip, the bound is on the uncompressed bytes, which only
makes it looser on disk). Files are ``readings-000001.jsonl`` (or ``.jsonl.gz``), numbered on from
whatever the folder already holds, so a restarted recorder never overwrites.

`record_devices` drives `edge-agent record`: every selected device's source feeds one recorder
until the duration ends or the task is cancelled; a failing source is reopened as the daemon does.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import re
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, cast

import numpy as np

from agent.config.schema import DeviceConfig
from agent.logs import device_name
from agent.readings import Quality, Reading

log = logging.getLogger("agent.sources.record")

FORMAT = "edge-agent-readings"
VERSION = 1
MIN_FILE_BYTES = 4096
_NAME = re.compile(r"^readings-(\d{6})\.jsonl(\.gz)?$")


def encode_reading(reading: Reading) -> str:
    line: dict[str, Any] = {
        "s": reading.stream,
        "c": list(reading.channels),
        "v": reading.values.tolist(),
        "w": reading.wall_time,
        "m": reading.monotonic,
        "p": reading.period_s,
        "q": int(reading.quality),
    }
    if reading.units:  # only then: a reading without units is recorded as before
        line["u"] = list(reading.units)
    return json.dumps(line, separators=(",", ":"))


def decode_reading(line: str) -> Reading:
    """Raises ValueError/KeyError/TypeError on a line that is not a recorded reading."""
    obj: dict[str, Any] = json.loads(line)
    channels = tuple(str(c) for c in obj["c"])
    values = np.array(obj["v"], dtype=np.float64).reshape(-1, len(channels))
    values.flags.writeable = False
    return Reading(
        str(obj["s"]),
        channels,
        values,
        float(obj["w"]),
        float(obj["m"]),
        float(obj["p"]),
        Quality(int(obj["q"])),
        tuple(str(u) for u in obj.get("u", ())),
    )


def header_line() -> str:
    return json.dumps({"format": FORMAT, "version": VERSION})


def recording_files(path: Path) -> list[Path]:
    """`path` itself if it is a file, else the recording files in it, oldest first."""
    if path.is_file():
        return [path]
    return sorted((p for p in path.iterdir() if _NAME.match(p.name)), key=lambda p: p.name)


class ReadingRecorder:
    """Appends readings to rotating files in `directory`; use as a context manager."""

    def __init__(
        self, directory: Path, *, max_file_bytes: int = 16 << 20, max_files: int = 8, compress: bool = False
    ) -> None:
        if max_file_bytes < MIN_FILE_BYTES or max_files < 1:
            raise ValueError(f"need max_file_bytes >= {MIN_FILE_BYTES} and max_files >= 1")
        self.directory = directory
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self.compress = compress
        self.written = 0
        self.dropped = 0  # lines longer than a whole file
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # raw vitals: the agent's user only
        existing = [int(m.group(1)) for p in directory.iterdir() if (m := _NAME.match(p.name))]
        self._index = max(existing, default=0)
        self._file: BinaryIO | None = None
        self._size = 0

    def __enter__(self) -> ReadingRecorder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def write(self, reading: Reading) -> None:
        line = (encode_reading(reading) + "\n").encode()
        header = (header_line() + "\n").encode()
        if len(line) + len(header) > self.max_file_bytes:
            self.dropped += 1
            return
        if self._file is None or self._size + len(line) > self.max_file_bytes:
            self._rotate(header)
        assert self._file is not None
        self._file.write(line)
        self._size += len(line)
        self.written += 1

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _rotate(self, header: bytes) -> None:
        self.close()
        self._index += 1
        suffix = ".jsonl.gz" if self.compress else ".jsonl"
        path = self.directory / f"readings-{self._index:06d}{suffix}"
        # the file stays open across write() calls until the next rotation or close()
        file = cast(BinaryIO, gzip.open(path, "wb") if self.compress else path.open("wb"))  # noqa: SIM115
        path.chmod(0o600)  # before the first byte: recordings hold raw patient data
        file.write(header)
        self._file = file
        self._size = len(header)
        for old in recording_files(self.directory)[: -self.max_files]:
            old.unlink(missing_ok=True)


def read_recording(path: Path, device: str = "replay") -> Iterator[Reading]:
    """Every reading in a recording file or folder, in order; a corrupt line is skipped and logged, and so
    is the rest of a file that cannot be read on (a truncated or damaged gzip stream).

    A log line names the recording by `device` (what the log calls the replayed device: its pseudonym),
    the file's place in it and the line's number, and the problem by its kind: never the path (a folder
    may be named after the patient) nor the line's text or the exception's message, which quote recorded
    values."""
    files = recording_files(path)
    for index, file in enumerate(files, start=1):
        where = f"{device}: recording file {index} of {len(files)}"
        try:
            yield from _read_file(file, where)
        except (EOFError, OSError, zlib.error) as exc:  # raised by the read; not by the consumer
            log.warning(
                "%s: unreadable from here on, rest of the file skipped (%s)", where, type(exc).__name__
            )


def _read_file(file: Path, where: str) -> Iterator[Reading]:
    opener = gzip.open if file.name.endswith(".gz") else open
    # errors="replace": a damaged byte spoils its own line (skipped below), not the rest of the file
    with opener(file, "rt", encoding="utf-8", errors="replace") as text:
        first = text.readline()
        try:
            ok = json.loads(first).get("format") == FORMAT
        except (ValueError, AttributeError, RecursionError):
            ok = False
        if not ok:
            log.warning("%s: not an edge-agent recording, skipped", where)
            return
        for number, line in enumerate(text, start=2):
            try:
                yield decode_reading(line)
            except (ValueError, KeyError, TypeError, RecursionError) as exc:
                log.warning(
                    "%s, line %d: bad recorded reading skipped (%s)", where, number, type(exc).__name__
                )


async def record_devices(
    devices: Sequence[DeviceConfig], recorder: ReadingRecorder, *, duration_s: float | None = None
) -> int:
    """Record the readings of `devices` until `duration_s` (None: until cancelled); returns the count."""
    from agent.sources import open_source

    async def pump(device: DeviceConfig) -> None:
        delay = 1.0
        while True:
            try:
                async with open_source(device) as source:
                    async for reading in source:
                        recorder.write(reading)
                        delay = 1.0
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep recording the other devices; retry this one
                log.warning(
                    "recording %s: source failed (%r); retrying in %.0f s", device_name(device.id), exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    tasks = [asyncio.create_task(pump(d)) for d in devices]
    started = time.monotonic()
    try:
        done = asyncio.gather(*tasks)
        if duration_s is None:
            await done
        else:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(duration_s):  # not wait_for: see agent.session._process
                    await done
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        recorder.flush()
    log.info("recorded %d readings in %.0f s", recorder.written, time.monotonic() - started)
    return recorder.written
