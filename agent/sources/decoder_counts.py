"""A serial decoder's rejections and sequence trouble by kind, for the source's `stats.errors`.

`bad_frames` folds every rejected frame or line into one number; the heartbeat also carries the
kinds, so an integrator can tell line noise (``bad_crc``, ``truncated``) from a wrong protocol or
baud rate (``oversized``: bytes without a delimiter) or a sender bug (``bad_payload``). Zero kinds
are left out.
"""

from __future__ import annotations

from firmware_bridge.frame_codec import FrameDecoderStats
from firmware_bridge.line_formats import LineDecoderStats

# Rejected chunks (their sum is the decoder's `rejected`), then the sequence counters.
FRAME_KINDS = (
    "truncated",
    "bad_crc",
    "oversized",
    "bad_version",
    "bad_payload",
    "seq_backwards",
    "lost_frames",
    "duplicates",
)
LINE_KINDS = ("bad_lines", "oversized_lines", "no_value_fields")  # the last: fields, not lines, rejected


def decoder_errors(stats: FrameDecoderStats | LineDecoderStats) -> dict[str, int]:
    """The non-zero error kinds of one decoder's counters."""
    kinds = FRAME_KINDS if isinstance(stats, FrameDecoderStats) else LINE_KINDS
    return {kind: count for kind in kinds if (count := getattr(stats, kind))}
