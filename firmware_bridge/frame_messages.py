"""Messages of the serial frame protocol and their payload layouts (docs/serial-protocol.md).

Each message is a frozen value type with `pack()` giving its payload bytes and a module-level
`unpack_payload(msg_type, payload)` doing the reverse. Unpacking is strict: a payload whose length
or fields do not match its layout raises `PayloadError`, which the frame decoder counts as
`bad_payload` (the CRC was right, so the sender has a bug, not the wire). All integers are
little-endian. DATA samples stay a zero-copy numpy view on the received bytes.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

PROTOCOL_VERSION = 1
HEADER = struct.Struct("<BBHQ")  # version, message type, sequence number, device time (µs)
CRC_SIZE = 2
MAX_FRAME_SIZE = 1024  # header + payload + CRC, before COBS stuffing
MAX_PAYLOAD_SIZE = MAX_FRAME_SIZE - HEADER.size - CRC_SIZE


class PayloadError(ValueError):
    """A payload does not match the layout of its message type."""


class MsgType(enum.IntEnum):
    HELLO = 0x01
    DATA = 0x02
    EVENT = 0x03
    ACK = 0x04
    COMMAND = 0x81  # high bit set: gateway → device


class SampleType(enum.IntEnum):
    INT16 = 1
    INT32 = 2

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype("<i2") if self is SampleType.INT16 else np.dtype("<i4")


class EventKind(enum.IntEnum):
    FAULT = 1  # code: device fault code, value: fault detail
    BUTTON = 2  # code: button id, value: press duration in ms
    BATTERY_LOW = 3  # code: state of charge in %, value: battery voltage in mV


class CommandCode(enum.IntEnum):
    SEND_HELLO = 1
    START = 2
    STOP = 3
    SET_RATE_MHZ = 4  # arg: new sample rate of every channel in milli-hertz


class AckStatus(enum.IntEnum):
    OK = 0
    UNSUPPORTED = 1
    BAD_ARGUMENT = 2


def _pack_str(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 255:
        raise PayloadError(f"string longer than 255 bytes: {text[:20]!r}…")
    return bytes((len(raw),)) + raw


class _Reader:
    """Cursor over a payload; every read checks bounds so a short payload raises PayloadError."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise PayloadError(f"payload ends at {len(self.data)} bytes, needed {self.pos + n}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: struct.Struct) -> tuple[Any, ...]:
        return fmt.unpack(self.take(fmt.size))

    def string(self) -> str:
        (n,) = self.take(1)
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PayloadError(f"string is not UTF-8: {exc.reason}") from None

    def finish(self) -> None:
        if self.pos != len(self.data):
            raise PayloadError(f"{len(self.data) - self.pos} trailing bytes after the payload")


_U16 = struct.Struct("<H")
_CHANNEL_TAIL = struct.Struct("<Bfff")  # sample type, rate Hz, scale, offset
_FW = struct.Struct("<BBH")


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """One channel declared in HELLO: physical = raw * scale + offset, in `unit`."""

    name: str
    unit: str
    sample_type: SampleType
    rate_hz: float
    scale: float
    offset: float = 0.0


@dataclass(frozen=True, slots=True)
class Hello:
    """First message after boot (and on SEND_HELLO): who the device is and its channel table."""

    device_id: str
    firmware: tuple[int, int, int]
    channels: tuple[ChannelSpec, ...]

    def pack(self) -> bytes:
        if len(self.channels) > 255:
            raise PayloadError("at most 255 channels")
        parts = [_pack_str(self.device_id), _FW.pack(*self.firmware), bytes((len(self.channels),))]
        for ch in self.channels:
            parts += [
                _pack_str(ch.name),
                _pack_str(ch.unit),
                _CHANNEL_TAIL.pack(ch.sample_type, ch.rate_hz, ch.scale, ch.offset),
            ]
        return b"".join(parts)

    @staticmethod
    def unpack(payload: bytes) -> Hello:
        r = _Reader(payload)
        device_id = r.string()
        major, minor, patch = r.unpack(_FW)
        (count,) = r.take(1)
        channels = []
        for _ in range(count):
            name, unit = r.string(), r.string()
            stype, rate, scale, offset = r.unpack(_CHANNEL_TAIL)
            channels.append(ChannelSpec(name, unit, _sample_type(stype), rate, scale, offset))
        r.finish()
        return Hello(device_id, (major, minor, patch), tuple(channels))


def _sample_type(code: int) -> SampleType:
    try:
        return SampleType(code)
    except ValueError:
        raise PayloadError(f"unknown sample type {code}") from None


_DATA_HEAD = struct.Struct("<QBB")  # first-sample time µs, sample type, channel count


