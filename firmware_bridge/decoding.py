"""The sans-I/O decoder contract shared by every stream decoder in firmware_bridge.

A decoder is fed bytes as they arrive (`feed`) and asked for frames (`next_frame`) until it answers
`NEED_DATA`. It never raises on bad input: each rejected unit is counted in the decoder's `stats`
object and skipped, so one noisy device cannot stop a source. The single `NEED_DATA` member of an
enum is used as the sentinel so that type checkers can narrow `Frame | NeedData` with `is`.
"""

from __future__ import annotations

import enum
from typing import Protocol, TypeVar

T_co = TypeVar("T_co", covariant=True)


class NeedData(enum.Enum):
    """Type of the sentinel returned by `next_frame()` when the buffered bytes hold no complete frame."""

    NEED_DATA = enum.auto()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = NeedData.NEED_DATA


class StreamDecoder(Protocol[T_co]):
    """What the agent's sources rely on: bytes in, frames out, never an exception."""

    def feed(self, data: bytes) -> None:
        """Append received bytes; cheap, no decoding happens here."""

    def next_frame(self) -> T_co | NeedData:
        """The next complete frame, or `NEED_DATA` when more bytes are needed."""
