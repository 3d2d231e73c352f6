"""Through the real daemon to a real mosquitto (`ble_daemon_driver.py`: only the BLE finder and the
connector's client are the fake radio's, the payloads byte-exact): a strap whose RR intervals are all
impossible raises rr_invalid and ends it when valid ones return; a strap that sends only its battery level
gets a device_lost that says so (review "ble", left over)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from test_src_ble_daemon_profiles import CONFIG, Alarms, alarms, run_daemon, stop

from agent.localbroker import LocalBroker

__all__ = ["alarms"]  # the fixture, shared with the profile tests

RR_CONFIG = (
    CONFIG.replace('profiles = ["heart_rate", "plx"]', 'profiles = ["heart_rate"]')
    .replace('id = "spo2-low"', 'id = "rr-long"')
    .replace('channels = ["spo2"]', 'channels = ["rr"]')
    .replace('stream = "vitals"', 'stream = "rr"')
    .replace("params = { below = 90 }", "params = { above = 1.5 }")
    .replace('condition = "spo2_low"\ndetector = "spo2-low"', 'condition = "rr_long"\ndetector = "rr-long"')
)
BATTERY_CONFIG = CONFIG.replace(
    'profiles = ["heart_rate", "plx"]', 'profiles = ["heart_rate", "plx", "battery"]'
)


def every(alarms: Alarms, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with alarms.lock:
            if predicate(list(alarms.events)):
                return True
        time.sleep(0.2)
    return False


def test_impossible_rr_intervals_raise_rr_invalid_until_valid_ones_return(
    tmp_path: Path, mosquitto: LocalBroker, alarms: Alarms
) -> None:
    proc = run_daemon(tmp_path, mosquitto.port, "rr_impossible", RR_CONFIG)
    try:
        ended = every(
            alarms, lambda es: any(e["condition"] == "rr_invalid" and e["phase"] == "end" for e in es), 90.0
        )
    finally:
        log = stop(proc)
    assert ended, (alarms.events, log[-3000:])
    rr = [e for e in alarms.events if e["condition"] == "rr_invalid"]
    assert [e["phase"] for e in rr] == ["start", "end"] and rr[0]["stream"] == "rr"
    assert (
        rr[0]["priority"] == "low" and "the RR-based rules (AF) get no beats" in rr[0]["explanation"]["text"]
    )
    assert {e["condition"] for e in alarms.events} == {"rr_invalid"}  # no device_lost, no sensor_off


def test_a_strap_sending_only_its_battery_gets_a_device_lost_that_says_so(
    tmp_path: Path, mosquitto: LocalBroker, alarms: Alarms
) -> None:
    proc = run_daemon(tmp_path, mosquitto.port, "battery_only", BATTERY_CONFIG)
    try:
        lost = every(alarms, lambda es: any(e["condition"] == "device_lost" for e in es), 45.0)
    finally:
        log = stop(proc)
    assert lost, (alarms.events, log[-3000:])
    start = next(e for e in alarms.events if e["condition"] == "device_lost")
    text = start["explanation"]["text"]
    assert text.startswith("only the battery level came from the device for ") and text.endswith(
        "; no measurement profile is sending"
    )