@dataclass(frozen=True, slots=True, eq=False)
class DataBlock:
    """`samples[i, j]` is channel `channels[j]` (index into HELLO's table) at sample i of the block.

    Equality compares sample values, since numpy arrays do not compare to a single bool.
    """

    first_sample_us: int
    sample_type: SampleType
    channels: tuple[int, ...]
    samples: npt.NDArray[np.signedinteger[Any]] = field(repr=False)

    def __post_init__(self) -> None:
        dtype = self.sample_type.dtype
        src = np.asarray(self.samples)
        if src.dtype == dtype:
            arr = src.view()  # own view: freezing it must not freeze the caller's array
        elif src.size and not np.issubdtype(src.dtype, np.integer):
            raise PayloadError(f"samples must be integers, got {src.dtype}")
        else:
            info = np.iinfo(dtype)
            if src.size and (src.min() < info.min or src.max() > info.max):
                raise PayloadError(f"samples outside the {self.sample_type.name} range")
            arr = src.astype(dtype)
        if arr.ndim != 2 or arr.shape[1] != len(self.channels) or not self.channels:
            raise PayloadError(f"samples must be (n, {len(self.channels)}) with ≥1 channel, got {arr.shape}")
        if len(set(self.channels)) != len(self.channels):
            raise PayloadError(f"channel listed twice in {self.channels}")
        if arr.shape[0] > 0xFFFF:
            raise PayloadError("at most 65535 samples per block")
        arr.flags.writeable = False  # a frozen value must not change under a reader's feet
        object.__setattr__(self, "samples", arr)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DataBlock):
            return NotImplemented
        return (
            self.first_sample_us == other.first_sample_us
            and self.sample_type == other.sample_type
            and self.channels == other.channels
            and np.array_equal(self.samples, other.samples)
        )

    __hash__ = None  # type: ignore[assignment]  # holds an array: not hashable

    def pack(self) -> bytes:
        n = len(self.channels)
        head = _DATA_HEAD.pack(self.first_sample_us, self.sample_type, n)
        tail = _U16.pack(self.samples.shape[0])
        return head + bytes(self.channels) + tail + self.samples.astype(self.sample_type.dtype).tobytes()

    @staticmethod
    def unpack(payload: bytes) -> DataBlock:
        r = _Reader(payload)
        first_us, stype_code, n = r.unpack(_DATA_HEAD)
        stype = _sample_type(stype_code)
        if n == 0:
            raise PayloadError("DATA with no channel")
        channels = tuple(r.take(n))
        (count,) = r.unpack(_U16)
        width = stype.dtype.itemsize * n * count
        if len(payload) - r.pos != width:
            raise PayloadError(
                f"{count} samples × {n} channels need {width} bytes, got {len(payload) - r.pos}"
            )
        samples = np.frombuffer(payload, dtype=stype.dtype, count=count * n, offset=r.pos).reshape(count, n)
        return DataBlock(first_us, stype, channels, samples)


_EVENT = struct.Struct("<BHi")


@dataclass(frozen=True, slots=True)
class Event:
    """A device-side event; meaning of `code` and `value` depends on `kind` (see EventKind)."""

    kind: EventKind
    code: int
    value: int

    def pack(self) -> bytes:
        return _EVENT.pack(self.kind, self.code, self.value)

    @staticmethod
    def unpack(payload: bytes) -> Event:
        if len(payload) != _EVENT.size:
            raise PayloadError(f"EVENT payload is {_EVENT.size} bytes, got {len(payload)}")
        kind, code, value = _EVENT.unpack(payload)
        try:
            return Event(EventKind(kind), code, value)
        except ValueError:
            raise PayloadError(f"unknown event kind {kind}") from None


_ACK = struct.Struct("<HB")


@dataclass(frozen=True, slots=True)
class Ack:
    """Device's answer to a COMMAND, naming the command frame's sequence number."""

    command_seq: int
    status: AckStatus

    def pack(self) -> bytes:
        return _ACK.pack(self.command_seq, self.status)

    @staticmethod
    def unpack(payload: bytes) -> Ack:
        if len(payload) != _ACK.size:
            raise PayloadError(f"ACK payload is {_ACK.size} bytes, got {len(payload)}")
        seq, status = _ACK.unpack(payload)
        try:
            return Ack(seq, AckStatus(status))
        except ValueError:
            raise PayloadError(f"unknown ACK status {status}") from None


_COMMAND = struct.Struct("<BI")


@dataclass(frozen=True, slots=True)
class Command:
    """Gateway → device request; answered by an ACK."""

    code: CommandCode
    arg: int = 0

    def pack(self) -> bytes:
        return _COMMAND.pack(self.code, self.arg)

    @staticmethod
    def unpack(payload: bytes) -> Command:
        if len(payload) != _COMMAND.size:
            raise PayloadError(f"COMMAND payload is {_COMMAND.size} bytes, got {len(payload)}")
        code, arg = _COMMAND.unpack(payload)
        try:
            return Command(CommandCode(code), arg)
        except ValueError:
            raise PayloadError(f"unknown command {code}") from None


Message = Hello | DataBlock | Event | Ack | Command

MESSAGE_TYPES: dict[type[Any], MsgType] = {
    Hello: MsgType.HELLO,
    DataBlock: MsgType.DATA,
    Event: MsgType.EVENT,
    Ack: MsgType.ACK,
    Command: MsgType.COMMAND,
}


def unpack_payload(msg_type: int, payload: bytes) -> Message:
    """Decode the payload of `msg_type`; raises PayloadError on an unknown type or a bad layout."""
    if msg_type == MsgType.DATA:
        return DataBlock.unpack(payload)
    if msg_type == MsgType.HELLO:
        return Hello.unpack(payload)
    if msg_type == MsgType.EVENT:
        return Event.unpack(payload)
    if msg_type == MsgType.ACK:
        return Ack.unpack(payload)
    if msg_type == MsgType.COMMAND:
        return Command.unpack(payload)
    raise PayloadError(f"unknown message type 0x{msg_type:02x}")
