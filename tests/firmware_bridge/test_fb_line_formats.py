"""CSV and JSON-lines decoders: declared channel maps, bad lines counted, never raising."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge.decoding import NEED_DATA
from firmware_bridge.line_formats import CsvLineDecoder, JsonLineDecoder, LineSample

CHANNELS = ("hr", "spo2")
Decoder = CsvLineDecoder | JsonLineDecoder


def drain(dec: Decoder) -> list[LineSample]:
    out = []
    while (f := dec.next_frame()) is not NEED_DATA:
        out.append(f)
    return out


def decode(dec: Decoder, data: bytes) -> list[tuple[float, ...]]:
    dec.feed(data)
    return [s.values for s in drain(dec)]


def same(a: list[tuple[float, ...]], b: list[tuple[float, ...]]) -> bool:
    return len(a) == len(b) and all(
        all((x == y) or (math.isnan(x) and math.isnan(y)) for x, y in zip(p, q, strict=True))
        for p, q in zip(a, b, strict=True)
    )


def test_csv_values_header_crlf_and_missing_field() -> None:
    dec = CsvLineDecoder(CHANNELS)
    got = decode(dec, b"hr,spo2\r\n72,98\n 73 , 97.5 \r\n\n74,\n")
    assert same(got, [(72.0, 98.0), (73.0, 97.5), (74.0, math.nan)])
    assert (dec.stats.header_lines, dec.stats.blank_lines, dec.stats.frames) == (1, 1, 3)


@pytest.mark.parametrize(
    "line",
    [
        b"72\n",
        b"72,98,1\n",
        b"72,abc\n",
        b"1e999,1\n",
        b"nand,1\n",
        b"\xff\xfe,1\n",
        b"1_000,98\n",  # float() takes these: a strict ASCII number does not (review of 2026-11-30, M2)
        "\u0667\u0662,98\n".encode(),  # Arabic-Indic 72
        "\uff17\uff12,98\n".encode(),  # full-width 72
        b"0x48,98\n",
    ],
)
def test_csv_bad_lines_are_counted_and_skipped(line: bytes) -> None:
    dec = CsvLineDecoder(CHANNELS)
    assert decode(dec, line + b"60,99\n") == [(60.0, 99.0)]
    assert dec.stats.bad_lines == 1 and dec.stats.garbage_bytes == len(line)


def test_csv_fields_written_as_no_number_are_missing_values_not_bad_lines() -> None:
    """printf and Arduino write nan / inf / ovf for a dead probe: that channel is missing, the others kept
    (review of 2026-11-30: '5.000,nan,10.00' dropped the 5 mm/s and its alarm)."""
    dec = CsvLineDecoder(("vib", "temp", "current"))
    got = decode(dec, b"5.000,nan,10.00\n-nan,1,2\nINF,ovf,-inf\n1,2,3\n")
    assert same(got, [(5.0, math.nan, 10.0), (math.nan, 1.0, 2.0), (math.nan,) * 3, (1.0, 2.0, 3.0)])
    assert (dec.stats.no_value_fields, dec.stats.bad_lines) == (5, 0)


def test_jsonl_no_value_constants_are_missing_values() -> None:
    dec = JsonLineDecoder(CHANNELS)
    got = decode(dec, b'{"hr":NaN,"spo2":98}\n{"hr":72,"spo2":-Infinity}\n{"hr":NaN}\n')
    assert same(got, [(math.nan, 98.0), (72.0, math.nan)])
    assert (dec.stats.no_value_fields, dec.stats.bad_lines) == (2, 1)  # the third lacks spo2: bad, uncounted


def test_csv_custom_delimiter_and_line_numbers() -> None:
    dec = CsvLineDecoder(("a", "b", "c"), delimiter=";")
    dec.feed(b"1;2;3\nbad\n4;5;6\n")
    samples = drain(dec)
    assert [(s.values, s.line_no) for s in samples] == [((1.0, 2.0, 3.0), 1), ((4.0, 5.0, 6.0), 3)]


def test_jsonl_values_extra_keys_and_null() -> None:
    dec = JsonLineDecoder(CHANNELS)
    got = decode(dec, b'{"hr":72,"spo2":98}\n{"t": 5, "spo2": 97.5, "hr": 73}\r\n{"hr":null,"spo2":96}\n')
    assert same(got, [(72.0, 98.0), (73.0, 97.5), (math.nan, 96.0)])


@pytest.mark.parametrize(
    "line",
    [
        b'{"hr":72}',  # missing key
        b'{"hr":"72","spo2":98}',  # string value
        b'{"hr":true,"spo2":98}',  # bool is not a number
        b'{"hr":1e999,"spo2":98}',  # overflows to inf
        b"[72, 98]",  # not an object
        b'{"hr":72,"spo2":',  # truncated
        b"[" * 2000 + b"]" * 2000,  # deep nesting
        b'{"hr":' + b"9" * 4000 + b',"spo2":1}',  # integer too long to convert
        b"\xff\xfe",
    ],
    ids=lambda b: repr(b[:20]),
)
def test_jsonl_bad_lines_are_counted_and_skipped(line: bytes) -> None:
    dec = JsonLineDecoder(CHANNELS)
    assert decode(dec, line + b'\n{"hr":60,"spo2":99}\n') == [(60.0, 99.0)]
    assert dec.stats.bad_lines == 1


@pytest.mark.parametrize("cls", [CsvLineDecoder, JsonLineDecoder])
def test_oversized_line_is_dropped_across_feeds(cls: type[Decoder]) -> None:
    dec = cls(CHANNELS, max_line=64)
    for _ in range(10):
        dec.feed(b"1" * 50)
        assert dec.next_frame() is NEED_DATA
    good = b'{"hr":60,"spo2":99}\n' if cls is JsonLineDecoder else b"60,99\n"
    assert decode(dec, b"\n" + good) == [(60.0, 99.0)]
    assert dec.stats.oversized_lines == 1
    assert dec.stats.bytes_in == dec.stats.consumed_bytes + dec.buffered


def test_channels_must_be_declared_once() -> None:
    with pytest.raises(ValueError, match="unique"):
        CsvLineDecoder(("hr", "hr"))


rows = st.lists(
    st.tuples(st.integers(-(10**6), 10**6), st.floats(-1e6, 1e6, allow_nan=False).map(lambda x: round(x, 3))),
    min_size=1,
    max_size=20,
)


def render(cls: type[Decoder], row: tuple[float, ...]) -> bytes:
    if cls is JsonLineDecoder:
        return (json.dumps(dict(zip(CHANNELS, row, strict=True))) + "\n").encode()
    return (",".join(repr(v) for v in row) + "\n").encode()


@given(st.sampled_from([CsvLineDecoder, JsonLineDecoder]), rows)
def test_whole_buffer_and_byte_at_a_time_agree(cls: type[Decoder], data: list[tuple[int, float]]) -> None:
    wire = b"".join(render(cls, r) for r in data)
    whole = decode(cls(CHANNELS), wire)
    single_dec = cls(CHANNELS)
    single: list[tuple[float, ...]] = []
    for i in range(len(wire)):
        single += decode(single_dec, wire[i : i + 1])
    assert whole == single == [tuple(float(v) for v in r) for r in data]


@given(st.sampled_from([CsvLineDecoder, JsonLineDecoder]), rows, st.data())
def test_garbage_lines_lose_only_themselves(
    cls: type[Decoder], data: list[tuple[int, float]], draw: st.DataObject
) -> None:
    junk = st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"") + b"\n")
    wire = b"".join(draw.draw(junk) + render(cls, r) for r in data)
    dec = cls(CHANNELS)
    got = decode(dec, wire)
    expected = [tuple(float(v) for v in r) for r in data]
    it = iter(got)  # junk may by chance be a valid line; every real row must still come out, in order
    assert all(any(e == g for g in it) for e in expected)
    s = dec.stats
    assert s.lines == s.frames + s.blank_lines + s.header_lines + s.bad_lines + s.oversized_lines
    assert s.bytes_in == s.consumed_bytes + dec.buffered
