"""A strap whose RR intervals are mostly impossible raises the technical alarm rr_invalid, and it ends when
valid intervals return (review "ble", left over: 0 or 65535 ticks were counted in `bad_rr` and dropped, and
nothing told the caregiver that the AF and other RR rules were blind while the HR looked fine).

Byte-exact Heart Rate Measurement payloads (fake_ble.hr_measurement) go through the BLE profile decoder and
the source's assembler (`ProfileReadings`) on a simulated clock, their counters through the device health
to the daemon session's once-a-second gateway check, as the monitor task does; the events are read back
from the outbox the session commits them to."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from fake_ble import ADDRESS, HR_UUID, FakeFinder, FakeRadio, hr_measurement

from agent.config.schema import BleConfig, DeviceConfig
from agent.sources.backoff import BackoffPolicy
from agent.sources.ble import BleSource, retry_connector
from agent.sources.ble_profiles import PROFILES, ProfileReadings
from agent.sources.counters import RrSeen, SourceStats

sys.path.insert(0, str(Path(__file__).parents[1] / "ops"))
from daemon_session import CONFIG, session

DEVICE = "bed-5-strap"
BLE: dict[str, Any] = {
    **CONFIG,
    "devices": [
        {
            "id": DEVICE,
            "kind": "wearable",
            "transport": "ble",
            "lost_after_s": 30,
            "ble": {"address": ADDRESS, "profiles": ["heart_rate", "battery"]},
        }
    ],
}
# An RR rule whose episode is open when the intervals go bad: rr_invalid takes its priority.
WITH_RR_RULE: dict[str, Any] = {
    **BLE,
    "detectors": [
        {"id": "rr-long", "type": "limit", "stream": "rr", "channels": ["rr"], "params": {"above": 1.5}}
    ],
    "alarms": [
        {
            "condition": "rr_long",
            "detector": "rr-long",
            "priority": "high",
            "min_duration_s": 2,
            "clear_after_s": 10,
        }
    ],
}
START = 1_700_000_000.0
GOOD = hr_measurement(72, rr_ticks=(853,))  # 0.83 s
BAD = hr_measurement(72, rr_ticks=(0, 65535))  # no value, counter overflow: both dropped


def seconds(iso: str) -> float:
    """An event's ISO time as seconds since the strap's start."""
    return datetime.fromisoformat(iso).timestamp() - START


class Strap:
    """The daemon session with one BLE strap, stepped one simulated second at a time."""

    def __init__(self, tmp_path: Path, config: dict[str, Any] = BLE) -> None:
        self.run = session(tmp_path, config)
        self.config = config
        self.assembler = ProfileReadings(DEVICE, [PROFILES["heart_rate"]])
        self.wall, self.mono = START, time.monotonic()
        self.events: list[dict[str, Any]] = []

    def restart(self, tmp_path: Path, break_s: float) -> None:
        """The agent restarts after `break_s`: a new session restores the saved alarm state (as pipeline.json
        holds it), and a new source measures afresh."""
        saved = json.loads(json.dumps(self.run.alarm_state()))
        self.run.outbox.close()
        self.run = session(tmp_path, self.config)
        self.run.load_gateway_alarms(saved)
        self.assembler = ProfileReadings(DEVICE, [PROFILES["heart_rate"]])
        self.wall += break_s
        self.mono += break_s

    def second(self, payload: bytes) -> None:
        """One notification, then the monitor's copy of the counters and its gateway check."""
        self.wall += 1.0
        self.mono += 1.0
        profile = PROFILES["heart_rate"]
        readings = self.assembler.take(profile, profile.decode(payload), self.wall, self.mono)
        row = self.assembler.row(self.wall, self.mono)
        readings += [row] if row is not None else []
        for reading in readings:
            self.run.health.saw(reading)
        self.run.publish(self.run.pipeline.ingest(readings))
        stats = SourceStats(connected=True, rr=self.assembler.rr_validity.seen(self.mono))
        self.run.health.copy_source_stats(DEVICE, stats)
        self.run.check_gateway(self.wall, self.mono)
        self.events += [json.loads(item.payload) for item in self.run.outbox.take(100)]

    def play(self, pattern: Iterator[bytes] | list[bytes]) -> None:
        for payload in pattern:
            self.second(payload)

    def rr_invalid(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["condition"] == "rr_invalid"]


def test_a_strap_sending_only_impossible_rr_raises_rr_invalid_until_valid_ones_return(tmp_path: Path) -> None:
    strap = Strap(tmp_path)
    strap.play([GOOD] * 20 + [BAD] * 60)
    (start,) = strap.rr_invalid()
    assert (start["phase"], start["priority"], start["stream"]) == ("start", "low", "rr")
    # 45 % of the last minute: 27 s of the bad ones (the 20 s of good ones before count as good)
    assert 20 + 26 <= seconds(start["detection_time"]) <= 20 + 29
    text = start["explanation"]["text"]
    assert text.startswith("RR intervals impossible (outside 0.17-10 s: 0 or 65535 ticks) in ")
    assert "the RR-based rules (AF) get no beats" in text
    strap.play([GOOD] * 15)  # valid intervals again: it ends 10 s after the last impossible ones
    _, end = strap.rr_invalid()
    assert end["phase"] == "end" and end["id"] == start["id"]
    assert 80 + 10 <= seconds(end["end_time"]) <= 80 + 12
    assert end["explanation"]["text"].startswith(
        "cleared: valid RR intervals again, none impossible for 10 s"
    )
    assert [e["condition"] for e in strap.events if e["condition"] != "rr_invalid"] == []  # no device_lost


