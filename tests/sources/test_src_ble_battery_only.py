"""A BLE device from which only the battery level comes: device_lost says so, not "no data from the device"
(review "ble", left over: a strap whose measurement profiles were silent while it answered the battery read
and notified its level was reported as sending nothing at all)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from fake_ble import ADDRESS, BATTERY_UUID, FakeFinder, FakeRadio

from agent.config.schema import BleConfig, DeviceConfig
from agent.sources.backoff import BackoffPolicy
from agent.sources.ble import BleSource, retry_connector
from agent.sources.counters import SourceStats

sys.path.insert(0, str(Path(__file__).parents[1] / "ops"))
from daemon_session import CONFIG, session

DEVICE = "bed-6-strap"
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


def device_lost_text(tmp_path: Path, battery_heard: float | None) -> str:
    """The device_lost START's text after 31 s without readings, the battery heard at `battery_heard`
    seconds into the silence (None: never)."""
    run = session(tmp_path, BLE)
    began = time.monotonic()
    heard = None if battery_heard is None else began + battery_heard
    run.health.copy_source_stats(DEVICE, SourceStats(connected=True, battery_heard=heard))
    run.check_gateway(1_700_000_031.0, began + 31.0)
    (item,) = run.outbox.take(10)
    event = json.loads(item.payload)
    assert (event["condition"], event["phase"]) == ("device_lost", "start")
    return str(event["explanation"]["text"])


def test_device_lost_of_a_device_sending_only_its_battery_says_so(tmp_path: Path) -> None:
    text = device_lost_text(tmp_path / "battery", 20.0)
    assert text == (
        "only the battery level came from the device for 31 s (limit 30 s); no measurement profile is sending"
    )
    # Battery last heard before the silence began, or never: nothing came, as ever.
    assert device_lost_text(tmp_path / "before", -5.0) == "no data from the device for 31 s (limit 30 s)"
    assert device_lost_text(tmp_path / "never", None) == "no data from the device for 31 s (limit 30 s)"


def test_the_ble_source_reports_when_the_battery_level_last_came() -> None:
    """Byte-exact Battery Level notifications (0x2A19: one u8 percent) through the live source: read at
    connect, then notified; no reading comes of them, and the counters say when the level last came."""
    radio = FakeRadio(battery=64)

    async def main() -> None:
        device = DeviceConfig(
            id=DEVICE,
            kind="wearable",
            transport="ble",
            ble=BleConfig(address=ADDRESS, profiles=("heart_rate", "battery")),
        )
        source = BleSource(
            device,
            finder=FakeFinder(radio),
            connector=retry_connector(radio.client_class()),
            backoff=BackoffPolicy(initial_s=0.02, max_s=0.2),
        )
        async with source:
            await radio.wait_subscribed(1, BATTERY_UUID)
            read_at = source.stats.battery_heard
            assert read_at is not None and source.battery_percent == 64  # the read at connect
            await asyncio.sleep(0.05)
            radio.notify(BATTERY_UUID, bytes([63]))
            stats = source.stats
            assert stats.battery_heard is not None and stats.battery_heard > read_at
            assert source.battery_percent == 63 and stats.readings == 0

    asyncio.run(main())
