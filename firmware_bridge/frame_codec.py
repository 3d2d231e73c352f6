"""Serial frame codec: COBS framing, CRC-16/CCITT-FALSE, sequence tracking (docs/serial-protocol.md).

On the wire every frame is ``0x00 COBS(header | payload | crc16) 0x00``. The leading delimiter costs
one byte and buys fast resynchronisation: whatever partial frame or line noise came before is closed
off by it, so a truncated frame never swallows the good frame that follows. Empty chunks (two
delimiters in a row) are idle fill and not counted as errors.

The decoder splits its buffer on 0x00 and classifies each chunk exactly once: a good frame, or one of
truncated / bad_crc / oversized / bad_version / bad_payload. Every byte fed ends up in one of
`frame_bytes`, `garbage_bytes`, `delimiters` or `buffered`, which the fuzz tests check. COBS and the
CRC run in C (`cobs` package, `binascii.crc_hqx`), so the Python cost per frame is a few calls.

A good frame whose sequence number and device time repeat one of the last `RECENT_FRAMES` is a
duplicate (a bridge that retransmits, a doubled USB packet): it is counted in `duplicates` (its bytes
in `frame_bytes`) and dropped, so its samples do not enter a window twice. A HELLO is never one.
"""

from __future__ import annotations

import binascii
import struct
from collections import deque
from dataclasses import dataclass

from cobs import cobs  # type: ignore[import-untyped]

from firmware_bridge.decoding import NEED_DATA, NeedData
from firmware_bridge.frame_messages import (
    CRC_SIZE,
    HEADER,
    MAX_FRAME_SIZE,
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    Hello,
    Message,
    PayloadError,
    unpack_payload,
)

SEQ_MODULO = 1 << 16
RECENT_FRAMES = 16  # a frame repeated within this many is a duplicate, not a restart
_CRC = struct.Struct("<H")


