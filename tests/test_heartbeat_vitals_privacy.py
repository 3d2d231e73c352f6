"""`privacy.vitals_in_heartbeat = false`: no health-derived value in the heartbeat.

Found in a privacy review (M1): every heartbeat carries each `[devices.beats]` device's `beats_per_min`
(and a `spo2_desaturation` detector's `desaturation_index_per_h`), a continuous heart-rate trend
leaving the gateway outside any alarm. They stay in by default (payloads.md documents them within
heartbeat/1, and back ends read them); the switch takes them out of the heartbeat, the remote `status`
and the gateway's own `last-heartbeat.json`. The daemon runs here with a real mosquitto, twice: as
configured by default (the fields come), then with the switch off for longer than they took to come.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from heartbeat_watch import heartbeats_until

from agent.config import load_config
from agent.daemon import Agent
from agent.health import Health
from agent.localbroker import LocalBroker
from agent.readings import Reading
from agent.status import LAST_HEARTBEAT

VITALS = ("beats_per_min", "desaturation_index_per_h")
CONFIG = """
[gateway]
id = "gw-vitals"
site = "ward-2"
heartbeat_interval_s = 0.5
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:{port}"

[outbox]
path = "state/outbox.sqlite"

[[devices]]
id = "bed-1-spo2"
kind = "wearable"
transport = "simulator"
[devices.simulator]
seed = 4
speed = 60.0

[[devices]]
id = "bed-2-ecg"
kind = "wearable"
transport = "simulator"
[devices.simulator]
seed = 3
speed = 5.0
ecg = true
[devices.beats]

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
{privacy}
"""


def has_vitals(beat: dict[str, Any]) -> bool:
    spo2, ecg = beat["devices"]
    return "desaturation_index_per_h" in spo2 and "beats_per_min" in ecg


def heartbeats(tmp_path: Path, port: int, privacy: str, until_uptime_s: float | None) -> list[dict[str, Any]]:
    """The daemon's heartbeats, received on the broker, until one has both fields (`until_uptime_s`
    None) or until one is at least `until_uptime_s` old; 30 s at most."""
    config_file = tmp_path / "agent.toml"
    config_file.write_text(CONFIG.format(port=port, privacy=privacy))
    agent = Agent(load_config(config_file))

    def done(seen: list[dict[str, Any]]) -> bool:
        if not seen:
            return False
        if until_uptime_s is None:
            return has_vitals(seen[-1])
        return bool(seen[-1]["uptime_s"] >= until_uptime_s)

    seen = heartbeats_until(agent, port, "edge/ward-2/gw-vitals/heartbeat", done, 30.0)
    assert done(seen), seen
    return seen


def test_with_vitals_in_heartbeat_off_no_heartbeat_carries_beats_or_the_desaturation_index(
    mosquitto: LocalBroker, tmp_path: Path
) -> None:
    (tmp_path / "on").mkdir()
    on = heartbeats(tmp_path / "on", mosquitto.port, "", None)  # the default: they come
    came_at = on[-1]["uptime_s"]

    (tmp_path / "off").mkdir()
    privacy = "[privacy]\nvitals_in_heartbeat = false\n"
    off = heartbeats(tmp_path / "off", mosquitto.port, privacy, came_at + 2.0)
    assert len(off) >= 4, off
    carried = [key for beat in off for device in beat["devices"] for key in VITALS if key in device]
    assert not carried, carried
    assert all(d["rate_hz"] >= 0 and "connected" in d for beat in off for d in beat["devices"])
    kept = json.loads((tmp_path / "off" / "state" / LAST_HEARTBEAT).read_text())
    assert not [key for device in kept["devices"] for key in VITALS if key in device], kept


def test_with_vitals_off_the_rate_does_not_count_one_reading_per_beat() -> None:
    """A strap's or an ECG's RR stream brings one reading per beat: counted in `rate_hz`, it is the
    heart rate plus a constant."""
    t = 1_800_000_000.0
    counted = {}
    for vitals in (True, False):
        health = Health(vitals=vitals)
        health.add_device("strap", "d-strap", 30.0)
        for i in range(10):
            health.saw(Reading.single("strap/vitals", {"hr": 90.0}, t + i, 1.0))
            for beat in range(3):
                health.saw(Reading.single("strap/rr", {"rr": 0.667}, t + i + beat / 3, 0.0))
        counted[vitals] = health.devices["strap"].readings_since_beat  # rate_hz: this over the interval
        assert health.devices["strap"].last_seen_wall is not None  # seen either way
    assert counted == {True: 40, False: 10}  # 10 vitals readings, not 10 + 30 RR
