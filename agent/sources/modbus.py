"""Modbus source: polls registers of one unit over Modbus TCP or RTU (pymodbus) at a fixed rate.

Each poll reads, per register table, one request spanning the configured registers (split where a
request would exceed 125 registers), converts each register (u16/i16, u32/i32/f32 over two
registers in `word_order`) with pymodbus's own `convert_from_registers`, scales it, and emits one
single-sample reading with every configured register as a channel, on the device kind's default
stream (``"machine"`` for equipment, ``"vitals"`` for a wearable).

Polls are scheduled on a fixed grid (``start + k * poll_interval_s``); a poll that overruns skips the
grid points it missed instead of bursting to catch up. An exception response (illegal address, busy
device) or a response with fewer registers than requested is counted as a bad frame and that poll
emits nothing. A lost connection (pymodbus
`ConnectionException`/`ModbusIOException`, OSError) closes the client, which is then reopened
with our jittered backoff; pymodbus's own reconnect loop is disabled so there is one policy for
every source. The first reading after a reconnect carries Quality.GAP. The client is built by a
passed-in factory, so tests can point it at pymodbus's server on loopback or a pty.

A unit that cannot be reached is told once per outage (pymodbus logs the socket error itself),
naming the configured address and keys, and again every 10 minutes while it lasts (`LinkTrouble`);
the connect after failures says how many there were.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Protocol

import numpy as np

from agent.config.schema import DeviceConfig, ModbusConfig, ModbusRegisterConfig
from agent.errors import ConfigError
from agent.link_trouble import LinkTrouble, Tell
from agent.logs import device_name
from agent.readings import Quality, Reading, stream_id
from agent.sources.backoff import Backoff, BackoffPolicy
from agent.sources.counters import SourceStats
from agent.sources.declared_units import DeclaredUnits
from agent.units import ExpectedUnits

log = logging.getLogger("agent.sources.modbus")

MAX_REGISTERS_PER_READ = 125
DEFAULT_STREAM = {"wearable": "vitals", "equipment": "machine"}
_WIDTH = {"uint16": 1, "int16": 1, "uint32": 2, "int32": 2, "float32": 2}


class ModbusClient(Protocol):
    """The part of pymodbus's async clients the source uses."""

    @property
    def connected(self) -> bool: ...
    async def connect(self) -> bool: ...
    def close(self) -> None: ...
    def read_holding_registers(
        self, address: int, *, count: int = 1, device_id: int = 1
    ) -> Awaitable[Any]: ...
    def read_input_registers(self, address: int, *, count: int = 1, device_id: int = 1) -> Awaitable[Any]: ...


ClientFactory = Callable[[ModbusConfig], ModbusClient]


def pymodbus_client(config: ModbusConfig) -> ModbusClient:
    """AsyncModbusTcpClient for `host`, AsyncModbusSerialClient (RTU framing) for `serial_port`."""
    from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

    client: ModbusClient
    if config.host:
        client = AsyncModbusTcpClient(
            config.host, port=config.port, timeout=config.timeout_s, retries=0, reconnect_delay=0
        )
    else:
        client = AsyncModbusSerialClient(
            config.serial_port,
            baudrate=config.baudrate,
            timeout=config.timeout_s,
            retries=0,
            reconnect_delay=0,
        )
    return client


@dataclass(frozen=True, slots=True)
class _Span:
    """One read request: `count` registers of `table` from `address`, and the registers inside it."""

    table: str
    address: int
    count: int
    registers: tuple[tuple[int, ModbusRegisterConfig], ...]  # (index into the channel list, register)


def plan_reads(registers: Sequence[ModbusRegisterConfig]) -> tuple[_Span, ...]:
    """Group registers into as few requests as possible, none longer than 125 registers."""
    spans: list[_Span] = []
    for table in ("holding", "input"):
        chosen = sorted(
            ((i, r) for i, r in enumerate(registers) if r.table == table), key=lambda x: x[1].address
        )
        group: list[tuple[int, ModbusRegisterConfig]] = []
        for item in chosen:
            end = item[1].address + _WIDTH[item[1].type]
            if group and end - group[0][1].address > MAX_REGISTERS_PER_READ:
                spans.append(_span(table, group))
                group = []
            group.append(item)
        if group:
            spans.append(_span(table, group))
    return tuple(spans)


def _span(table: str, group: list[tuple[int, ModbusRegisterConfig]]) -> _Span:
    start = group[0][1].address
    end = max(r.address + _WIDTH[r.type] for _, r in group)
    return _Span(table, start, end - start, tuple(group))


def decode_registers(words: Sequence[int], register: ModbusRegisterConfig, word_order: str) -> float:
    """The physical value of `register` from its raw 16-bit words."""
    from pymodbus.client.mixin import ModbusClientMixin

    types = ModbusClientMixin.DATATYPE
    kind = {
        "uint16": types.UINT16,
        "int16": types.INT16,
        "uint32": types.UINT32,
        "int32": types.INT32,
        "float32": types.FLOAT32,
    }[register.type]
    raw = ModbusClientMixin.convert_from_registers(list(words), kind, word_order=word_order)  # type: ignore[arg-type]
    assert isinstance(raw, int | float)
    return float(raw) * register.scale + register.offset


