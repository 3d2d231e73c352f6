"""Text line formats from simple devices: CSV lines and JSON lines with a declared channel map.

Both decoders share one splitter: bytes are buffered, cut at ``\\n`` (a trailing ``\\r`` is dropped),
and each line is parsed into one `LineSample` holding one value per declared channel, in declared
order. CSV: ``"72,98\\n"`` for channels ("hr", "spo2"); a first line equal to the channel names is a
header and skipped. JSONL: ``{"hr": 72, "spo2": 98}``; other keys are ignored. An empty CSV field or a
JSON ``null`` is a missing value (NaN), and so is a field the device wrote as no number: ``nan``, ``inf``,
``ovf`` (what printf and Arduino's `print` write for a dead probe or an overflow), JSON's ``NaN`` /
``Infinity`` (counted in `no_value_fields`): one dead channel must not take the line's others with it.
A CSV number is ASCII decimal (sign, fraction, exponent). Anything else that is not a number, a wrong field
count, a missing key, bad UTF-8 or a line longer than `max_line` bytes is counted and skipped —
`next_frame()` never raises.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from firmware_bridge.decoding import NEED_DATA, NeedData

DEFAULT_MAX_LINE = 4096
# A CSV field a device may send: ASCII decimal, optional sign, fraction and exponent. `float()` alone also
# takes '1_000', Arabic-Indic or full-width digits and 'nan' (review of 2026-11-30, M2).
_CSV_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
# What devices write for a value they do not have: C's printf ("nan", "-nan", "inf"), Arduino's Print
# ("nan", "inf", "ovf" beyond +-4e9), Python/JSON ("NaN", "Infinity"). Taken as that channel's no value.
_NO_VALUE = re.compile(r"[+-]?(?:nan|inf|infinity|ovf)", re.ASCII | re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class LineSample:
    values: tuple[float, ...]  # one per declared channel; NaN where the device sent no value
    line_no: int  # 1-based count of lines seen by the decoder, for error reports


@dataclass(slots=True)
class LineDecoderStats:
    bytes_in: int = 0
    lines: int = 0  # complete lines seen, blank ones included
    frames: int = 0
    blank_lines: int = 0
    no_value_fields: int = 0  # fields written as nan / inf / ovf: that value missing, the line kept
    header_lines: int = 0
    bad_lines: int = 0  # wrong field count, not a number, missing key, bad UTF-8 / JSON
    oversized_lines: int = 0  # longer than max_line: dropped up to the next newline
    consumed_bytes: int = 0  # bytes of every complete or dropped line, newlines included
    garbage_bytes: int = 0  # bytes of bad and oversized lines

    @property
    def rejected(self) -> int:
        return self.bad_lines + self.oversized_lines


class _BadLineError(Exception):
    """Internal: the line cannot be used."""


class _LineDecoder:
    """Line splitting, size limit and counting; subclasses parse one line into values."""

    def __init__(self, channels: Sequence[str], max_line: int = DEFAULT_MAX_LINE) -> None:
        if not channels or len(set(channels)) != len(channels):
            raise ValueError(f"channels must be unique and non-empty, got {list(channels)}")
        self.channels = tuple(channels)
        self.max_line = max_line
        self.stats = LineDecoderStats()
        self._buf = bytearray()
        self._pos = 0
        self._skipping = False

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        self.stats.bytes_in += len(data)
        self._buf += data

    def next_frame(self) -> LineSample | NeedData:
        stats = self.stats
        while True:
            end = self._buf.find(b"\n", self._pos)
            if end < 0:
                self._check_tail()
                return NEED_DATA
            raw = bytes(self._buf[self._pos : end])
            self._pos = end + 1
            stats.consumed_bytes += len(raw) + 1
            if self._skipping:  # the tail of an oversized line
                self._skipping = False
                stats.garbage_bytes += len(raw) + 1
                continue
            stats.lines += 1
            if len(raw) > self.max_line:
                stats.oversized_lines += 1
                stats.garbage_bytes += len(raw) + 1
                continue
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if not line.strip():
                stats.blank_lines += 1
                continue
            try:
                values = self._parse(line)
            except _BadLineError:
                stats.bad_lines += 1
                stats.garbage_bytes += len(raw) + 1
                continue
            if values is None:
                stats.header_lines += 1
                continue
            stats.frames += 1
            return LineSample(values, stats.lines)

    def _check_tail(self) -> None:
        pending = len(self._buf) - self._pos
        if pending > self.max_line + 1:
            if not self._skipping:
                self.stats.oversized_lines += 1
                self.stats.lines += 1
                self._skipping = True
            self.stats.garbage_bytes += pending
            self.stats.consumed_bytes += pending
            self._buf.clear()
        elif self._pos:
            del self._buf[: self._pos]
        self._pos = 0

    def _parse(self, line: bytes) -> tuple[float, ...] | None:
        raise NotImplementedError


_NO_VALUE_CONSTANT = object()  # JSON's NaN, Infinity, -Infinity as parsed (`parse_constant`)


def _number(value: object) -> float:
    """A JSON value as a number: NaN for null, inf for a no-value constant (NaN, Infinity)."""
    if value is None:
        return math.nan
    if value is _NO_VALUE_CONSTANT:
        return math.inf
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _BadLineError
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a double: not a device's reading
        raise _BadLineError from None
    if not math.isfinite(number):  # 1e999
        raise _BadLineError
    return number


class CsvLineDecoder(_LineDecoder):
    """``v1,v2,…\\n`` with one field per declared channel."""

    def __init__(
        self, channels: Sequence[str], delimiter: str = ",", max_line: int = DEFAULT_MAX_LINE
    ) -> None:
        super().__init__(channels, max_line)
        self._delimiter = delimiter
        self._seen_data = False

    def _parse(self, line: bytes) -> tuple[float, ...] | None:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise _BadLineError from None
        fields = [f.strip() for f in text.split(self._delimiter)]
        if not self._seen_data and tuple(fields) == self.channels:
            return None  # header line
        if len(fields) != len(self.channels):
            raise _BadLineError
        values = []
        for field in fields:
            if not field:
                values.append(math.nan)
                continue
            if _NO_VALUE.fullmatch(field):
                self.stats.no_value_fields += 1
                values.append(math.nan)
                continue
            if not _CSV_NUMBER.fullmatch(field):
                raise _BadLineError
            number = float(field)
            if not math.isfinite(number):  # 1e999: not a device's reading
                raise _BadLineError
            values.append(number)
        self._seen_data = True
        return tuple(values)


class JsonLineDecoder(_LineDecoder):
    """One JSON object per line holding every declared channel as a key."""

    def _parse(self, line: bytes) -> tuple[float, ...] | None:
        try:
            obj = json.loads(line, parse_constant=lambda _name: _NO_VALUE_CONSTANT)
        except (ValueError, RecursionError):  # JSONDecodeError, bad UTF-8, huge ints, deep nesting
            raise _BadLineError from None
        if not isinstance(obj, dict):
            raise _BadLineError
        try:
            numbers = [_number(obj[name]) for name in self.channels]
        except KeyError:
            raise _BadLineError from None
        self.stats.no_value_fields += sum(math.isinf(n) for n in numbers)
        return tuple(n if math.isfinite(n) else math.nan for n in numbers)
