"""A secondary BLE profile that has not reported yet or has gone stale is a missing channel, not a "no value",
end to end: byte-exact Heart Rate, PLX Continuous and Temperature Measurement payloads from the fake radio
through the real BleSource into the real Pipeline.

Review of 2026-11-30, finding 1 (b): the `vitals` row held NaN for a profile not yet received or older than
its `hold_s`, and the quality gate flags NaN on a watched channel OUT_OF_RANGE, so a thermometer that reports
every few minutes, or a PLX that stops, gave a standing signal_poor. A device's own "no value" (SFLOAT NaN,
PLX "measurement unavailable") still raises it."""

from __future__ import annotations

import asyncio
import logging
import struct
from pathlib import Path

import pytest
from fake_ble import HR_UUID, PLX_UUID, FakeFinder, FakeRadio, hr_measurement, plx_continuous, sfloat

import agent.sources.ble
from agent.config.loader import parse_config
from agent.config.schema import AgentConfig
from agent.events import AlarmEvent, AlarmKind, Phase
from agent.pipeline.pipeline import Pipeline
from agent.readings import Quality, Reading
from agent.sources.backoff import BackoffPolicy
from agent.sources.ble import BleSource, retry_connector
from agent.sources.ble_profiles import PROFILES
from agent.status import render

FAST = BackoffPolicy(initial_s=0.02, max_s=0.2)
DEADLINE_S = 20.0
TEMP_UUID = PROFILES["thermometer"].characteristic


def temperature(celsius: float | None) -> bytes:
    """Temperature Measurement (0x2A1C): flags 0 (°C, no time stamp, no type) and an IEEE-11073 32-bit
    FLOAT: 24-bit mantissa, 8-bit exponent; None is the FLOAT NaN (mantissa 0x7FFFFF, exponent 0)."""
    raw = 0x007FFFFF if celsius is None else (0xFF << 24) | (round(celsius * 10) & 0xFFFFFF)  # exponent -1
    return b"\x00" + struct.pack("<I", raw)


def limit(id_: str, channel: str, bound: str, value: float) -> dict[str, object]:
    return {"id": id_, "type": "limit", "stream": "vitals", "channels": [channel], "params": {bound: value}}


def rule(condition: str, detector: str) -> dict[str, object]:
    return {
        "condition": condition,
        "detector": detector,
        "priority": "high",
        "min_duration_s": 3,
        "clear_after_s": 3,
        "cooldown_s": 1,
    }


def config(
    tmp_path: Path,
    profiles: list[str],
    *extra: tuple[dict[str, object], dict[str, object]],
    lost_after_s: float = 30.0,
) -> AgentConfig:
    """One BLE device with `profiles`, a HIGH limit alarm on each vital sign they give, and `extra`
    (detector, rule) pairs. A profile silent for `lost_after_s` while another talks rebuilds the link,
    which these fake-clock runs do not follow: runs where one stops set it longer than they last."""
    watched = [(limit("hr-high", "hr", "above", 120), rule("tachycardia", "hr-high")), *extra]
    if "plx" in profiles:
        watched.append((limit("spo2-low", "spo2", "below", 90), rule("spo2_low", "spo2-low")))
    if "thermometer" in profiles:
        watched.append((limit("fever", "temp", "above", 38.5), rule("fever", "fever")))
    return parse_config(
        {
            "gateway": {"id": "gw-ble", "site": "lab", "state_dir": str(tmp_path / "state")},
            "mqtt": {"url": "mqtt://127.0.0.1:1"},
            "outbox": {"path": str(tmp_path / "state" / "outbox.sqlite")},
            "devices": [
                {
                    "id": "bed-3-strap",
                    "kind": "wearable",
                    "transport": "ble",
                    "lost_after_s": lost_after_s,
                    "ble": {"address": "C4:7C:8D:6A:12:34", "profiles": profiles},
                }
            ],
            "detectors": [d for d, _ in watched],
            "alarms": [r for _, r in watched],
        },
        base_dir=tmp_path,
    )


