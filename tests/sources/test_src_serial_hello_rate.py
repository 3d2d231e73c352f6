"""A HELLO rate must not send a wearable's vital signs silently where the `vitals` detectors do not look.

A HELLO declaring hr and spo2 at NaN, 1e9 or 25 Hz made their readings a waveform stream named "hr"
(the stream name comes from the rate, docs/serial-protocol.md): the `vitals` detectors saw nothing, and
35 s of hr 150 raised no alarm, no log line, no counter (review of 2026-11-30, finding 3). Now a rate that
is none (NaN, inf, <= 0, absurd) refuses the HELLO, counted and told, and the data waits for a usable
one; a real rate above 10 Hz keeps its waveform stream, but the pipeline says that the detectors reading
those channels watch another stream, and the status lists it. Real pseudo-terminals, the real
`SerialSource` and `Pipeline`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from src_pty import PtyDevice, serial_device, take

from agent.config import parse_config
from agent.logs import redact_identifiers
from agent.pipeline import Pipeline
from agent.readings import Reading
from agent.sources.serial import SerialSource
from agent.sources.serial_frames import unusable_rate
from agent.status import render
from firmware_bridge import Frame, FrameDecoder, encode_frame
from firmware_bridge.frame_messages import ChannelSpec, DataBlock, Hello, SampleType

PSEUDONYM = "d-bed7pseudonym"


def hello(rate_hz: float) -> Hello:
    specs = tuple(ChannelSpec(name, "u", SampleType.INT16, rate_hz, 1.0) for name in ("hr", "spo2"))
    return Hello("emu-1", (1, 0, 0), specs)


def config(tmp_path: Path) -> dict[str, Any]:
    return {
        "gateway": {"id": "gw", "site": "s"},
        "mqtt": {"url": "mqtt://127.0.0.1:1883"},
        "outbox": {"path": "outbox.sqlite"},
        "devices": [
            {
                "id": "bed-7",
                "kind": "wearable",
                "transport": "serial",
                "serial": {"port": str(tmp_path / "p")},
            }
        ],
        "detectors": [
            {
                "id": "hr-high",
                "type": "limit",
                "stream": "vitals",
                "channels": ["hr"],
                "rate_hz": 1.0,
                "params": {"above": 120},
            }
        ],
        "alarms": [{"condition": "tachycardia", "detector": "hr-high", "min_duration_s": 10, "unit": "bpm"}],
    }


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[PtyDevice]:
    redact_identifiers({"bed-7": PSEUDONYM})  # as the daemon does at start (conftest undoes it)
    dev = PtyDevice(tmp_path / "usb-Acme_Monitor_0001-if00-port0")
    dev.plug()
    yield dev
    dev.unplug()


def frames(rate_hz: float, blocks: int, seq: int = 0, start_us: int = 0) -> bytes:
    """A HELLO at `rate_hz`, then `blocks` blocks of one hr 150 / spo2 97 sample each."""
    wire = encode_frame(hello(rate_hz), seq, start_us)
    for k in range(blocks):
        t_us = start_us + (k + 1) * 1000
        block = DataBlock(t_us, SampleType.INT16, (0, 1), np.array([[150, 97]]))
        wire += encode_frame(block, seq + 1 + k, t_us)
    return wire


async def opened(source: SerialSource) -> asyncio.Future[list[Reading]]:
    pending = asyncio.ensure_future(take(source, 1))
    async with asyncio.timeout(10):
        while not source.stats.connected:
            await asyncio.sleep(0.01)
    return pending


@pytest.mark.parametrize("rate_hz", [math.nan, math.inf, 0.0, -1.0, 1e9])
def test_a_hello_rate_that_is_none_is_refused_counted_and_told_once(
    pty: PtyDevice, rate_hz: float, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> tuple[list[Reading], dict[str, int], int]:
        async with SerialSource(serial_device(pty.link)) as source:
            pending = await opened(source)
            pty.write(frames(rate_hz, 3) + frames(rate_hz, 3, seq=4, start_us=10_000))
            await asyncio.sleep(1.0)
            assert not pending.done()  # nothing went anywhere: not to a stream named "hr"
            errors = dict(source.stats.errors)
            pty.write(frames(1.0, 1, seq=8, start_us=20_000))  # the firmware fixed: the data flows
            return await pending, errors, source.stats.bad_frames

    with caplog.at_level(logging.WARNING, logger="agent.sources.serial"):
        readings, errors, bad_frames = asyncio.run(main())
    assert errors["bad_hello"] == 2 and errors["waiting_hello"] == 6 and bad_frames == 2
    told = [r.getMessage() for r in caplog.records if "bad_hello" in r.getMessage()]
    assert len(told) == 1 and told[0].startswith(
        f'{PSEUDONYM}: the serial device\'s HELLO declares channel "hr"'
    )
    assert [r.stream for r in readings] == ["bed-7/vitals"]


def test_vital_signs_above_10_hz_going_to_a_waveform_stream_are_told_and_listed(
    tmp_path: Path, pty: PtyDevice, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = Pipeline(parse_config(config(tmp_path), base_dir=tmp_path), lambda _: PSEUDONYM)

    async def main() -> list[Reading]:
        async with SerialSource(serial_device(pty.link)) as source:
            pending = await opened(source)
            pty.write(frames(25.0, 3))
            return await pending + await take(source, 2)

    with caplog.at_level(logging.WARNING):
        readings = asyncio.run(main())
        pipeline.ingest(readings)
        pipeline.ingest(readings)  # told once per device stream
    assert {r.stream for r in readings} == {"bed-7/hr"}  # the documented rule: > 10 Hz is a waveform
    told = [r.getMessage() for r in caplog.records if "which no detector watches" in r.getMessage()]
    assert told == [
        f'device {PSEUDONYM} sends hr, spo2 on stream "hr", which no detector watches; detector(s) hr-high'
        ' read hr on stream "vitals", and see none of this device\'s: their alarms cannot come from it. A'
        " serial device's HELLO rate above 10 Hz makes a waveform stream named after its channels"
        " (docs/serial-protocol.md): fix the firmware's rate, or point detectors.<id>.stream (and rate_hz)"
        ' at "hr"'
    ]
    listed = pipeline.unwatched.listed
    assert listed == {f"{PSEUDONYM}/hr": {"channels": ["hr"], "watched_on": ["vitals"]}}
    shown = render("live", {"heartbeat": {"gateway": "gw"}, "unwatched_streams": listed})
    assert f"stream {PSEUDONYM}/hr: no detector watches it, but it carries hr" in shown


def test_an_unwatched_stream_no_detector_reads_is_not_told(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An ECG nobody watches (kept for the beats, or not wanted) is no wiring problem."""
    pipeline = Pipeline(parse_config(config(tmp_path), base_dir=tmp_path), lambda _: PSEUDONYM)
    ecg = Reading("bed-7/ecg", ("ecg",), np.zeros((25, 1)), 1.8e9, 1.0, 1 / 250)
    with caplog.at_level(logging.WARNING):
        pipeline.ingest([ecg])
    assert pipeline.unwatched.listed == {} and not caplog.records