def test_intermittent_impossible_rr_raises_it_and_rare_ones_do_not(tmp_path: Path) -> None:
    """5 s bad / 5 s good (half the minute) starts it and keeps it open; one bad notification in six (17 %)
    never starts it; nor does a notification with one impossible interval among three valid ones."""
    half = Strap(tmp_path / "half")
    half.play(([BAD] * 5 + [GOOD] * 5) * 12)
    assert [e["phase"] for e in half.rr_invalid()] == ["start"]
    rare = Strap(tmp_path / "rare")
    rare.play(([BAD] + [GOOD] * 5) * 20)
    one_of_four = Strap(tmp_path / "one_of_four")
    one_of_four.play([hr_measurement(72, rr_ticks=(0, 853, 860, 850))] * 120)
    assert rare.rr_invalid() == [] and one_of_four.rr_invalid() == []
    assert one_of_four.assembler.bad_rr == 120  # counted as ever


def test_a_strap_off_the_skin_is_sensor_off_not_rr_invalid(tmp_path: Path) -> None:
    """No contact: sensor_off tells (and blinds the same rules); its impossible RR do not count."""
    strap = Strap(tmp_path)
    strap.play([hr_measurement(72, contact=False, rr_ticks=(0, 65535))] * 90)
    assert strap.rr_invalid() == []


def test_rr_invalid_takes_the_priority_of_the_rr_episode_it_blinds(tmp_path: Path) -> None:
    """An open HIGH episode of a rule on the RR stream gets no verdict while the intervals are dropped:
    the rr_invalid START takes HIGH and names it (technical.blinding), as the quality alarms do."""
    strap = Strap(tmp_path, WITH_RR_RULE)
    strap.play([hr_measurement(40, rr_ticks=(1700,))] * 10)  # 1.66 s: rr_long starts
    assert [(e["condition"], e["phase"]) for e in strap.events] == [("rr_long", "start")]
    strap.play([hr_measurement(40, rr_ticks=(0,))] * 40)
    (start,) = strap.rr_invalid()
    assert start["priority"] == "high"
    assert start["explanation"]["text"].endswith("; open and not judged meanwhile: rr_long (high)")


def test_the_ble_source_reports_the_impossible_rr_share_in_its_counters() -> None:
    """The live source (fake radio, real establish_connection) hands the measure to the monitor."""
    radio = FakeRadio()

    async def main() -> None:
        source = BleSource(
            DeviceConfig(
                id=DEVICE,
                kind="wearable",
                transport="ble",
                ble=BleConfig(address=ADDRESS, profiles=("heart_rate",)),
            ),
            finder=FakeFinder(radio),
            connector=retry_connector(radio.client_class()),
            backoff=BackoffPolicy(initial_s=0.02, max_s=0.2),
        )
        async with source:
            await radio.wait_subscribed(1)
            assert source.stats.rr == RrSeen()
            first = time.monotonic()
            radio.notify(HR_UUID, BAD)
            await asyncio.sleep(0.3)
            radio.notify(HR_UUID, BAD)
            await asyncio.sleep(0.3)
            stats = source.stats
            assert stats.rr.first_rr >= first and stats.rr.last_bad > stats.rr.first_rr
            assert stats.rr.last_rr == stats.rr.last_bad and stats.errors["bad_rr"] == 4
            assert 0.5 <= stats.rr.bad_s <= 1.0  # bad from the first until now, in the source's clock

    asyncio.run(main())


def test_an_open_rr_invalid_is_held_while_no_rr_come_and_across_a_restart(tmp_path: Path) -> None:
    """Without RR intervals (the strap stops sending them, or a restart's fresh source has none yet) it is not
    judged: held, not ended with an untrue "valid again". After a restart the fresh measure (a partial minute)
    holds it on impossible intervals alone; it ends 10 s after valid ones return."""
    strap = Strap(tmp_path / "a")
    strap.play([BAD] * 40 + [hr_measurement(72)] * 20)  # then HR without any RR interval
    assert [e["phase"] for e in strap.rr_invalid()] == ["start"]
    strap.restart(tmp_path / "b", 5.0)
    strap.play([BAD] * 20)
    assert [e["phase"] for e in strap.rr_invalid()] == ["start"]
    strap.play([GOOD] * 12)
    start, end = strap.rr_invalid()
    assert end["phase"] == "end" and end["id"] == start["id"]
    assert 60 + 5 + 20 + 9 <= seconds(end["end_time"]) <= 60 + 5 + 20 + 12  # 10 s after the last bad one