class ModbusSource:
    """Async context manager and async iterator of one Modbus unit's readings."""

    def __init__(
        self,
        device: DeviceConfig,
        *,
        client_factory: ClientFactory = pymodbus_client,
        backoff: BackoffPolicy | None = None,
        clock: Callable[[], float] = time.time,
        expected_units: ExpectedUnits | None = None,
    ) -> None:
        if device.modbus is None:
            raise ConfigError(f"devices.{device.id}.modbus", "transport modbus needs a [modbus] table")
        self.device = device
        self._name = device_name(device.id)  # what log lines call it
        self.config = device.modbus
        self._factory = client_factory
        self._backoff = Backoff(backoff)
        self._clock = clock
        self._spans = plan_reads(self.config.registers)
        self._channels = tuple(r.name for r in self.config.registers)
        self._stream = stream_id(device.id, DEFAULT_STREAM[device.kind])
        self._client: ModbusClient | None = None
        self._closed = False
        self._ever_connected = False
        self._gap_next = False
        self._had_data = False
        self._next_poll: float | None = None
        self._errors: Counter[str] = Counter()
        self._readings = self._bad = self._gaps = self._reconnects = 0
        self._trouble = LinkTrouble()  # failed connects of the current outage, and what was logged
        # registers carry no unit: the config's `units` say them, converted to the detectors'
        self._units = DeclaredUnits(self._name, dict(device.units), expected_units or {})

    @property
    def stats(self) -> SourceStats:
        return SourceStats(
            connected=self._client is not None,
            readings=self._readings,
            bad_frames=self._bad,
            gaps=self._gaps,
            reconnects=self._reconnects,
            errors=MappingProxyType(dict(self._errors)),
        )

    async def __aenter__(self) -> ModbusSource:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closed = True
        self._drop_client()

    def __aiter__(self) -> ModbusSource:
        return self

    async def __anext__(self) -> Reading:
        while not self._closed:
            if self._client is None:
                await self._connect()
                continue
            await self._wait_for_poll()
            reading = await self._poll(self._client)
            if reading is not None:
                self._readings += 1
                return self._units.apply(reading)
        raise StopAsyncIteration

    async def _connect(self) -> None:
        client = self._factory(self.config)
        try:
            async with asyncio.timeout(self.config.timeout_s + 1.0):  # not wait_for: agent.session._process
                ok = await client.connect()
        except (OSError, TimeoutError) as exc:
            log.debug("%s: modbus connect: %r", self._name, exc)
            ok = False
        if not ok or not client.connected:
            client.close()
            self._errors["connect_failed"] += 1
            self._tell_connect_failure()
            await asyncio.sleep(self._backoff.next_delay())
            return
        self._client = client
        if self._ever_connected:
            self._reconnects += 1
            if self._had_data:
                self._gaps += 1
                self._gap_next = True
        self._ever_connected = True
        self._next_poll = None
        log.info("%s: modbus connected%s", self._name, self._trouble.recovered())

    def _tell_connect_failure(self) -> None:
        """Log an unreachable unit at the first failure of an outage, then every REMIND_S."""
        hint = self._hint()
        if self._trouble.failed(hint) is Tell.QUIET:
            return
        log.warning(
            "%s: cannot connect to the Modbus unit at %s: %s; retrying every %.0f s at most, "
            "the other devices are not affected",
            self._name,
            self._where(),
            hint,
            self._backoff.policy.max_s,
        )

    def _where(self) -> str:
        if self.config.host:
            return f"{self.config.host}:{self.config.port} (modbus.host, modbus.port)"
        return f"{self.config.serial_port} (modbus.serial_port)"

    def _hint(self) -> str:
        if not self.config.host:
            port = Path(self.config.serial_port)
            if not port.exists():
                return "no such device file: is the adapter plugged in, and is modbus.serial_port right?"
            if not os.access(port, os.R_OK | os.W_OK):
                return "permission denied: the agent's user needs read and write access to the port"
        return "is the unit powered and reachable, and its address right? (pymodbus logs the cause)"

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def _wait_for_poll(self) -> None:
        now = time.monotonic()
        interval = self.config.poll_interval_s
        if self._next_poll is None:
            self._next_poll = now
        elif now > self._next_poll + interval:  # overran: skip the missed grid points
            missed = int((now - self._next_poll) // interval)
            self._errors["missed_polls"] += missed
            self._next_poll += missed * interval
        if self._next_poll > now:
            await asyncio.sleep(self._next_poll - now)
        self._next_poll += interval

    async def _poll(self, client: ModbusClient) -> Reading | None:
        from pymodbus.exceptions import ModbusException

        row = np.full(len(self._channels), np.nan)
        unit = self.config.unit
        try:
            for span in self._spans:
                read = (
                    client.read_holding_registers if span.table == "holding" else client.read_input_registers
                )
                response = await read(span.address, count=span.count, device_id=unit)
                if response.isError():
                    self._bad += 1
                    self._errors["exception_responses"] += 1
                    return None
                words = response.registers
                if len(words) < span.count:  # a unit answering with fewer registers than asked
                    self._bad += 1
                    self._errors["short_responses"] += 1
                    return None
                for index, register in span.registers:
                    start = register.address - span.address
                    row[index] = decode_registers(
                        words[start : start + _WIDTH[register.type]], register, self.config.word_order
                    )
        except (ModbusException, OSError, TimeoutError) as exc:
            self._errors["link_failures"] += 1
            log.warning("%s: modbus poll failed (%s); reconnecting", self._name, exc)
            self._drop_client()
            await asyncio.sleep(self._backoff.next_delay())
            return None
        self._backoff.reset()
        quality = Quality.GAP if self._gap_next else Quality.OK
        self._gap_next = False
        self._had_data = True
        values = row.reshape(1, -1)
        values.flags.writeable = False
        return Reading(self._stream, self._channels, values, self._clock(), time.monotonic(), 0.0, quality)
