"""What an operator reads when a Modbus unit cannot be reached: one line naming the configured address
and keys (pymodbus adds the socket error), not one per retry; the source connects by itself once the
unit answers. Real pymodbus TCP server on loopback, started late."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from ports import RefusingPort
from test_src_modbus import Pump, modbus_device

from agent.config.schema import DeviceConfig, ModbusConfig, ModbusRegisterConfig
from agent.sources.backoff import BackoffPolicy
from agent.sources.modbus import ModbusSource

FAST = BackoffPolicy(initial_s=0.02, max_s=0.1)
LOGGER = "agent.sources.modbus"


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


async def until_failed(source: ModbusSource, times: int) -> None:
    async with asyncio.timeout(20):
        while source.stats.errors.get("connect_failed", 0) < times:
            await asyncio.sleep(0.01)


def test_a_unit_that_answers_late_is_told_once_and_polled_when_it_answers(
    refusing_port: RefusingPort, caplog: pytest.LogCaptureFixture
) -> None:
    port = refusing_port.port
    pump = Pump(port)

    async def main() -> None:
        source = ModbusSource(modbus_device(port), backoff=FAST)
        async with source:
            first = asyncio.ensure_future(anext(source))
            await until_failed(source, 5)
            refusing_port.release()  # the unit now starts on that port
            await pump.start()
            async with asyncio.timeout(20):
                await first
            await pump.stop()

    with caplog.at_level(logging.INFO, logger=LOGGER):
        asyncio.run(main())
    (warning,) = lines(caplog, logging.WARNING)
    assert f"cannot connect to the Modbus unit at 127.0.0.1:{port} (modbus.host, modbus.port)" in warning
    assert "the other devices are not affected" in warning
    (connected,) = lines(caplog, logging.INFO)
    assert connected.startswith("pump-4: modbus connected (after ") and "failed attempt(s) over " in connected


def test_a_missing_rtu_port_is_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing = tmp_path / "usb-RS485-if00"
    config = ModbusConfig((ModbusRegisterConfig("current", 0),), serial_port=str(missing), timeout_s=0.2)
    device = DeviceConfig(id="pump-5", kind="equipment", transport="modbus", modbus=config)

    async def main() -> None:
        source = ModbusSource(device, backoff=FAST)
        async with source:
            reader = asyncio.ensure_future(anext(source))
            await until_failed(source, 3)
            reader.cancel()

    with caplog.at_level(logging.INFO, logger=LOGGER):
        asyncio.run(main())
    (warning,) = lines(caplog, logging.WARNING)
    assert f"{missing} (modbus.serial_port): no such device file: is the adapter plugged in" in warning
