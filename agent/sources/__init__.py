"""Sources: async context managers and async iterators of readings, one per configured device.

`open_source` picks the implementation by transport (simulator, serial, ble, modbus, replay; see
docs/sources.md). Every source's driver (serial port, BLE client, Modbus client, simulator clock) can
be passed in, so tests use emulators and fakes without patching. Device sources expose link counters
as ``stats``; `agent.sources.counters.source_stats(source)` reads them (None for the simulator).
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from agent.config.schema import DeviceConfig
from agent.errors import ConfigError
from agent.readings import Reading
from agent.units import ExpectedUnits


class Source(AbstractAsyncContextManager["Source"], Protocol):
    def __aiter__(self) -> AsyncIterator[Reading]: ...


AVAILABLE_TRANSPORTS = ("simulator", "serial", "ble", "replay", "modbus")


def check_transport(device: DeviceConfig, index: int) -> None:
    if device.transport not in AVAILABLE_TRANSPORTS:
        raise ConfigError(
            f"devices[{index}].transport",
            f"transport {device.transport!r} is not available in this build "
            f"(available: {', '.join(AVAILABLE_TRANSPORTS)})",
        )
    if device.transport == "modbus" and importlib.util.find_spec("pymodbus") is None:
        raise ConfigError(
            f"devices[{index}].transport",
            "transport 'modbus' needs pymodbus: pip install pymodbus",
        )


def open_source(
    device: DeviceConfig, *, start_time: float | None = None, expected_units: ExpectedUnits | None = None
) -> Source:
    """The source for `device`; the caller enters it with ``async with``. `expected_units`: the unit each
    detector reads a (stream, channel) in, for a device that declares its own (a serial HELLO, a
    recording) or whose config does (`units`): agent.sources.declared_units."""
    if device.transport == "simulator":
        from agent.simulation import SimulatorSource

        return SimulatorSource(device, start_time=start_time)
    if device.transport == "serial":
        from agent.sources.serial import SerialSource

        return SerialSource(device, expected_units=expected_units)
    if device.transport == "ble":
        from agent.sources.ble import BleSource

        return BleSource(device)
    if device.transport == "replay":
        from agent.sources.replay import ReplaySource

        return ReplaySource(device, expected_units=expected_units)
    if device.transport == "modbus":
        from agent.sources.modbus import ModbusSource

        return ModbusSource(device, expected_units=expected_units)
    raise ConfigError(f"devices.{device.id}.transport", f"transport {device.transport!r} is not available")