class Clock:
    """The gateway's wall clock, and the BLE source's monotonic one (it stamps held values with
    `time.monotonic()`): one second a step, so a `hold_s` (3 s PLX, 120 s thermometer) passes without
    waiting. Only the source module's `time` is replaced: the event loop keeps the real clock."""

    def __init__(self) -> None:
        self.t = 1.8e9

    def __call__(self) -> float:
        return self.t

    def time(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t - 1.8e9 + 1000.0


Step = dict[str, bytes]  # characteristic -> payload notified in one second; the HR one (if any) last


async def run(
    cfg: AgentConfig, steps: list[Step], monkeypatch: pytest.MonkeyPatch
) -> tuple[list[AlarmEvent], list[Reading], Pipeline]:
    """Each step is one second: its notifications, the HR one last (it paces one vitals row)."""
    clock = Clock()
    monkeypatch.setattr(agent.sources.ble, "time", clock)
    radio = FakeRadio()
    source = BleSource(
        cfg.devices[0],
        finder=FakeFinder(radio),
        connector=retry_connector(radio.client_class()),
        backoff=FAST,
        clock=clock,
    )
    pipeline = Pipeline(cfg, lambda device, prefix="d": f"{prefix}-x", clock=clock)
    events: list[AlarmEvent] = []
    rows: list[Reading] = []
    async with source:
        await radio.wait_subscribed(1, HR_UUID)
        for step in steps:
            clock.t += 1.0
            for uuid, payload in sorted(step.items(), key=lambda kv: kv[0] == HR_UUID):
                radio.notify(uuid, payload)
            readings: list[Reading] = []
            if HR_UUID in step:
                async with asyncio.timeout(DEADLINE_S):
                    readings.append(await anext(source))
            rows += readings
            events += pipeline.ingest(readings)
    return events, rows, pipeline


def started(events: list[AlarmEvent]) -> set[tuple[AlarmKind, str]]:
    return {(e.kind, e.condition) for e in events if e.phase is Phase.START}


HR72 = {HR_UUID: hr_measurement(72)}


def seconds(n: int, *payloads: dict[str, bytes]) -> list[Step]:
    step: Step = {}
    for p in payloads:
        step |= p
    return [step] * n


def wiring_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The wiring check's records only: another test may have left other loggers at INFO."""
    return [r for r in caplog.records if r.name == "agent.pipeline.wiring"]


def vitals_channels(rows: list[Reading]) -> list[tuple[str, ...]]:
    """The channel tuples of the vitals rows, each run of equal ones once."""
    out: list[tuple[str, ...]] = []
    for r in rows:
        if r.stream.endswith("/vitals") and (not out or out[-1] != r.channels):
            out.append(r.channels)
    return out


def test_a_slow_thermometer_is_missing_until_it_reports_and_after_it_goes_stale_and_raises_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # 30 s before the first temperature, one reading, then none for 200 s (its hold_s is 120 s)
    temp = {TEMP_UUID: temperature(36.8)}
    steps = seconds(30, HR72) + seconds(1, HR72, temp) + seconds(200, HR72)
    caplog.set_level(logging.INFO, "agent.pipeline.wiring")
    events, rows, pipeline = asyncio.run(
        run(config(tmp_path, ["heart_rate", "thermometer"]), steps, monkeypatch)
    )
    assert events == []  # no signal_poor from a thermometer that has not reported or went quiet
    assert vitals_channels(rows) == [("hr",), ("hr", "temp"), ("hr",)]
    assert rows[30].values.tolist() == [[72.0, pytest.approx(36.8)]]
    assert not any(r.quality & Quality.OUT_OF_RANGE for r in rows)
    # it arrived: not a channel that "never arrives" (status), and the early warning said it may come later
    assert pipeline.missing_channels() == {}
    records = wiring_lines(caplog)
    told = [r.getMessage() for r in records]
    assert len(told) == 2, told
    assert 'detector fever watches channel "temp"' in told[0] and "have not had it yet" in told[0]
    assert 'channel "temp" of stream "vitals" arrived' in told[1] and records[1].levelno == logging.INFO


def test_a_plx_that_stops_is_missing_and_a_good_hr_goes_on_being_judged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    plx = {PLX_UUID: plx_continuous(98, 72)}
    steps = seconds(10, HR72, plx) + seconds(60, {HR_UUID: hr_measurement(150)})
    caplog.set_level(logging.INFO, "agent.pipeline.wiring")
    cfg = config(tmp_path, ["heart_rate", "plx"], lost_after_s=300)
    events, rows, pipeline = asyncio.run(run(cfg, steps, monkeypatch))
    # SpO2 arrived before: rows without it later are no wiring problem (no line, not in the status)
    assert wiring_lines(caplog) == [] and pipeline.missing_channels() == {}
    assert started(events) == {(AlarmKind.PHYSIOLOGICAL, "tachycardia")}  # no signal_poor
    assert vitals_channels(rows) == [("hr", "spo2", "pr"), ("hr",)]
    assert [len(r.channels) for r in rows[10:16]] == [3, 3, 3, 1, 1, 1]  # kept for its 3 s hold_s


def test_a_dropout_detector_tells_that_a_stopped_plx_stays_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Missing is not silent for who wants to know: the technical `dropout` detector is for that."""
    dropout = {"id": "spo2-missing", "type": "dropout", "stream": "vitals", "channels": ["spo2"]}
    missing = {
        "condition": "spo2_missing",
        "detector": "spo2-missing",
        "kind": "technical",
        "min_duration_s": 5,
    }
    cfg = config(tmp_path, ["heart_rate", "plx"], (dropout, missing), lost_after_s=300)
    steps = seconds(40, HR72, {PLX_UUID: plx_continuous(98, 72)}) + seconds(60, HR72)
    events, _, _ = asyncio.run(run(cfg, steps, monkeypatch))
    assert started(events) == {(AlarmKind.TECHNICAL, "spo2_missing")}


@pytest.mark.parametrize("raw", [0x07FF, 0x0800, 0x0801], ids=["NaN", "NRes", "reserved"])
def test_a_plx_no_value_still_raises_signal_poor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raw: int
) -> None:
    blind = {PLX_UUID: plx_continuous(sfloat(raw), sfloat(raw))}
    steps = seconds(5, HR72, {PLX_UUID: plx_continuous(98, 72)}) + seconds(30, HR72, blind)
    events, rows, _ = asyncio.run(run(config(tmp_path, ["heart_rate", "plx"]), steps, monkeypatch))
    assert started(events) == {(AlarmKind.TECHNICAL, "signal_poor")}
    assert rows[-1].channels == ("hr", "spo2", "pr")  # a value the device sent: in the row, as NaN


def test_plx_measurement_unavailable_still_raises_signal_poor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from firmware_bridge.gatt.pulse_oximeter import PlxMeasurementStatus

    unavailable = plx_continuous(98, 72, measurement=int(PlxMeasurementStatus.MEASUREMENT_UNAVAILABLE))
    steps = seconds(5, HR72, {PLX_UUID: plx_continuous(98, 72)}) + seconds(30, HR72, {PLX_UUID: unavailable})
    events, _, _ = asyncio.run(run(config(tmp_path, ["heart_rate", "plx"]), steps, monkeypatch))
    assert started(events) == {(AlarmKind.TECHNICAL, "signal_poor")}


def test_a_thermometer_no_value_still_raises_signal_poor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = seconds(5, HR72, {TEMP_UUID: temperature(36.8)}) + seconds(
        30, HR72, {TEMP_UUID: temperature(None)}
    )
    events, _, _ = asyncio.run(run(config(tmp_path, ["heart_rate", "thermometer"]), steps, monkeypatch))
    assert started(events) == {(AlarmKind.TECHNICAL, "signal_poor")}


def test_a_channel_that_never_arrives_is_still_told_and_shown_by_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "agent.pipeline.wiring")
    steps = seconds(30, HR72)  # a thermometer configured, never heard of
    _, _, pipeline = asyncio.run(run(config(tmp_path, ["heart_rate", "thermometer"]), steps, monkeypatch))
    assert pipeline.missing_channels() == {"fever": ["temp"]}
    assert [r.levelno for r in wiring_lines(caplog)] == [logging.WARNING]
    shown = render("live", {"heartbeat": {"gateway": "gw"}, "missing_channels": pipeline.missing_channels()})
    assert "detector fever: no reading of its stream has had temp so far: check its `channels`" in shown
