"""Which device streams a detector is blinded on (`agent.pipeline.blind`, the channel_missing alarm)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.alarms import StreamRef
from agent.config import parse_config
from agent.events import Priority
from agent.logs import redact_identifiers
from agent.pipeline import Pipeline
from agent.pipeline.blind import GRACE_S
from agent.readings import Reading

BASE = {
    "gateway": {"id": "gw", "site": "s"},
    "mqtt": {"url": "mqtt://127.0.0.1:1883"},
    "outbox": {"path": "outbox.sqlite"},
}
FRAMES = {"id": "vib-1", "kind": "equipment", "transport": "serial", "serial": {"port": "/dev/ttyV"}}
CSV = {
    "id": "temp-1",
    "kind": "equipment",
    "transport": "serial",
    "serial": {"port": "/dev/ttyT", "protocol": "csv", "channels": ["bearing_temp", "acc_w"]},
}


def pipeline(
    tmp_path: Path, devices: list[dict[str, Any]], channels: list[str], priority: str, stream: str = "acc"
) -> Pipeline:
    table = BASE | {
        "devices": devices,
        "detectors": [
            {
                "id": "vib",
                "type": "vibration",
                "stream": stream,
                "channels": channels,
                "rate_hz": 100.0,
                "params": {"machine_class": "II", "unit": "g"},
            }
        ],
        "alarms": [{"condition": "vibration_zone_c", "detector": "vib", "priority": priority}],
    }
    return Pipeline(parse_config(table, base_dir=tmp_path), lambda d: f"p-{d}")


def acc(device: str, channels: tuple[str, ...], t: float, stream: str = "acc") -> Reading:
    values = np.zeros((10, len(channels)))
    return Reading(f"{device}/{stream}", channels, values, 1e6 + t, t, period_s=0.01)


XYZ = ("acc_x", "acc_y", "acc_z")


def counted(monkeypatch: pytest.MonkeyPatch, method: str) -> list[int]:
    """[calls of BlindDetectors.<method>], counted from now on (it still runs)."""
    from agent.pipeline.blind import BlindDetectors

    calls = [0]
    original = getattr(BlindDetectors, method)

    def counting(self: BlindDetectors, *args: Any) -> None:
        calls[0] += 1
        original(self, *args)

    monkeypatch.setattr(BlindDetectors, method, counting)
    return calls


def test_a_channel_the_run_time_device_does_not_send_blinds_its_stream(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    redact_identifiers({"vib-1": "d-vibpseudo"})  # as the daemon does (conftest undoes it)
    p = pipeline(tmp_path, [FRAMES], ["acc_x", "acc_y", "acc_w"], "high")
    caplog.set_level(logging.WARNING, logger="agent.pipeline")
    for k in range(20):
        p.ingest([acc("vib-1", XYZ, 100.0 + k * 0.1)])
    ref = StreamRef("p-vib-1", "acc")
    [blind] = p.blind.of(ref)
    assert (blind.detector, blind.channel, blind.sends) == ("vib", "acc_w", XYZ)
    assert 'did you mean "acc_' in blind.text() and "detectors.vib.channels" in blind.text()
    assert p.blind.priority(ref) is Priority.HIGH
    refs, values, limits = p.blind.check(100.0 + GRACE_S + 1)
    assert refs == [ref] and values == [pytest.approx(GRACE_S + 1)] and limits == [GRACE_S]
    [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert caplog.records[0].levelno == logging.ERROR
    assert "device d-vibpseudo" in line and "vib-1" not in line and "fix detectors.vib.channels" in line
    assert p.blind.listed() == {"p-vib-1/acc": [blind.text()]}


def test_the_right_channels_blind_nothing_and_a_low_rule_keeps_medium(tmp_path: Path) -> None:
    p = pipeline(tmp_path, [FRAMES], list(XYZ), "low")
    p.ingest([acc("vib-1", XYZ, 100.0)])
    assert p.blind.of(StreamRef("p-vib-1", "acc")) == []
    assert p.blind.check(200.0)[1] == [0.0]
    typo = pipeline(tmp_path, [FRAMES], ["acc_x", "acc_w"], "low")
    typo.ingest([acc("vib-1", XYZ, 100.0)])
    assert typo.blind.priority(StreamRef("p-vib-1", "acc")) is Priority.MEDIUM


def test_a_stream_name_two_kinds_of_device_share_is_no_blind_spot(tmp_path: Path) -> None:
    """As for the late-channel warning: a channel that arrives from another device of the stream name
    ends it, and one a device known before start produces there (a CSV device's map) never starts it."""
    p = pipeline(tmp_path, [FRAMES, FRAMES | {"id": "vib-2"}], ["acc_x", "acc_w"], "high")
    p.ingest([acc("vib-1", XYZ, 100.0)])
    assert p.blind.check(120.0)[1] == [pytest.approx(20.0)]
    p.ingest([acc("vib-2", ("acc_x", "acc_w"), 121.0)])
    assert p.blind.check(122.0)[1] == [0.0, 0.0]
    mixed = pipeline(tmp_path, [FRAMES, CSV], ["acc_x", "acc_w"], "high", stream="machine")
    mixed.ingest([acc("vib-1", XYZ, 100.0, stream="machine")])
    assert mixed.blind.check(200.0)[1] == [0.0]


def test_check_config_still_refuses_what_it_can_know(tmp_path: Path) -> None:
    from agent.pipeline.wiring import check_wiring

    table = BASE | {
        "devices": [CSV],
        "detectors": [
            {
                "id": "t",
                "type": "limit",
                "stream": "machine",
                "channels": ["bearing_tmp"],
                "params": {"above": 1},
            }
        ],
    }
    [problem] = check_wiring(parse_config(table, base_dir=tmp_path))
    assert problem.path == "detectors.t.channels" and 'did you mean "bearing_temp"' in str(problem)


def test_many_devices_and_alternating_layouts_cost_one_judgement_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first version judged every device stream of the name at each new layout: 1000 wearables made
    their first batch a million judgements (Pipeline.ingest 4x slower). Now a stream is judged at its
    first sight and when its own channels grow, all of them only when a missing channel arrives."""
    calls = counted(monkeypatch, "_judge")
    p = pipeline(tmp_path, [FRAMES], ["acc_x", "acc_w"], "high")
    for t in range(3):  # layouts that alternate, as BLE rows with and without a slower profile's channel
        p.ingest([acc(f"vib-{k}", XYZ if (k + t) % 2 else ("acc_x",), 100.0 + t) for k in range(200)])
    assert calls[0] <= 2 * 200
    assert len(p.blind.listed()) == 200
    p.ingest([acc("vib-0", ("acc_x", "acc_w"), 104.0)])  # it arrives: every stream judged anew, once
    assert p.blind.listed() == {}
    assert calls[0] <= 3 * 200 + 1


def test_the_beats_stage_s_late_channels_on_a_run_time_device_blind_nothing(tmp_path: Path) -> None:
    """A serial ECG patch (HELLO) with `[devices.beats]`: the gateway's own ECG -> RR stage gives
    qrs_shape and qrs_core only once its templates are made, so the first beats carry rr, hr and
    qrs_width alone. Those channels are the stage's, known before start: no channel_missing (it started
    10 s into every such stream before, while the templates were being made)."""
    patch = {
        "id": "patch",
        "kind": "wearable",
        "transport": "serial",
        "serial": {"port": "/dev/ttyP"},
        "beats": {"rr_stream": "ecg_rr"},
    }
    table = BASE | {
        "devices": [patch],
        "detectors": [
            {
                "id": "vt",
                "type": "ventricular_run",
                "stream": "ecg_rr",
                "channels": ["rr", "qrs_shape", "qrs_core"],
                "rate_hz": 1.0,
            }
        ],
        "alarms": [{"condition": "ventricular_tachycardia", "detector": "vt", "priority": "high"}],
    }
    p = Pipeline(parse_config(table, base_dir=tmp_path), lambda d: f"p-{d}")
    for k in range(30):
        beat = Reading("patch/ecg_rr", ("hr", "qrs_width", "rr"), np.array([[70.0, 0.07, 0.86]]), 1e6 + k, k)
        p.ingest([beat])
    assert p.blind.of(StreamRef("p-patch", "ecg_rr")) == []
    assert p.blind.check(40.0)[1] == [0.0]


def test_a_long_batch_is_judged_from_the_first_reading_that_shows_each_layout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The tracker takes a stream name's readings a batch at a time, and the alarm's timing stays that of
    its first reading of each layout: a batch whose first reading lacks the channel and a later one (of
    another device) has it is told at ERROR and ends blind-free; one that never brings it is blind from
    its first reading, not from the batch's last."""
    caplog.set_level(logging.INFO, logger="agent.pipeline")
    p = pipeline(tmp_path, [FRAMES, FRAMES | {"id": "vib-2"}], ["acc_x", "acc_w"], "high")
    batch = [acc("vib-1", XYZ, 100.0 + k * 0.1) for k in range(100)]
    p.ingest([*batch[:50], acc("vib-2", ("acc_x", "acc_w"), 105.0), *batch[50:]])
    assert [r.levelno for r in caplog.records if r.name == "agent.pipeline.blind"] == [logging.ERROR]
    arrived = [r.getMessage() for r in caplog.records if r.name == "agent.pipeline.wiring"]
    assert arrived == ['channel "acc_w" of stream "acc" arrived: detector vib sees it from now on']
    assert p.blind.listed() == {} and p.missing_channels() == {}
    assert p.blind.check(120.0)[1] == [0.0, 0.0]
    late = pipeline(tmp_path, [FRAMES], ["acc_x", "acc_w"], "high")
    late.ingest([acc("vib-1", XYZ, 100.0 + k * 0.1) for k in range(100)])
    assert late.blind.check(110.0)[1] == [pytest.approx(10.0)]
    assert late.missing_channels() == {"vib": ["acc_w"]}


def test_the_tracker_is_fed_once_per_batch_of_a_stream_name_not_per_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It needs only which (device stream, channels) arrived and when: a call per reading (a dictionary
    look-up and a comparison each, in Python) was per-reading work on the hot path. Readings of streams no
    detector watches are not its business at all."""
    calls = counted(monkeypatch, "saw")
    p = pipeline(tmp_path, [FRAMES], list(XYZ), "high")
    unwatched = [acc(f"vib-{k}", ("temp",), 100.0, stream="temps") for k in range(50)]
    p.ingest([acc(f"vib-{k}", XYZ, 100.0 + t) for t in range(3) for k in range(200)] + unwatched)
    assert calls == [1]
    assert p.blind.check(200.0)[1] == [0.0] * 200
    # Every channel has arrived: a new device stream still gets its row, and one lacking a channel that
    # another device brings is no blind spot (as before).
    p.ingest([acc("vib-7", XYZ, 104.0), acc("vib-new", ("acc_x",), 104.0), acc("vib-new", XYZ, 104.1)])
    assert calls == [2]
    assert p.blind.check(200.0)[1] == [0.0] * 201 and p.blind.listed() == {}
