"""A Modbus unit that answers reads with fewer registers than asked (firmware bug, or a gateway in front
of it truncating): pymodbus accepts such a response as it stands, so the source must count it, not
raise. Served by a minimal hand-written Modbus TCP unit, through pymodbus's real client."""

from __future__ import annotations

import asyncio
import struct

import pytest

from agent.config.schema import DeviceConfig, ModbusConfig, ModbusRegisterConfig
from agent.sources.backoff import BackoffPolicy
from agent.sources.modbus import ModbusSource

FAST = BackoffPolicy(initial_s=0.05, max_s=0.3)
_MBAP = struct.Struct(">HHHB")  # transaction, protocol, length, unit
_READ = struct.Struct(">BHH")  # function, address, count


class ShortUnit:
    """Answers every read with `served` registers (value 7 each), whatever count was asked for."""

    def __init__(self) -> None:
        self.served = 1
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                tid, _proto, length, unit = _MBAP.unpack(await reader.readexactly(_MBAP.size))
                function, _address, _count = _READ.unpack(await reader.readexactly(length - 1))
                self.requests += 1
                pdu = struct.pack(">BB", function, 2 * self.served) + b"\x00\x07" * self.served
                writer.write(_MBAP.pack(tid, 0, len(pdu) + 1, unit) + pdu)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def device(port: int, registers: tuple[ModbusRegisterConfig, ...]) -> DeviceConfig:
    config = ModbusConfig(registers, host="127.0.0.1", port=port, poll_interval_s=0.02, timeout_s=0.5)
    return DeviceConfig(id="pump-4", kind="equipment", transport="modbus", modbus=config)


# Each register set spans 4 registers and the unit serves 1. Before the fix, a 16-bit register past the
# served ones raised AssertionError in pymodbus's converter, ending the source; a 32-bit one raised
# ModbusException, taken for a lost link (the client dropped and reconnected on every poll).
SPANS = {
    "16-bit": (ModbusRegisterConfig("flow", 0), ModbusRegisterConfig("speed", 3)),
    "32-bit": (ModbusRegisterConfig("flow", 0, type="float32"), ModbusRegisterConfig("speed", 3)),
}


@pytest.mark.parametrize("kind", list(SPANS))
def test_short_responses_are_counted_and_polling_goes_on(kind: str) -> None:
    registers = SPANS[kind]
    unit = ShortUnit()

    async def main() -> None:
        server = await asyncio.start_server(unit.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            source = ModbusSource(device(port, registers), backoff=FAST)
            async with source:
                pending = asyncio.ensure_future(anext(source))
                async with asyncio.timeout(10):
                    while source.stats.bad_frames < 3:
                        await asyncio.sleep(0.01)
                stats = source.stats
                assert not pending.done() and stats.connected and stats.reconnects == 0
                assert stats.errors["short_responses"] == stats.bad_frames
                assert "link_failures" not in stats.errors
                unit.served = 4  # the unit recovers: readings flow again on the same connection
                async with asyncio.timeout(10):
                    reading = await pending
                assert reading.values[0, 1] == 7.0 and source.stats.reconnects == 0

    asyncio.run(main())