def test_a_stream_the_config_says_the_device_sends_is_unwatched_by_design(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A wearable simulator's own RR beside the `ecg_rr` an `af` reads (the demo): no warning, not listed."""
    cfg = config(tmp_path)
    cfg["devices"] = [{"id": "bed-7", "kind": "wearable", "transport": "simulator"}]
    cfg["detectors"] = [{"id": "af", "type": "af", "stream": "ecg_rr", "channels": ["rr"]}]
    cfg["alarms"] = [{"condition": "atrial_fibrillation", "detector": "af"}]
    pipeline = Pipeline(parse_config(cfg, base_dir=tmp_path), lambda _: PSEUDONYM)
    rr = Reading("bed-7/rr", ("rr",), np.full((1, 1), 0.8), 1.8e9, 1.0)
    undeclared = Reading("bed-7/hr", ("rr",), np.full((1, 1), 0.8), 1.8e9, 1.0)
    with caplog.at_level(logging.WARNING):
        pipeline.ingest([rr])
        assert pipeline.unwatched.listed == {} and not caplog.records
        pipeline.ingest([undeclared])  # a stream the simulator does not send is still told
    assert list(pipeline.unwatched.listed) == [f"{PSEUDONYM}/hr"]


@pytest.mark.parametrize(
    ("rate_hz", "usable"),
    [(1e-5, True), (0.99999e-5, False), (1 / 86_400, True), (100_000.0, True), (100_000.01, False)],
)
def test_the_documented_rate_bounds_are_usable_as_sent(rate_hz: float, usable: bool) -> None:
    """A rate crosses the wire as an f32: the documented 1e-5 Hz arrives as 9.99999975e-06 and was
    refused (review of the fixes, 2026-11-30). A sample a day (1.16e-05 Hz) is usable; just below
    1e-5 Hz, or past 100 kHz, is not."""
    decoder = FrameDecoder()
    decoder.feed(encode_frame(hello(rate_hz), 0, 0))
    frame = decoder.next_frame()
    assert isinstance(frame, Frame) and isinstance(frame.message, Hello)
    assert (unusable_rate(frame.message) is None) == usable
