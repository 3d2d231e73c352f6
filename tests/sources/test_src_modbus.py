"""Modbus source against pymodbus's own TCP server on loopback, including server stop and restart."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import struct
import threading
import tty
from pathlib import Path

import pytest
from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from agent.config.loader import parse_config
from agent.config.schema import DeviceConfig, ModbusConfig, ModbusRegisterConfig
from agent.readings import Quality, Reading
from agent.sources import open_source
from agent.sources.backoff import BackoffPolicy
from agent.sources.modbus import ModbusSource, plan_reads

FAST = BackoffPolicy(initial_s=0.05, max_s=0.3)
TEMP_WORDS = list(struct.unpack(">HH", struct.pack(">f", 41.5)))
REGISTERS = (
    ModbusRegisterConfig("vibration_rms", 0, scale=0.01),  # the server counts reads here
    ModbusRegisterConfig("bearing_temp", 2, type="float32"),
    ModbusRegisterConfig("motor_current", 4, table="input", type="int16", scale=0.5, offset=1.0),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Pump:
    """A Modbus unit: registers 0..9, register 0 incremented on every read request."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reads = 0
        self.server: ModbusTcpServer | None = None

    async def _count(
        self, fc: int, start: int, address: int, count: int, regs: list[int], values: object
    ) -> None:
        self.reads += 1
        regs[0] = self.reads

    async def start(self) -> None:
        words = [0, 0, *TEMP_WORDS, (-7) & 0xFFFF, 0, 0, 0, 0, 0]
        device = SimDevice(
            id=1, simdata=[SimData(0, values=words, datatype=DataType.REGISTERS)], action=self._count
        )
        self.server = ModbusTcpServer(device, address=("127.0.0.1", self.port))
        await self.server.serve_forever(background=True)

    async def stop(self) -> None:
        assert self.server is not None
        await self.server.shutdown()  # type: ignore[no-untyped-call]
        self.server = None


def modbus_device(port: int, registers: tuple[ModbusRegisterConfig, ...] = REGISTERS) -> DeviceConfig:
    config = ModbusConfig(registers, host="127.0.0.1", port=port, poll_interval_s=0.05, timeout_s=0.5)
    return DeviceConfig(id="pump-4", kind="equipment", transport="modbus", modbus=config)


async def take(source: ModbusSource, n: int) -> list[Reading]:
    async with asyncio.timeout(20):
        return [await anext(source) for _ in range(n)]


def test_polls_scale_and_reconnect_after_server_restart() -> None:
    port = free_port()
    pump = Pump(port)

    async def main() -> None:
        await pump.start()
        source = ModbusSource(modbus_device(port), backoff=FAST)
        async with source:
            first = await take(source, 3)
            assert all(r.stream == "pump-4/machine" for r in first)
            assert first[0].channels == ("vibration_rms", "bearing_temp", "motor_current")
            assert first[0].values[0, 1] == 41.5 and first[0].values[0, 2] == -7 * 0.5 + 1.0
            counts = [r.values[0, 0] for r in first]
            assert counts == sorted(counts) and counts[0] > 0  # the server's counter, scaled by 0.01
            assert all(r.quality == Quality.OK for r in first)

            await pump.stop()
            pending = asyncio.ensure_future(anext(source))
            async with asyncio.timeout(10):
                while source.stats.connected:
                    await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
            assert not pending.done() and source.stats.errors["connect_failed"] >= 1
            await pump.start()
            async with asyncio.timeout(10):
                resumed = await pending
            assert resumed.quality == Quality.GAP
            (after,) = await take(source, 1)
            assert after.quality == Quality.OK
            stats = source.stats
            assert stats.reconnects == 1 and stats.gaps == 1 and stats.errors["link_failures"] == 1
            await pump.stop()

    asyncio.run(main())


