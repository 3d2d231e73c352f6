"""What an operator reads when a BLE device cannot be reached: no BlueZ on the gateway, or a strap
that does not advertise. One line with the cause and what to check, not one per scan; the source
connects by itself once the radio works or the strap shows up. The fake radio is the one of the BLE
source tests (there is no radio here); the D-Bus failure is raised as bleak raised it on this machine
without a system bus: FileNotFoundError(2, 'No such file or directory')."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace

import pytest
from bleak.backends.device import BLEDevice
from fake_ble import ADDRESS, FakeFinder, FakeRadio
from test_src_ble import FAST, ble_device

from agent.config.schema import BleConfig
from agent.logs import device_name
from agent.sources.ble import BleSource, retry_connector

HRS = "0000180d-0000-1000-8000-00805f9b34fb"  # the Heart Rate service

LOGGER = "agent.sources.ble"


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


class NoBusFinder(FakeFinder):
    """Scans fail as bleak's do without a system D-Bus until `bus_up` is set."""

    def __init__(self, radio: FakeRadio) -> None:
        super().__init__(radio)
        self.bus_up = False

    async def find(self, config: BleConfig, timeout_s: float) -> BLEDevice | None:
        if not self.bus_up:
            self.scans += 1
            raise FileNotFoundError(2, "No such file or directory")
        return await super().find(config, timeout_s)


async def until_counted(source: BleSource, key: str, times: int) -> None:
    async with asyncio.timeout(20):
        while source.stats.errors.get(key, 0) < times:
            await asyncio.sleep(0.01)


def connect_after(source: BleSource, radio: FakeRadio, key: str, fix: Callable[[], None]) -> None:
    """Run `source` until ten scans failed with `key`, make the `fix`, and wait for the connection."""

    async def main() -> None:
        async with source:
            await until_counted(source, key, 10)
            fix()
            await radio.wait_subscribed(1)

    asyncio.run(main())


def test_a_gateway_without_bluez_is_told_once_and_the_strap_joins_once_it_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    radio = FakeRadio()
    finder = NoBusFinder(radio)
    source = BleSource(
        ble_device(), finder=finder, connector=retry_connector(radio.client_class()), backoff=FAST
    )
    with caplog.at_level(logging.INFO, logger=LOGGER):
        connect_after(source, radio, "scan_failed", lambda: setattr(finder, "bus_up", True))
    (warning,) = lines(caplog, logging.WARNING)
    assert "cannot scan for BLE devices: the system D-Bus is not reachable" in warning
    assert "systemctl status bluetooth" in warning and "the other devices are not affected" in warning
    (connected,) = lines(caplog, logging.INFO)
    assert "BLE connected, 2 of 2 profile(s)" in connected and "failed attempt(s) over " in connected


@pytest.mark.parametrize(
    ("ble", "keys"),
    [
        (BleConfig(address=ADDRESS), "ble.address is right"),
        (BleConfig(address=ADDRESS, name="Polar H10 6A1234BC"), "ble.address and ble.name are right"),
        (BleConfig(name="Polar H10 6A1234BC", service_uuid=HRS), "ble.name and ble.service_uuid are right"),
    ],
)
def test_a_strap_that_does_not_advertise_is_told_which_keys_to_check_without_their_values(
    caplog: pytest.LogCaptureFixture, ble: BleConfig, keys: str
) -> None:
    """Review BLE F6: the hint quoted the configured address and name, which the log's redactor then
    replaced by the device's pseudonym ("is ble.address = 'd-...:ble' right?"): nothing an operator can
    check. It names the keys, where they are, and how to tell which device the line is about."""
    radio = FakeRadio()
    radio.advertising = False
    device = replace(ble_device(), ble=replace(ble, profiles=("heart_rate", "battery")))
    source = BleSource(
        device, finder=FakeFinder(radio), connector=retry_connector(radio.client_class()), backoff=FAST
    )
    with caplog.at_level(logging.INFO, logger=LOGGER):
        connect_after(source, radio, "not_found", lambda: setattr(radio, "advertising", True))
    (warning,) = lines(caplog, logging.WARNING)
    assert "not found in a 10 s scan: is it on, in range and not held by another gateway or phone" in warning
    assert f"and {keys} in this device's [[devices]] entry of the configuration file?" in warning
    assert f"`edge-agent status --config FILE` says which device {device_name(device.id)} is" in warning
    assert ADDRESS not in warning and "6A1234BC" not in warning and "= '" not in warning
    (connected,) = lines(caplog, logging.INFO)
    assert "failed attempt(s) over " in connected
