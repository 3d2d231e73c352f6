"""Property tests (hypothesis) of the serial frame codec: round trips, chunking, resynchronisation."""

from __future__ import annotations

import itertools

from fb_strategies import encode_run, messages, seqs, times
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.decoding import NEED_DATA
from firmware_bridge.frame_codec import Frame, FrameDecoder, FrameDecoderStats, encode_frame
from firmware_bridge.frame_messages import Message

message_lists = st.lists(messages, min_size=1, max_size=8)


def decode_chunks(chunks: list[bytes]) -> tuple[list[Frame], FrameDecoder]:
    dec = FrameDecoder()
    out: list[Frame] = []
    for chunk in chunks:
        dec.feed(chunk)
        while (f := dec.next_frame()) is not NEED_DATA:
            out.append(f)
    return out, dec


def assert_bytes_accounted(stats: FrameDecoderStats, buffered: int) -> None:
    assert stats.bytes_in == stats.frame_bytes + stats.garbage_bytes + stats.delimiters + buffered


@given(messages, seqs, times)
def test_every_message_type_round_trips(message: Message, seq: int, time_us: int) -> None:
    frames, dec = decode_chunks([encode_frame(message, seq, time_us)])
    assert frames == [Frame(seq, time_us, message, 0)]
    assert dec.stats.rejected == 0


@given(message_lists, seqs)
def test_whole_buffer_and_byte_at_a_time_give_same_frames(msgs: list[Message], start: int) -> None:
    wire = b"".join(encode_run(msgs, start))
    whole, dec_whole = decode_chunks([wire])
    single, dec_single = decode_chunks([wire[i : i + 1] for i in range(len(wire))])
    assert [f.message for f in whole] == msgs
    assert whole == single
    assert dec_whole.stats == dec_single.stats


@given(message_lists, st.data())
def test_random_split_points_give_same_frames(msgs: list[Message], data: st.DataObject) -> None:
    wire = b"".join(encode_run(msgs))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    frames, _ = decode_chunks(pieces)
    assert [f.message for f in frames] == msgs


@given(message_lists, st.data())
def test_garbage_between_frames_loses_no_frame(msgs: list[Message], data: st.DataObject) -> None:
    frames = encode_run(msgs)
    garbage = [data.draw(st.binary(max_size=40)) for _ in frames]
    wire = b"".join(g + f for g, f in zip(garbage, frames, strict=True))
    decoded, dec = decode_chunks([wire])
    assert [f.message for f in decoded] == msgs
    assert all(f.gap_before == 0 for f in decoded)
    assert_bytes_accounted(dec.stats, dec.buffered)


@settings(max_examples=150)
@given(message_lists, st.data())
def test_garbage_inserted_anywhere_loses_only_damaged_frames(
    msgs: list[Message], data: st.DataObject
) -> None:
    frames = encode_run(msgs)
    wire = bytearray()
    damaged: set[int] = set()
    for i, frame in enumerate(frames):
        pos = data.draw(st.integers(0, len(frame)), label=f"insert position in frame {i}")
        junk = data.draw(st.binary(min_size=1, max_size=30), label=f"junk {i}")
        if 0 < pos < len(frame):  # strictly inside: only this frame may be damaged
            damaged.add(i)
        wire += frame[:pos] + junk + frame[pos:]
    decoded, dec = decode_chunks([bytes(wire)])
    intact = [m for i, m in enumerate(msgs) if i not in damaged]
    got = [f.message for f in decoded]
    # every intact frame is decoded, in order; a damaged one may survive only if the junk missed it
    it = iter(got)
    assert all(any(m == g for g in it) for m in intact)
    assert len(got) <= len(msgs)
    assert_bytes_accounted(dec.stats, dec.buffered)
    assert dec.stats.frames == len(got)


@given(message_lists, messages, st.data())
def test_truncated_frame_then_valid_frame_is_decoded(
    msgs: list[Message], last: Message, data: st.DataObject
) -> None:
    frames = encode_run([*msgs, last])
    victim = data.draw(st.integers(0, len(msgs) - 1))
    cut = data.draw(st.integers(1, len(frames[victim]) - 2))  # drops at least the closing delimiter
    frames[victim] = frames[victim][:cut]
    decoded, dec = decode_chunks([b"".join(frames)])
    expected = [m for i, m in enumerate([*msgs, last]) if i != victim]
    assert [f.message for f in decoded] == expected
    assert dec.stats.rejected <= 1
    assert_bytes_accounted(dec.stats, dec.buffered)


@given(message_lists, st.sets(st.integers(0, 7)), seqs)
def test_dropped_frames_are_reported_as_gaps(msgs: list[Message], dropped: set[int], start: int) -> None:
    from firmware_bridge.frame_messages import Hello

    msgs = [m for m in msgs if not isinstance(m, Hello)]  # HELLO restarts sequence tracking
    frames = encode_run(msgs, start)
    kept = [i for i in range(len(frames)) if i not in dropped]
    decoded, dec = decode_chunks([b"".join(frames[i] for i in kept)])
    expected_gaps = [0] + [b - a - 1 for a, b in itertools.pairwise(kept)]
    assert [f.gap_before for f in decoded] == expected_gaps[: len(decoded)]
    assert dec.stats.lost_frames == sum(expected_gaps)
