"""A `[[devices]]` table and its transport's own table (`[devices.serial]`, ...), read into `DeviceConfig`.

Strategy: the same checked `Table` reader as the rest of the loader (`agent.config.loader`): every problem
is recorded with its key path and reading goes on. A device names one transport and gives that
transport's table, and no other's (the simulator's is optional). What a transport's own code knows is
asked of it, imported only when the table needs it: the simulator's episode conditions
(`agent.simulation`), the BLE profiles (`agent.sources.ble_profiles`). Whether the transport can run on
this gateway (its driver installed) is checked later, by `agent.daemon.preflight`, which `check-config`
runs too (`agent.sources.check_transport`).
"""

from __future__ import annotations

import math
from pathlib import Path

from agent.config.reader import Table, describe
from agent.config.schema import (
    BeatsConfig,
    BleConfig,
    DeviceConfig,
    EpisodeConfig,
    ModbusConfig,
    ModbusRegisterConfig,
    ReplayConfig,
    RunningWhenConfig,
    SerialConfig,
    SimulatorConfig,
)

TRANSPORTS = ("simulator", "serial", "ble", "replay", "modbus")
KINDS = ("wearable", "equipment")


def _device(t: Table) -> DeviceConfig:
    kind = t.text("kind", choices=KINDS)
    transport = t.text("transport", choices=TRANSPORTS)
    sections = {name: t.table(name) for name in ("simulator", "serial", "ble", "replay", "modbus")}
    for name, section in sections.items():
        # transport None: missing or not one of TRANSPORTS, which is its own problem ("transport is None"
        # named a value the file never held); a section beside it says nothing more
        if section is not None and transport is not None and name != transport:
            t.problem(name, f"section given but transport is {describe(transport)}")
    if transport in sections and sections[transport] is None and transport not in ("simulator",):
        t.problem(
            transport, f"missing (transport {describe(transport)} needs a [{t.path}.{transport}] table)"
        )
    device_id = t.name("id", private=True)
    cfg = DeviceConfig(
        id=device_id,
        kind=kind,
        transport=transport,
        patient=t.text("patient", "", private=True),
        lost_after_s=t.number("lost_after_s", 30.0, positive=True),
        simulator=_simulator(sections["simulator"], kind, device_id) if transport == "simulator" else None,
        serial=_serial(sections["serial"]),
        ble=_ble(sections["ble"]),
        replay=_replay(sections["replay"]),
        modbus=_modbus(sections["modbus"]),
        beats=_beats(t.table("beats")),
        running_when=_running_when(t.table("running_when")),
        units=_units(t.table("units"), transport),
        ranges=_ranges(t.table("ranges")),
    )
    t.finish()
    return cfg


def _units(t: Table | None, transport: str | None) -> tuple[tuple[str, str], ...]:
    """`units = { vibration_rms = "g" }`: each value a unit `agent.units` knows, in any spelling of it;
    whether it converts to the unit a detector reads the channel in is `agent.pipeline.wiring`'s check."""
    if t is None:
        return ()
    from agent.units import UNITS, canonical

    if transport in ("ble", "simulator"):
        # their readings' units are fixed by the GATT profile or the simulator, never the device's choice
        t.problem(None, f"not for transport {describe(transport)}: its channels' units are fixed")
    pairs = []
    for channel in t.data:
        unit = t.text(channel)
        if not isinstance(unit, str) or not unit.strip():  # not a string, or empty: told by `text`
            continue
        if canonical(unit) is None:
            t.problem(channel, f"unknown unit {describe(unit)} (one of {', '.join(UNITS)})", tuple(UNITS))
            continue
        pairs.append((str(channel), unit))
    t.finish()
    return tuple(pairs)


def _running_when(t: Table | None) -> RunningWhenConfig | None:
    if t is None:
        return None
    cfg = RunningWhenConfig(
        channel=t.text("channel"),
        above=t.number("above"),
        settle_s=t.number("settle_s", 0.0, minimum=0.0),
    )
    t.finish()
    return cfg


def _ranges(t: Table | None) -> tuple[tuple[str, tuple[float, float]], ...]:
    """`ranges = { vibration_rms = [0, 50] }`: each channel's measurable span [low, high], low < high."""
    if t is None:
        return ()
    spans: list[tuple[str, tuple[float, float]]] = []
    for channel in list(t.data):
        value = t.raw(channel)
        if not (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        ):
            t.problem(channel, f"expected [low, high], two numbers, got {describe(value)}")
            continue
        low, high = float(value[0]), float(value[1])
        if not (math.isfinite(low) and math.isfinite(high)):
            t.problem(channel, f"expected finite numbers, got [{low:g}, {high:g}]")
        elif not low < high:
            t.problem(channel, f"low must be below high, got [{low:g}, {high:g}]")
        else:
            spans.append((str(channel), (low, high)))
    t.finish()
    return tuple(spans)