def crc16_ccitt_false(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor (check 0x29B1)."""
    return binascii.crc_hqx(data, crc)


def cobs_max_encoded(raw_size: int) -> int:
    """Largest COBS encoding of `raw_size` bytes (one code byte per started 254-byte block)."""
    return raw_size + raw_size // 254 + 1


def encode_frame(message: Message, seq: int, device_time_us: int) -> bytes:
    """The wire bytes of one frame, delimiters included. Raises ValueError if it would be oversized."""
    payload = message.pack()
    try:
        header = HEADER.pack(PROTOCOL_VERSION, MESSAGE_TYPES[type(message)], seq % SEQ_MODULO, device_time_us)
    except struct.error as exc:
        raise ValueError(f"header field out of range: {exc}") from None
    body = header + payload
    raw = body + _CRC.pack(crc16_ccitt_false(body))
    if len(raw) > MAX_FRAME_SIZE:
        raise ValueError(f"frame of {len(raw)} bytes exceeds MAX_FRAME_SIZE={MAX_FRAME_SIZE}")
    return b"\x00" + bytes(cobs.encode(raw)) + b"\x00"


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame. `gap_before` is how many device frames were lost just before this one."""

    seq: int
    device_time_us: int
    message: Message
    gap_before: int = 0


@dataclass(slots=True)
class FrameDecoderStats:
    """Counters of one decoder; every rejected chunk is counted in exactly one of the error fields."""

    bytes_in: int = 0
    frames: int = 0
    frame_bytes: int = 0  # encoded bytes of accepted frames, delimiters excluded
    delimiters: int = 0
    garbage_bytes: int = 0  # bytes of every rejected chunk, and of the resync chunk
    # Bytes before the first delimiter a decoder sees: the tail of a frame the port was opened in the
    # middle of (a device that streams all the time). No error: it cannot be a whole frame.
    resync_bytes: int = 0
    truncated: int = 0  # COBS structure cut short, or shorter than header + CRC
    bad_crc: int = 0
    oversized: int = 0  # no delimiter within the largest legal encoded frame
    bad_version: int = 0
    bad_payload: int = 0  # CRC right but the payload breaks its layout: a sender bug
    seq_gaps: int = 0  # gap episodes
    lost_frames: int = 0  # frames missing in those gaps
    seq_backwards: int = 0  # restart without HELLO: sequence went back
    duplicates: int = 0  # a frame seen again (same sequence number and device time): dropped

    @property
    def rejected(self) -> int:
        return self.truncated + self.bad_crc + self.oversized + self.bad_version + self.bad_payload


class FrameDecoder:
    """Sans-I/O decoder of the serial frame protocol: `feed(bytes)`, then `next_frame()` until NEED_DATA."""

    _COMPACT_AT = 1 << 16

    def __init__(self, max_frame_size: int = MAX_FRAME_SIZE) -> None:
        self._max_encoded = cobs_max_encoded(max_frame_size)
        self._buf = bytearray()
        self._pos = 0
        self._skipping = False  # inside an oversized chunk: drop bytes until the next delimiter
        self._synced = False  # a delimiter was seen: what follows it starts a frame
        self._next_seq: int | None = None
        self._recent: deque[tuple[int, int]] = deque(maxlen=RECENT_FRAMES)  # (seq, time) accepted
        self.stats = FrameDecoderStats()

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet classified."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        self.stats.bytes_in += len(data)
        self._buf += data

    def next_frame(self) -> Frame | NeedData:
        buf, stats = self._buf, self.stats
        while True:
            end = buf.find(0, self._pos)
            if end < 0:
                self._check_oversized_tail()
                return NEED_DATA
            chunk = bytes(buf[self._pos : end])
            self._pos = end + 1
            stats.delimiters += 1
            if self._pos >= self._COMPACT_AT:
                del buf[: self._pos]
                self._pos = 0
            if self._skipping:
                self._skipping = False
                self._synced = True
                stats.garbage_bytes += len(chunk)
                continue
            if not self._synced:
                # Every frame starts with a delimiter: bytes before the first one are the end of a frame
                # sent before the port was opened (or its input flushed at opening), not a damaged frame.
                self._synced = True
                stats.resync_bytes += len(chunk)
                stats.garbage_bytes += len(chunk)
                continue
            if not chunk:
                continue
            frame = self._decode_chunk(chunk)
            if frame is not None:
                return frame

    def _check_oversized_tail(self) -> None:
        pending = len(self._buf) - self._pos
        if pending > self._max_encoded or (self._skipping and pending):
            if not self._skipping:
                self.stats.oversized += 1
                self._skipping = True
            self.stats.garbage_bytes += pending
            self._buf.clear()
        elif self._pos:
            del self._buf[: self._pos]
        self._pos = 0

    def _reject(self, chunk: bytes) -> None:
        self.stats.garbage_bytes += len(chunk)

    def _decode_chunk(self, chunk: bytes) -> Frame | None:
        stats = self.stats
        if len(chunk) > self._max_encoded:
            stats.oversized += 1
            self._reject(chunk)
            return None
        try:
            raw = cobs.decode(chunk)
        except cobs.DecodeError:
            stats.truncated += 1
            self._reject(chunk)
            return None
        if len(raw) < HEADER.size + CRC_SIZE:
            stats.truncated += 1
            self._reject(chunk)
            return None
        (crc,) = _CRC.unpack_from(raw, len(raw) - CRC_SIZE)
        if crc16_ccitt_false(raw[:-CRC_SIZE]) != crc:
            stats.bad_crc += 1
            self._reject(chunk)
            return None
        version, msg_type, seq, time_us = HEADER.unpack_from(raw)
        if version != PROTOCOL_VERSION:
            stats.bad_version += 1
            self._reject(chunk)
            return None
        try:
            message = unpack_payload(msg_type, bytes(raw[HEADER.size : -CRC_SIZE]))
        except PayloadError:
            stats.bad_payload += 1
            self._reject(chunk)
            return None
        stats.frame_bytes += len(chunk)
        hello = isinstance(message, Hello)
        if seq != self._next_seq and not hello and (seq, time_us) in self._recent:
            stats.duplicates += 1  # a repeat (a retransmitting bridge, a doubled USB packet)
            return None
        self._recent.append((seq, time_us))
        stats.frames += 1
        return Frame(seq, time_us, message, self._track_seq(seq, hello))

    def _track_seq(self, seq: int, restart: bool) -> int:
        """Frames lost before `seq`; a HELLO starts a new run (the device has rebooted)."""
        expected, self._next_seq = self._next_seq, (seq + 1) % SEQ_MODULO
        if restart or expected is None or seq == expected:
            return 0
        gap = (seq - expected) % SEQ_MODULO
        if gap >= SEQ_MODULO // 2:  # went backwards: duplicate or silent restart, nothing known lost
            self.stats.seq_backwards += 1
            return 0
        self.stats.seq_gaps += 1
        self.stats.lost_frames += gap
        return gap
