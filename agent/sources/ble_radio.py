"""The radio side of the BLE source: finding the device, connecting to it, and what a failure means.

Strategy: the source (`agent.sources.ble`) depends only on two small interfaces, a `DeviceFinder` and a
`Connector` returning a `GattClient`, passed to its constructor; tests pass a fake radio whose client
raises bleak's real exception types, with no patching. The defaults are bleak's: `BleakFinder` scans
with `BleakScanner` until an advertisement matches every given criterion (`matches`), and
`retry_connector` connects through bleak-retry-connector's `establish_connection`, which already
retries the transient BlueZ/ESPHome failures (connection aborted by local, out of connection slots)
with the waits they need. What it finally raises is named here: `classify` gives its `stats.errors`
key, `_backoff_hint` its own backoff (`calculate_backoff_time`, a lower bound for the source's), and
`describe_scan_failure` says in words what to check on the gateway when a scan fails.
`BleakScanner` and bleak-retry-connector are imported when first used.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakDeviceNotFoundError, BleakError

from agent.config.schema import BleConfig


class GattClient(Protocol):
    """The part of `bleak.BleakClient` the source uses."""

    async def start_notify(self, char_specifier: str, callback: Callable[[Any, bytearray], None]) -> None: ...
    async def read_gatt_char(self, char_specifier: str) -> bytearray: ...
    async def write_gatt_char(self, char_specifier: str, data: bytes, response: bool = ...) -> None: ...
    async def disconnect(self) -> Any: ...


class DeviceFinder(Protocol):
    async def find(self, config: BleConfig, timeout_s: float) -> BLEDevice | None: ...


Connector = Callable[[BLEDevice, Callable[[], None]], Awaitable[GattClient]]


def matches(config: BleConfig, device: BLEDevice, adv: AdvertisementData) -> bool:
    """True when the advertisement fits every criterion given in `config`."""
    if config.address and device.address.lower() != config.address.lower():
        return False
    if config.name and config.name not in (adv.local_name, device.name):
        return False
    if config.service_uuid:
        wanted = _full_uuid(config.service_uuid)
        return wanted in {_full_uuid(u) for u in adv.service_uuids}
    return True


def _full_uuid(uuid: str) -> str:
    uuid = uuid.lower().removeprefix("0x")
    return f"0000{uuid}-0000-1000-8000-00805f9b34fb" if len(uuid) == 4 else uuid


class BleakFinder:
    """Scans with `bleak.BleakScanner` until a matching advertisement or the timeout."""

    async def find(self, config: BleConfig, timeout_s: float) -> BLEDevice | None:
        from bleak import BleakScanner

        found: BLEDevice | None = await BleakScanner.find_device_by_filter(
            lambda d, ad: matches(config, d, ad), timeout=timeout_s
        )
        return found


def retry_connector(client_class: type[Any] | None = None, max_attempts: int = 3) -> Connector:
    """Connect with bleak-retry-connector's `establish_connection` (default client: its cached one)."""

    async def connect(device: BLEDevice, on_disconnect: Callable[[], None]) -> GattClient:
        from bleak_retry_connector import BleakClientWithServiceCache, establish_connection

        client: GattClient = await establish_connection(
            client_class or BleakClientWithServiceCache,
            device,
            device.name or device.address,
            disconnected_callback=lambda _client: on_disconnect(),
            max_attempts=max_attempts,
        )
        return client

    return connect


class MissingProfilesError(Exception):
    """The connected device has none of the configured profiles' characteristics."""


def classify(exc: BaseException) -> str:
    """The `stats.errors` key of a failed connection attempt."""
    from bleak_retry_connector import (
        OUT_OF_SLOTS_ERRORS,
        BleakAbortedError,
        BleakNotFoundError,
        BleakOutOfConnectionSlotsError,
    )

    if isinstance(exc, MissingProfilesError):
        return "no_profile"
    text = str(exc)
    if isinstance(exc, BleakOutOfConnectionSlotsError) or any(e in text for e in OUT_OF_SLOTS_ERRORS):
        return "out_of_slots"
    if isinstance(exc, BleakAbortedError) or "abort" in text:
        return "aborted"
    if isinstance(exc, BleakNotFoundError | BleakDeviceNotFoundError):
        return "not_found"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, BleakError):
        return "connect_failed"
    return "driver_error"


def describe_scan_failure(exc: BaseException) -> str:
    """Why bleak could not scan, in words that say what to check on the gateway."""
    text = str(exc)
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError):  # the system D-Bus socket
        return (
            "the system D-Bus is not reachable: is dbus running, and bluetoothd? (systemctl status bluetooth)"
        )
    if "No Bluetooth adapters" in text:
        return f"{text.rstrip('.')}: is the adapter plugged in and enabled? (rfkill list, bluetoothctl list)"
    if "org.bluez.Error.NotReady" in text:
        return "the Bluetooth adapter is off: bluetoothctl power on (and rfkill unblock bluetooth)"
    if "ServiceUnknown" in text or ("org.bluez" in text and "not provided" in text):
        return "bluetoothd is not running: systemctl start bluetooth"
    if "AccessDenied" in text or "NotPermitted" in text or isinstance(exc, PermissionError):
        return "BlueZ refuses the agent's user: give it access (group 'bluetooth' or a D-Bus policy)"
    return f"{type(exc).__name__}: {text}"


def _backoff_hint(exc: BaseException) -> float:
    from bleak_retry_connector import calculate_backoff_time

    return calculate_backoff_time(exc) if isinstance(exc, Exception) else 0.0
