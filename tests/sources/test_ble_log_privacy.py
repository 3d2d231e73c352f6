"""BLE identifiers never reach a log line (outside review, finding 1). bleak and bleak-retry-connector
write the device's address and advertised name into their errors, in whatever spelling the stack
uses (BlueZ's D-Bus object name ``dev_C4_7C_...``), and a strap found by its service UUID or by its
address alone has an address or a name (``Polar H10 8C4E2F11``: its serial) the config never names.
The real source, the real bleak-retry-connector and the agent's real log handler; the radio is the
fake one of the BLE source tests (there is no radio here)."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator

import pytest
from bleak.backends.device import BLEDevice
from bleak.exc import BleakError
from fake_ble import ADDRESS, FakeFinder, FakeRadio
from test_src_ble import FAST

from agent.config.schema import BleConfig, DeviceConfig
from agent.logs import configure_logging, redact_identifiers
from agent.privacy import Pseudonymizer, stand_ins
from agent.sources.ble import BleSource, retry_connector

NAME = "Polar H10 8C4E2F11"  # advertised: the strap's serial
SPELLINGS = (ADDRESS, ADDRESS.lower(), ADDRESS.replace(":", "-"), "dev_" + ADDRESS.replace(":", "_"))
PSEUDONYM = Pseudonymizer(b"k" * 32)

CONFIGURED_BY = {
    "address and name": BleConfig(address=ADDRESS, name=NAME),
    "address only": BleConfig(address=ADDRESS),
    "service uuid only": BleConfig(service_uuid="180d"),
}


class NamedFinder(FakeFinder):
    async def find(self, config: BleConfig, timeout_s: float) -> BLEDevice | None:
        await super().find(config, timeout_s)
        return BLEDevice(ADDRESS, NAME, {"path": "/org/bluez/hci0/dev_" + ADDRESS.replace(":", "_")})


@pytest.fixture
def agent_log() -> Iterator[io.StringIO]:
    """The agent's own log handler (rate limit, redaction), writing into a string."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("DEBUG")
    stream = io.StringIO()
    root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    yield stream
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


@pytest.mark.parametrize("configured_by", CONFIGURED_BY)
def test_a_strap_is_named_by_its_pseudonym_in_bleak_errors_and_the_connected_line(
    configured_by: str, agent_log: io.StringIO
) -> None:
    device = DeviceConfig(
        id="bed-3-strap", kind="wearable", transport="ble", ble=CONFIGURED_BY[configured_by]
    )
    redact_identifiers(stand_ins([device], PSEUDONYM))  # as the daemon does at start
    radio = FakeRadio()
    # what BlueZ raises for a device it dropped, in each spelling, then a name-bearing failure
    radio.failures.extend(BleakError(f"device '{spelling}' not found") for spelling in SPELLINGS)
    radio.failures.append(BleakError(f"{NAME} ({ADDRESS}) refused the connection"))
    source = BleSource(
        device,
        finder=NamedFinder(radio),
        connector=retry_connector(radio.client_class(), max_attempts=1),
        backoff=FAST,
    )

    async def main() -> None:
        async with source:
            await radio.wait_subscribed(1)

    asyncio.run(main())
    text = agent_log.getvalue()
    ref = PSEUDONYM("bed-3-strap")
    assert f"{ref}: BLE connected" in text and text.count("BLE connection failed") >= 5, text
    assert f"{ref}:ble" in text  # the address and name are shown as the device's stand-in
    for identifier in (*SPELLINGS, ADDRESS.replace(":", "_"), "8C4E2F11", "bed-3-strap"):
        assert identifier.casefold() not in text.casefold(), identifier