def _simulator(t: Table | None, kind: str | None, device_id: str | None) -> SimulatorConfig:
    if t is None:
        return SimulatorConfig()
    episodes = []
    for e in t.tables("episodes"):
        condition = e.text("condition")
        if isinstance(condition, str) and kind in KINDS:
            valid = _conditions_for(kind)
            if valid and condition not in valid:
                e.problem(
                    "condition",
                    f"unknown for kind {kind!r}: {describe(condition)} (one of {', '.join(sorted(valid))})",
                    sorted(valid),
                )
        episodes.append(
            EpisodeConfig(
                condition=condition,
                start_s=e.number("start_s", minimum=0.0),
                duration_s=e.number("duration_s", positive=True),
            )
        )
        e.finish()
    cfg = SimulatorConfig(
        seed=t.integer("seed", 0),
        speed=t.number("speed", 1.0, positive=True),
        ecg=t.flag("ecg", False),
        episodes=tuple(episodes),
    )
    if cfg.ecg and kind == "equipment":
        t.problem("ecg", "only a wearable can stream ECG")
    t.finish()
    return cfg


def _conditions_for(kind: str) -> frozenset[str]:
    from agent.simulation import CONDITIONS_BY_KIND  # the simulator owns the list of episodes it can play

    return frozenset(CONDITIONS_BY_KIND.get(kind, ()))


def _serial(t: Table | None) -> SerialConfig | None:
    if t is None:
        return None
    cfg = SerialConfig(
        port=t.text("port", private=True),
        baudrate=t.integer("baudrate", 115200, minimum=300, maximum=12_000_000),
        protocol=t.text("protocol", "frames", choices=("frames", "csv", "jsonl")),
        channels=t.texts("channels", ()),
        rate_hz=t.number("rate_hz", 0.0, minimum=0.0),
    )
    if cfg.protocol in ("csv", "jsonl") and not cfg.channels:
        t.problem("channels", f'protocol {describe(cfg.protocol)} needs the channel map, e.g. ["hr", "spo2"]')
    t.finish()
    return cfg


def _ble(t: Table | None) -> BleConfig | None:
    if t is None:
        return None
    cfg = BleConfig(
        address=t.text("address", "", private=True),
        name=t.text("name", "", private=True),
        service_uuid=t.text("service_uuid", ""),
        profiles=t.texts("profiles", ("heart_rate",)),
        connect_timeout_s=t.number("connect_timeout_s", 20.0, positive=True),
    )
    if not (cfg.address or cfg.name or cfg.service_uuid):
        t.problem(None, "give at least one of address, name or service_uuid to find the device")
    from agent.sources.ble_profiles import PROFILES  # the BLE source owns the profiles it can read

    unknown = [p for p in cfg.profiles if p not in PROFILES]
    if unknown:
        t.problem(
            "profiles", f"not supported: {', '.join(unknown)} (one of {', '.join(PROFILES)})", tuple(PROFILES)
        )
    t.finish()
    return cfg


def _modbus(t: Table | None) -> ModbusConfig | None:
    if t is None:
        return None
    registers = []
    for r in t.tables("registers"):
        registers.append(
            ModbusRegisterConfig(
                name=r.name("name"),
                address=r.integer("address", minimum=0, maximum=0xFFFF),
                table=r.text("table", "holding", choices=("holding", "input")),
                type=r.text("type", "uint16", choices=("uint16", "int16", "uint32", "int32", "float32")),
                scale=r.number("scale", 1.0),
                offset=r.number("offset", 0.0),
            )
        )
        r.finish()
    cfg = ModbusConfig(
        registers=tuple(registers),
        host=t.text("host", ""),
        port=t.integer("port", 502, minimum=1, maximum=65535),
        serial_port=t.text("serial_port", "", private=True),
        baudrate=t.integer("baudrate", 19200, minimum=300, maximum=12_000_000),
        unit=t.integer("unit", 1, minimum=0, maximum=247),
        poll_interval_s=t.number("poll_interval_s", 1.0, positive=True),
        timeout_s=t.number("timeout_s", 1.0, positive=True),
        word_order=t.text("word_order", "big", choices=("big", "little")),
    )
    if bool(cfg.host) == bool(cfg.serial_port):
        t.problem(None, "give exactly one of host (Modbus TCP) or serial_port (Modbus RTU)")
    if not registers:
        t.problem("registers", 'list at least one register, e.g. { name = "temp", address = 0 }')
    names = [r.name for r in registers]
    if len(set(names)) != len(names):
        t.problem("registers", f"register names must be unique, got {names}")
    t.finish()
    return cfg


def _beats(t: Table | None) -> BeatsConfig | None:
    if t is None:
        return None
    cfg = BeatsConfig(ecg_stream=t.name("ecg_stream", "ecg"), rr_stream=t.name("rr_stream", "rr"))
    if cfg.ecg_stream == cfg.rr_stream:
        t.problem("rr_stream", "must differ from ecg_stream (the ECG stream itself is passed on)")
    t.finish()
    return cfg


def _replay(t: Table | None) -> ReplayConfig | None:
    if t is None:
        return None
    path = t.file("path", readable=False)  # a recording file or a folder of rotated files
    if isinstance(path, Path) and not (path.is_file() or path.is_dir()):
        t.problem("path", f"no recording file or folder: {path}")
    cfg = ReplayConfig(path=path, speed=t.number("speed", 1.0, minimum=0.0))
    t.finish()
    return cfg
