"""What a serial device says about itself reaches the operator (audit auddev, findings 4 and 8).

One EVENT FAULT or BATTERY_LOW raises its technical alarm and is logged; a duplicated frame is
delivered once; a HELLO announcing another device is logged. Real pseudo-terminals, the real
`SerialSource` and `Pipeline`. The device's blocks are written at once as a backlog with 1 s device
spacing, which the source keeps (agent.sources.serial_clock), so 40 s of device time take no 40 s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from src_pty import PtyDevice, serial_device, take

from agent.config import parse_config
from agent.events import AlarmEvent, Phase
from agent.pipeline import Pipeline
from agent.readings import Quality, Reading
from agent.sources.serial import SerialSource
from firmware_bridge import encode_frame
from firmware_bridge.frame_messages import ChannelSpec, DataBlock, Event, EventKind, Hello, SampleType

HELLO = Hello("pump-fw-1", (1, 0, 0), (ChannelSpec("hr", "bpm", SampleType.INT16, 1.0, 1.0),))


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
                "params": {"above": 120},
            }
        ],
        "alarms": [{"condition": "tachycardia", "detector": "hr-high", "min_duration_s": 3, "unit": "bpm"}],
    }


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[PtyDevice]:
    dev = PtyDevice(tmp_path / "usb-Acme_Pump_0001-if00-port0")
    dev.plug()
    yield dev
    dev.unplug()


def block(t_s: float, hr: int = 70) -> DataBlock:
    t_us = round(t_s * 1e6)
    return DataBlock(t_us, SampleType.INT16, (0,), np.array([[hr]]))


def wire(messages: list[tuple[object, float]], first_seq: int = 0) -> bytes:
    """Frames of (message, device seconds), numbered on from `first_seq`."""
    out = b""
    for seq, (message, t_s) in enumerate(messages, first_seq):
        out += encode_frame(message, seq, round(t_s * 1e6))  # type: ignore[arg-type]
    return out


def run(pty: PtyDevice, writes: list[bytes], count: int) -> tuple[SerialSource, list[Reading]]:
    """Open the source, then write each of `writes` once the previous readings are in; `count` readings."""

    async def main() -> tuple[SerialSource, list[Reading]]:
        async with SerialSource(serial_device(pty.link)) as source:
            first = asyncio.ensure_future(take(source, 1))
            async with asyncio.timeout(10):
                while not source.stats.connected:
                    await asyncio.sleep(0.01)
            for data in writes:
                pty.write(data)
                await asyncio.sleep(0.2)
            readings = [*await first, *await take(source, count - 1)]
            return source, readings

    return asyncio.run(main())


def alarms(events: list[AlarmEvent]) -> list[tuple[str, Phase]]:
    return [(e.condition, e.phase) for e in events]


@pytest.mark.parametrize(
    ("kind", "code", "condition", "told"),
    [
        (EventKind.FAULT, 7, "device_fault", "reports a fault (code 7)"),
        (EventKind.BATTERY_LOW, 12, "battery_low", "reports a low battery (12 %)"),
    ],
)
def test_one_fault_or_battery_event_raises_its_alarm_and_is_logged(
    tmp_path: Path,
    pty: PtyDevice,
    caplog: pytest.LogCaptureFixture,
    kind: EventKind,
    code: int,
    condition: str,
    told: str,
) -> None:
    """90 s of 1 Hz blocks with one event at 5.5 s: the technical alarm starts (its minimum duration is
    10 s, which a 10 s hold met only when a block fell on the event's second) and ends; the log names
    the event once, without the fault's detail value (424242)."""
    messages: list[tuple[object, float]] = [(HELLO, 0.0)]
    messages += [(block(t), float(t)) for t in range(6)]
    messages += [(Event(kind, code, 424242), 5.5)]
    messages += [(block(t), float(t)) for t in range(6, 90)]
    caplog.set_level(logging.WARNING, "agent.sources.serial")
    source, readings = run(pty, [wire(messages)], 90)
    pipeline = Pipeline(parse_config(config(tmp_path), base_dir=tmp_path), str)
    events = pipeline.ingest(readings)
    assert alarms(events) == [(condition, Phase.START), (condition, Phase.END)]
    flag = Quality.DEVICE_FAULT if kind is EventKind.FAULT else Quality.LOW_BATTERY
    assert sum(1 for r in readings if r.quality & flag) == (15 if kind is EventKind.FAULT else 60)
    lines = [r.getMessage() for r in caplog.records if "reports" in r.getMessage()]
    assert len(lines) == 1 and told in lines[0] and "424242" not in lines[0]
    assert source.stats.errors.get("device_faults", 0) == (1 if kind is EventKind.FAULT else 0)


def test_a_fault_repeated_while_held_is_logged_once_and_a_reboot_ends_the_hold(
    tmp_path: Path, pty: PtyDevice, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "agent.sources.serial")
    messages: list[tuple[object, float]] = [(HELLO, 0.0), (block(0), 0.0)]
    messages += [(Event(EventKind.FAULT, 7, 0), 100.0 + t) for t in range(0, 10, 2)]
    messages += [(block(110), 110.0)]
    rebooted: list[tuple[object, float]] = [(HELLO, 0.5), (block(1.0), 1.0)]
    _, readings = run(pty, [wire(messages), wire(rebooted)], 3)
    assert [r.quality & Quality.DEVICE_FAULT for r in readings] == [0, Quality.DEVICE_FAULT, 0]
    assert sum("reports a fault" in r.getMessage() for r in caplog.records) == 1


def rate_config(tmp_path: Path, ecg_rate_hz: float) -> dict[str, Any]:
    cfg = config(tmp_path)
    cfg["detectors"] = [
        *cfg["detectors"],
        {
            "id": "ecg-range",
            "type": "limit",
            "stream": "ecg",
            "channels": ["ecg"],
            "rate_hz": ecg_rate_hz,
            "params": {"above": 10.0, "hop_s": 0.1},
        },
    ]
    return cfg


@pytest.mark.parametrize("ecg_rate_hz", [500.0, 250.0], ids=["wrong", "right"])
def test_a_detector_rate_other_than_the_hello_rate_is_told_once(
    tmp_path: Path, pty: PtyDevice, caplog: pytest.LogCaptureFixture, ecg_rate_hz: float
) -> None:
    """The emulator's HELLO declares ECG at 250 Hz and hr/spo2 at 1 Hz; detectors.ecg-range.rate_hz = 500
    is told once, naming the key, the device and both rates; 250 and the 1 Hz vitals are not."""
    caplog.set_level(logging.WARNING)
    pty.start()
    pipeline = Pipeline(parse_config(rate_config(tmp_path, ecg_rate_hz), base_dir=tmp_path), str)

    async def main() -> None:
        async with SerialSource(serial_device(pty.link)) as source:
            for _ in range(10):
                pipeline.ingest(await take(source, 10))

    asyncio.run(main())
    assert [
        r for r in caplog.records if r.name == "agent.sources.serial"
    ] == []  # the emulator keeps its rates
    told = [r.getMessage() for r in caplog.records if r.name == "agent.pipeline.wiring"]
    if ecg_rate_hz == 250.0:
        assert told == []
        return
    assert len(told) == 1
    assert "detectors.ecg-range.rate_hz is 500 Hz" in told[0] and "device bed-7 declares 250 Hz" in told[0]
    assert pipeline.streams["ecg"].rates.told == {("ecg-range", 250.0)}  # no device id kept


def test_declared_rates_are_checked_on_the_rounds_path_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """60 devices' single samples declaring 2 Hz (the rounds of `ingest_many`) against rate_hz = 1:
    one warning, naming the first; a device declaring 4 Hz among them gets its own."""
    caplog.set_level(logging.WARNING, "agent.pipeline.wiring")
    pipeline = Pipeline(parse_config(config(tmp_path), base_dir=tmp_path), str)
    for k in range(5):
        batch = [
            Reading(
                f"bed-{d}/vitals", ("hr",), np.array([[70.0]]), 1_800_000_000.0 + k / 2, 100.0 + k / 2, 0.5
            )
            for d in range(60)
        ]
        if k == 3:  # streams known by now: this batch is one round
            batch[30] = Reading(
                "bed-30/vitals", ("hr",), np.array([[70.0]]), batch[30].wall_time, 100.0, 0.25
            )
        pipeline.ingest(batch)
    told = [r.getMessage() for r in caplog.records]
    assert len(told) == 2
    assert "device bed-0 declares 2 Hz" in told[0] and "device bed-30 declares 4 Hz" in told[1]


@pytest.mark.parametrize("rounds", [True, False], ids=["rounds", "one-by-one"])
def test_devices_declaring_two_rates_are_looked_at_once_per_device(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, rounds: bool
) -> None:
    """Two devices of one stream name declaring 1 Hz and 2 Hz, their readings interleaved: each device's
    spacing is looked at once (review of 2026-11-30, finding 10: the last spacing looked at flipped and
    every reading was looked at), and the 2 Hz one is told once."""
    caplog.set_level(logging.WARNING, "agent.pipeline.wiring")
    pipeline = Pipeline(parse_config(config(tmp_path), base_dir=tmp_path), str)
    stream = pipeline.streams["vitals"]
    stream.rounds = rounds
    for k in range(50):
        pipeline.ingest(
            [
                Reading(f"bed-{d}/vitals", ("hr",), np.array([[70.0]]), 1.8e9 + k, 100.0 + k, period)
                for d, period in ((1, 1.0), (2, 0.5))
            ]
        )
    assert stream.rates.calls == 2
    assert stream.rates.told == {("hr-high", 2.0)}
    assert len(caplog.records) == 1


def test_a_duplicated_frame_is_delivered_once_and_counted(pty: PtyDevice) -> None:
    """Frames 1, 2, 2, 3 (the repeat with the same sequence number and device time): three readings,
    each sample once, `errors["duplicates"]` 1, no sequence trouble."""
    frames = wire([(HELLO, 0.0), (block(1, 71), 1.0), (block(2, 72), 2.0)])
    frames += wire([(block(2, 72), 2.0)], first_seq=2) + wire([(block(3, 73), 3.0)], first_seq=3)
    source, readings = run(pty, [frames], 3)
    assert [r.values[0, 0] for r in readings] == [71.0, 72.0, 73.0]
    assert source.stats.errors.get("duplicates") == 1 and "seq_backwards" not in source.stats.errors
    assert source.stats.bad_frames == 0


def test_a_hello_announcing_another_device_is_logged_and_restarts_the_clock(
    pty: PtyDevice, caplog: pytest.LogCaptureFixture
) -> None:
    """A pump swapped on the same port: its HELLO names another device id and channel table. One warning
    says so (without either id: the log redactor does not know them), its first block is GAP, and its
    clock (an hour behind the first pump's) is anchored afresh: its block is stamped at its arrival."""
    caplog.set_level(logging.WARNING, "agent.sources.serial")
    renamed = Hello("pump-fw-RENAMED", (1, 0, 0), (ChannelSpec("spo2", "%", SampleType.INT16, 1.0, 1.0),))
    fault = Event(EventKind.FAULT, 3, 0)
    first = wire([(HELLO, 0.0), (block(3600.0), 3600.0), (block(3601.0), 3601.0), (fault, 3601.5)])
    second = wire([(renamed, 0.0), (block(1.0, 97), 1.0)], first_seq=4)
    _, readings = run(pty, [first, second], 3)
    assert [r.channels for r in readings] == [("hr",), ("hr",), ("spo2",)]
    assert readings[2].quality == Quality.GAP  # not DEVICE_FAULT: that was the other pump's
    assert readings[2].wall_time > readings[1].wall_time  # not an hour back
    (told,) = [r.getMessage() for r in caplog.records if "announced" in r.getMessage()]
    assert "announced another device id and another channel table (spo2)" in told
    assert "pump-fw" not in told


def test_blocks_faster_than_the_hello_rate_are_told_once(
    pty: PtyDevice, caplog: pytest.LogCaptureFixture
) -> None:
    """HELLO says 1 Hz, the device sends a block every 0.2 s of its own clock (the audit's heartbeat
    read rate_hz 4.98 and nothing said why): one warning after 10 such blocks, the readings go on."""
    caplog.set_level(logging.WARNING, "agent.sources.serial")
    messages: list[tuple[object, float]] = [(HELLO, 0.0)]
    messages += [(block(k * 0.2), k * 0.2) for k in range(30)]
    _, readings = run(pty, [wire(messages)], 30)
    assert len(readings) == 30
    (told,) = [r.getMessage() for r in caplog.records]
    assert 'blocks of stream "vitals" begin every 0.2 s' in told and "HELLO declares 1 Hz" in told


def test_blocks_at_the_hello_rate_are_not_told(pty: PtyDevice, caplog: pytest.LogCaptureFixture) -> None:
    """1 Hz blocks with jitter, a lost frame and a reboot: nothing to tell."""
    caplog.set_level(logging.WARNING, "agent.sources.serial")
    times = [0.0, 1.02, 1.98, 3.0, 5.0, 6.01, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 0.5, 1.5, 2.5]
    messages: list[tuple[object, float]] = [(HELLO, 0.0), *[(block(t), t) for t in times]]
    _, readings = run(pty, [wire(messages)], len(times))
    assert len(readings) == len(times)
    assert [r.getMessage() for r in caplog.records] == []
