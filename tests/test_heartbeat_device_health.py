"""Per-device health in the heartbeat: source counters folded across source reopenings, the optional
fields of heartbeat/1, and the oxygen desaturation index of a configured spo2_desaturation detector,
end to end through the daemon and a real mosquitto broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from heartbeat_watch import heartbeats_until

from agent.config import load_config
from agent.daemon import Agent
from agent.events import DeviceHealth, Heartbeat
from agent.health import Health
from agent.localbroker import LocalBroker
from agent.readings import Quality, Reading
from agent.sources.counters import SourceStats

DEADLINE_S = 20.0


def reading(device: str, quality: Quality = Quality.OK) -> Reading:
    return Reading.single(f"{device}/vitals", {"hr": 72.0}, 1_700_000_000.0, 10.0, quality)


def test_source_counters_are_copied_and_survive_a_reopened_source() -> None:
    health = Health()
    health.add_device("bed-1", "d-one", 30.0)
    health.source_opened("bed-1")
    health.copy_source_stats("bed-1", SourceStats(connected=True, bad_frames=5, reconnects=2))
    health.saw(reading("bed-1"))
    (first,) = health.device_report()
    assert (first.bad_frames, first.reconnects, first.connected) == (5, 2, True)

    # The link drops inside the source: a reading still queued from before must not mark it connected.
    health.copy_source_stats("bed-1", SourceStats(connected=False, bad_frames=7, reconnects=2))
    health.saw(reading("bed-1"))
    (lost,) = health.device_report()
    assert (lost.bad_frames, lost.connected) == (7, False)

    # The source fails and the daemon opens a new one, whose own counts start from zero.
    health.source_closed("bed-1")
    assert not health.device_report()[0].connected
    health.source_opened("bed-1")
    health.copy_source_stats("bed-1", SourceStats(connected=True, bad_frames=1, reconnects=0))
    (again,) = health.device_report()
    assert (again.bad_frames, again.reconnects, again.connected) == (8, 3, True)


def test_error_counters_by_kind_are_copied_non_zero_only_and_survive_a_reopened_source() -> None:
    health = Health()
    health.add_device("bed-1", "d-one", 30.0)
    health.source_opened("bed-1")
    assert health.device_report()[0].errors == {}
    first = {"waiting_hello": 12, "bad_crc": 0, "open_failures": 1}
    health.copy_source_stats("bed-1", SourceStats(connected=True, errors=first))
    assert health.device_report()[0].errors == {"open_failures": 1, "waiting_hello": 12}
    health.source_closed("bed-1")  # the daemon reopens a failed source, whose counts start from zero
    health.source_opened("bed-1")
    health.copy_source_stats("bed-1", SourceStats(connected=True, errors={"waiting_hello": 3, "bad_crc": 2}))
    (again,) = health.device_report()
    assert again.errors == {"bad_crc": 2, "open_failures": 1, "waiting_hello": 15}
    assert again.to_payload()["errors"] == {"bad_crc": 2, "open_failures": 1, "waiting_hello": 15}


def test_a_source_without_counters_is_connected_while_open() -> None:
    health = Health()
    health.add_device("sim", "d-sim", 30.0)
    health.source_opened("sim")
    health.copy_source_stats("sim", None)  # the simulator keeps no counters
    assert health.device_report()[0].connected
    health.source_closed("sim")
    assert not health.device_report()[0].connected
    health.saw(reading("sim"))  # without a source's own word, a reading means the link is up
    assert health.device_report()[0].connected


def test_optional_device_fields_are_additive_within_heartbeat_v1() -> None:
    plain = DeviceHealth("d-a", None, 1.0, 0, 0, True)
    with_odi = DeviceHealth("d-b", None, 1.0, 0, 0, True, reconnects=2, desaturation_index_per_h=4.123456)
    beat = Heartbeat("gw", 1_700_000_000.0, 1.0, 1, (plain, with_odi), 0, None, 0).to_payload()
    assert beat["schema"] == "edge-agent/heartbeat/1"
    a, b = beat["devices"]
    assert "desaturation_index_per_h" not in a and a["reconnects"] == 0 and a["errors"] == {}
    assert b["desaturation_index_per_h"] == 4.1235 and b["reconnects"] == 2


CONFIG = """
[gateway]
id = "gw-odi"
site = "ward-2"
heartbeat_interval_s = 0.5
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:{port}"
topic_prefix = "edge"

[outbox]
path = "state/outbox.sqlite"

[[devices]]
id = "bed-1-desaturating"
kind = "wearable"
transport = "simulator"
[devices.simulator]
seed = 4
speed = 60.0
episodes = [{{ condition = "spo2_desaturation", start_s = 90, duration_s = 60 }}]

[[devices]]
id = "bed-2-quiet"
kind = "wearable"
transport = "simulator"
[devices.simulator]
seed = 5
speed = 60.0

[[devices]]
id = "pump-3"
kind = "equipment"
transport = "simulator"
[devices.simulator]
seed = 3
speed = 60.0

[[detectors]]
id = "desat"
type = "spo2_desaturation"
stream = "vitals"
channels = ["spo2"]
params = {{ baseline_s = 60 }}

[[alarms]]
condition = "spo2_desaturation"
detector = "desat"
priority = "medium"
"""


def test_heartbeat_carries_the_desaturation_index_of_each_scored_device(
    mosquitto: LocalBroker, tmp_path: Path
) -> None:
    config_file = tmp_path / "agent.toml"
    config_file.write_text(CONFIG.format(port=mosquitto.port))
    agent = Agent(load_config(config_file))

    def desaturated(devices: list[dict[str, Any]]) -> bool:
        return (devices[0].get("desaturation_index_per_h") or 0) > 0

    seen = heartbeats_until(
        agent,
        mosquitto.port,
        "edge/ward-2/gw-odi/heartbeat",
        lambda s: bool(s) and desaturated(s[-1]["devices"]),
        DEADLINE_S,
    )
    assert seen, "no heartbeat received"
    desaturating, quiet, pump = seen[-1]["devices"]
    assert desaturated([desaturating]), [b["devices"] for b in seen]
    assert quiet["desaturation_index_per_h"] == 0.0  # scored, no event: an index of zero
    assert "desaturation_index_per_h" not in pump  # no SpO2 stream: nothing to index
    # Earlier heartbeats, before the detector had a full window, carried no index at all.
    assert "desaturation_index_per_h" not in seen[0]["devices"][0]


def test_beats_found_in_an_ecg_are_reported_per_minute() -> None:
    health = Health()
    health.add_device("patch", "d-patch", 30.0, beats_stream="patch/rr")
    health.add_device("strap", "d-strap", 30.0)
    t = 1_800_000_000.0
    for i in range(10):
        health.saw(Reading.single("patch/rr", {"rr": 0.8}, t + i, 0.0))
    health.saw(Reading("patch/rr", ("rr", "hr", "qrs_shape"), np.full((1, 3), np.nan), t, 0.0))  # no value
    health.saw(Reading("patch/rr", ("hr",), np.array([[18.0]]), t, 0.0))  # a pause
    health.saw(Reading.single("strap/rr", {"rr": 0.8}, t, 0.0))
    patch, strap = health.device_report()
    assert patch.beats_per_min is not None and patch.beats_per_min > 0
    assert patch.to_payload()["beats_per_min"] == pytest.approx(patch.beats_per_min, rel=1e-3)
    assert strap.beats_per_min is None and "beats_per_min" not in strap.to_payload()
    again, _ = health.device_report()
    assert again.beats_per_min == 0.0  # the next interval found none: the operator sees it
