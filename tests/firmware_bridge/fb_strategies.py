"""Hypothesis strategies for serial-protocol messages, shared by the firmware_bridge tests."""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import strategies as st

from firmware_bridge.frame_codec import encode_frame
from firmware_bridge.frame_messages import (
    Ack,
    AckStatus,
    ChannelSpec,
    Command,
    CommandCode,
    DataBlock,
    Event,
    EventKind,
    Hello,
    Message,
    SampleType,
)

# values that survive the float32 fields of HELLO exactly
f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
text = st.text(max_size=12).filter(lambda s: len(s.encode()) <= 255)

channel_specs = st.builds(ChannelSpec, text, text, st.sampled_from(SampleType), f32, f32, f32)
hellos = st.builds(
    Hello,
    text,
    st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 0xFFFF)),
    st.lists(channel_specs, max_size=6).map(tuple),
)


@st.composite
def data_blocks(draw: st.DrawFn, max_samples: int = 40) -> DataBlock:
    stype = draw(st.sampled_from(SampleType))
    n_ch = draw(st.integers(1, 4))
    n = draw(st.integers(0, max_samples))
    info = np.iinfo(stype.dtype)
    values = draw(st.lists(st.integers(int(info.min), int(info.max)), min_size=n * n_ch, max_size=n * n_ch))
    channels = tuple(draw(st.lists(st.integers(0, 255), min_size=n_ch, max_size=n_ch, unique=True)))
    first = draw(st.integers(0, 2**64 - 1))
    return DataBlock(first, stype, channels, np.array(values, dtype=np.int64).reshape(n, n_ch))


events = st.builds(
    Event, st.sampled_from(EventKind), st.integers(0, 0xFFFF), st.integers(-(2**31), 2**31 - 1)
)
acks = st.builds(Ack, st.integers(0, 0xFFFF), st.sampled_from(AckStatus))
commands = st.builds(Command, st.sampled_from(CommandCode), st.integers(0, 2**32 - 1))
messages: st.SearchStrategy[Message] = st.one_of(hellos, data_blocks(), events, acks, commands)

seqs = st.integers(0, 0xFFFF)
times = st.integers(0, 2**64 - 1)


def encode_run(msgs: list[Message], start_seq: int = 0, start_us: int = 0) -> list[bytes]:
    """Encode consecutive frames with consecutive (wrapping) sequence numbers."""
    return [encode_frame(m, (start_seq + i) & 0xFFFF, start_us + i) for i, m in enumerate(msgs)]


def f32_round(x: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", x))[0])