def test_exception_responses_are_counted_not_raised() -> None:
    port = free_port()
    pump = Pump(port)
    missing = (ModbusRegisterConfig("flow", 100),)  # beyond the unit's registers: illegal address

    async def main() -> None:
        await pump.start()
        async with open_source(modbus_device(port, missing)) as source:
            assert isinstance(source, ModbusSource)
            waiting = asyncio.ensure_future(anext(source))
            async with asyncio.timeout(10):
                while source.stats.bad_frames < 3:
                    await asyncio.sleep(0.02)
            assert not waiting.done() and source.stats.connected
            waiting.cancel()
        await pump.stop()

    asyncio.run(main())


def test_read_planning_and_config(tmp_path: Path) -> None:
    spans = plan_reads((*REGISTERS, ModbusRegisterConfig("far", 300, type="uint32")))
    assert [(s.table, s.address, s.count) for s in spans] == [
        ("holding", 0, 4),
        ("holding", 300, 2),
        ("input", 4, 1),
    ]
    base = {
        "gateway": {"id": "gw", "site": "s", "state_dir": str(tmp_path)},
        "mqtt": {"url": "mqtt://127.0.0.1:1883"},
        "outbox": {"path": str(tmp_path / "o.sqlite")},
    }
    device = {
        "id": "pump-4",
        "kind": "equipment",
        "transport": "modbus",
        "modbus": {
            "host": "10.0.0.5",
            "poll_interval_s": 0.5,
            "registers": [{"name": "temp", "address": 2, "type": "float32", "scale": 1.0}],
        },
    }
    config = parse_config({**base, "devices": [device]}, base_dir=tmp_path)
    modbus = config.devices[0].modbus
    assert modbus is not None and modbus.registers[0].type == "float32" and modbus.poll_interval_s == 0.5
    device["modbus"] = {"registers": []}
    with pytest.raises(Exception, match="exactly one of host") as caught:
        parse_config({**base, "devices": [device]}, base_dir=tmp_path)
    assert "at least one register" in str(caught.value)


class PtyBridge:
    """Two pseudo-terminals joined back to back (a null-modem cable): RTU server on one, us on the other."""

    def __init__(self) -> None:
        self.masters: list[int] = []
        self.paths: list[str] = []
        self._slaves: list[int] = []
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(slave)
            self.masters.append(master)
            self.paths.append(os.ttyname(slave))
            self._slaves.append(slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        a, b = self.masters
        while not self._stop.is_set():
            ready, _, _ = select.select([a, b], [], [], 0.05)
            for fd in ready:
                with contextlib.suppress(OSError):
                    os.write(b if fd == a else a, os.read(fd, 4096))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for fd in self.masters + self._slaves:
            os.close(fd)


def test_rtu_polling_over_a_pty_pair() -> None:
    bridge = PtyBridge()
    server_port, our_port = bridge.paths

    async def main() -> None:
        words = [0, 0, *TEMP_WORDS, (-7) & 0xFFFF]
        device = SimDevice(id=3, simdata=[SimData(0, values=words, datatype=DataType.REGISTERS)])
        server = ModbusSerialServer(device, framer=FramerType.RTU, port=server_port, baudrate=19200)
        await server.serve_forever(background=True)
        config = ModbusConfig(
            REGISTERS[1:], serial_port=our_port, unit=3, poll_interval_s=0.05, timeout_s=1.0
        )
        try:
            async with ModbusSource(
                DeviceConfig(id="chiller-2", kind="equipment", transport="modbus", modbus=config),
                backoff=FAST,
            ) as source:
                readings = await take(source, 3)
            assert all(r.stream == "chiller-2/machine" for r in readings)
            assert readings[-1].channels == ("bearing_temp", "motor_current")
            assert readings[-1].values.tolist() == [[41.5, -2.5]]
        finally:
            await server.shutdown()  # type: ignore[no-untyped-call]

    try:
        asyncio.run(main())
    finally:
        bridge.close()
