"""A fake BLE radio for the BLE source tests: the only fake in this area (there is no radio in CI).

`FakeRadio.client_class()` is handed to the real bleak-retry-connector `establish_connection`, so
its retry logic runs for real against connect() failures raised with bleak's own exception types.
Heart Rate Measurement and PLX Continuous Measurement payloads are built here byte by byte from the
Heart Rate and Pulse Oximeter Service specs. Characteristics in `FakeRadio.lacks` are absent from the
peripheral: `start_notify` raises bleak's `BleakCharacteristicNotFoundError`, as `BleakClient` does.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from bleak.backends.device import BLEDevice
from bleak.exc import BleakCharacteristicNotFoundError

from agent.config.schema import BleConfig

HR_UUID = "00002a37-0000-1000-8000-00805f9b34fb"
PLX_UUID = "00002a5f-0000-1000-8000-00805f9b34fb"
BATTERY_UUID = "00002a19-0000-1000-8000-00805f9b34fb"
PMD_CP_UUID = "fb005c81-02e7-f387-1cad-8acd2d8df0c8"
PMD_DATA_UUID = "fb005c82-02e7-f387-1cad-8acd2d8df0c8"
ADDRESS = "C4:7C:8D:6A:12:34"


def sfloat(mantissa: int, exponent: int = 0) -> bytes:
    """IEEE-11073 16-bit SFLOAT: 4-bit exponent over a 12-bit mantissa, both two's complement. The
    special values are mantissas with exponent 0: NaN 0x07FF, NRes 0x0800, +INF 0x07FE, -INF 0x0802,
    reserved 0x0801."""
    return struct.pack("<H", ((exponent & 0xF) << 12) | (mantissa & 0x0FFF))


def plx_continuous(
    spo2: bytes | int, pr: bytes | int, *, measurement: int | None = None, sensor: int | None = None
) -> bytes:
    """PLX Continuous Measurement (0x2A5F): flags (bit 2 measurement status, bit 3 device and sensor
    status present), SpO2 and PR SFLOATs, [measurement status u16], [device and sensor status u24]."""
    flags = (0x04 if measurement is not None else 0) | (0x08 if sensor is not None else 0)
    out = bytes([flags])
    out += spo2 if isinstance(spo2, bytes) else sfloat(spo2)
    out += pr if isinstance(pr, bytes) else sfloat(pr)
    if measurement is not None:
        out += struct.pack("<H", measurement)
    if sensor is not None:
        out += sensor.to_bytes(3, "little")
    return out


def hr_measurement(
    bpm: int, *, contact: bool | None = True, rr_ticks: tuple[int, ...] = (), energy_kj: int | None = None
) -> bytes:
    """Heart Rate Measurement (0x2A37): flags, u8/u16 bpm, [energy u16], [RR u16 in 1/1024 s]."""
    flags = 0x01 if bpm > 255 else 0x00
    if contact is not None:
        flags |= 0x04 | (0x02 if contact else 0x00)
    if energy_kj is not None:
        flags |= 0x08
    if rr_ticks:
        flags |= 0x10
    out = bytes([flags]) + (struct.pack("<H", bpm) if bpm > 255 else bytes([bpm]))
    if energy_kj is not None:
        out += struct.pack("<H", energy_kj)
    return out + b"".join(struct.pack("<H", t) for t in rr_ticks)


class FakeFinder:
    """Finds the device while `radio.advertising`; counts scans."""

    def __init__(self, radio: FakeRadio) -> None:
        self.radio = radio
        self.scans = 0

    async def find(self, config: BleConfig, timeout_s: float) -> BLEDevice | None:
        self.scans += 1
        await asyncio.sleep(0.01)
        if not self.radio.advertising:
            return None
        return BLEDevice(ADDRESS, "Polar H10 1234", {})


class FakeRadio:
    """One peripheral. Queue connect() outcomes in `failures`; `hang_connects` makes connects stall."""

    def __init__(self, battery: int = 80) -> None:
        self.advertising = True
        self.failures: deque[BaseException] = deque()
        self.hang_connects = 0
        self.battery = battery
        self.connects = 0  # successful connects
        self.attempts = 0
        self.subscriptions: list[tuple[int, str]] = []  # (connect number, characteristic)
        self.writes: list[tuple[str, bytes]] = []
        self.client: Any = None
        self.subscribed = asyncio.Event()
        self.lacks: set[str] = set()  # characteristics this peripheral does not have

    def client_class(self) -> type[Any]:
        radio = self

        class FakeClient:
            def __init__(
                self, device: BLEDevice, disconnected_callback: Callable[[Any], None] | None = None, **_: Any
            ) -> None:
                self.address = device.address
                self.disconnected_callback = disconnected_callback
                self.is_connected = False
                self.callbacks: dict[str, Callable[[Any, bytearray], None]] = {}

            async def connect(self, **_: Any) -> bool:
                radio.attempts += 1
                if radio.hang_connects:
                    radio.hang_connects -= 1
                    await asyncio.Event().wait()  # a connect that never completes
                if radio.failures:
                    raise radio.failures.popleft()
                self.is_connected = True
                radio.connects += 1
                radio.client = self
                radio.subscribed.clear()
                return True

            async def start_notify(self, uuid: str, callback: Callable[[Any, bytearray], None]) -> None:
                assert self.is_connected
                if uuid in radio.lacks:
                    raise BleakCharacteristicNotFoundError(uuid)
                self.callbacks[uuid] = callback
                radio.subscriptions.append((radio.connects, uuid))
                radio.subscribed.set()

            async def read_gatt_char(self, uuid: str) -> bytearray:
                assert uuid == BATTERY_UUID
                return bytearray([radio.battery])

            async def write_gatt_char(self, uuid: str, data: bytes, response: bool = False) -> None:
                assert self.is_connected and response
                radio.writes.append((uuid, bytes(data)))
                if uuid == PMD_CP_UUID:  # Polar answers on the control point: F0, op, type, success
                    self.callbacks[PMD_CP_UUID](None, bytearray([0xF0, data[0], data[1], 0x00, 0x00]))

            async def disconnect(self) -> bool:
                self.is_connected = False
                return True

        return FakeClient

    def notify(self, uuid: str, payload: bytes) -> None:
        client = self.client
        assert client is not None and client.is_connected and uuid in client.callbacks
        client.callbacks[uuid](None, bytearray(payload))

    def drop(self) -> None:
        """The peripheral goes out of range: the stack reports a disconnect."""
        client = self.client
        client.is_connected = False
        if client.disconnected_callback is not None:
            client.disconnected_callback(client)

    async def wait_subscribed(self, connects: int, uuid: str = HR_UUID, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while (connects, uuid) not in self.subscriptions:
                await asyncio.sleep(0.01)
