"""Detectors against what the devices produce: a stream or channel no device sends is a typo, not a silence.

A detector binds to a stream name and channels by text (`agent.pipeline.pipeline`); a reading without
one of its channels is gated to NaN (missing) and a stream nobody sends is simply never scored, so a
misspelled `channels = ["hrr"]` would watch nothing and raise no alarm, ever.

Before start (`check_wiring`, one of `agent.preflight`'s checks: check-config, run, reload). Each device
says what it can produce (`produces`), from the code that makes its readings: the simulator's kinds,
a CSV/JSON-lines serial device's or a Modbus unit's configured channel map (on the kind's default
stream), the BLE profiles' streams and channels. A detector whose stream none of them produces, or one
of whose channels none of them produces on that stream, is a `ConfigError` naming the key, with a
"did you mean" when a produced name is close; so is a device's `ranges` entry for a channel that device
does not send. A device that names its streams and channels only at run time (the serial frame
protocol's HELLO, a replay's recording) may send anything: with one configured, no detector is checked
before start (its own `ranges` neither; the other devices' still are) and the run-time warning is what
is left.

At run time (`agent.pipeline.blind`): a detector's channel that no reading of its stream has had yet is
warned about when a device known before start produces it there (late: a BLE profile that has not
reported yet), and raises the technical alarm `channel_missing` when none does (a typo against a
serial HELLO); both are listed for the status until the channel arrives.

What the beats stage computes (`beat_channels_read`): the optional channels of a `[devices.beats]` RR
stream (``qrs_shape``, ``qrs_core``, ``p_wave``) cost templates and CPU per beat, so the session asks the
stage for those a detector on that stream reads (agent.ecg.rr_from_ecg); the stream "produces" every
channel for the checks above either way.

Rates (`DeclaredRates`, kept by each `StreamPipeline`): a reading that declares its samples' spacing
(a serial device's HELLO rate; a BLE or simulator block's) is compared with the `rate_hz` of each
detector of its stream (`agent.rates.rates_agree`) when a stream's spacing is new to it (the stream
pipeline keeps each device stream's last spacing, so devices declaring two rates cost nothing per
reading) and the spacing new to the stream name; a mismatch is one warning naming
`detectors.<id>.rate_hz`, the first device seen declaring that rate and both rates.

Units (`expected_units`): the unit each detector that takes its samples in one unit reads a (stream,
channel) in (`registry.INPUT_UNITS`: the vibration detector's `unit`), handed to the sources of devices
that declare their own (a serial HELLO: `agent.sources.serial_units` converts or refuses); two detectors
reading one channel in different units are a `ConfigError` (`check_wiring`). A device's `units` key
declares the unit of channels that do not say it themselves (CSV / JSON lines, Modbus, or over a HELLO's
own: `agent.sources.declared_units`); one for a channel the device does not send, or in a unit that
does not convert to a detector's, is a `ConfigError` naming `devices[i].units.<channel>`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from agent.config.reader import closest
from agent.config.schema import AgentConfig, DetectorConfig, DeviceConfig
from agent.ecg.rr_from_ecg import CHANNELS as RR_CHANNELS
from agent.errors import ConfigError
from agent.logs import device_name
from agent.rates import rates_agree
from agent.readings import Reading
from agent.units import ExpectedUnit, factor

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Produces:
    """What one device can send: stream name -> channels; `open`: it may send any stream with any
    channels, named only at run time (then `streams` is empty)."""

    streams: dict[str, frozenset[str]]
    open: bool = False


def produces(device: DeviceConfig) -> Produces:
    """The streams and channels `device` can produce, as far as its configuration tells, beats found in
    its ECG (`[devices.beats]`) included."""
    output = _transport_produces(device)
    if device.beats is None or output.open:
        return output
    return Produces({**output.streams, device.beats.rr_stream: frozenset(RR_CHANNELS)})


def beat_channels_read(config: AgentConfig, rr_stream: str) -> frozenset[str]:
    """The channels of the beats stream `rr_stream` that a detector of `config` reads: the ECG -> RR stage
    computes only these of its optional ones (agent.ecg.rr_from_ecg)."""
    read = {c for d in config.detectors if d.stream == rr_stream for c in d.channels}
    return frozenset(read & set(RR_CHANNELS))


def _transport_produces(device: DeviceConfig) -> Produces:
    if device.transport == "simulator":
        return _simulated(device)
    if device.transport == "ble" and device.ble is not None:
        return _ble(device.ble.profiles)
    from agent.sources.serial_frames import DEFAULT_STREAM  # the kind's stream for line and Modbus data

    stream = DEFAULT_STREAM.get(device.kind)
    if device.transport == "serial" and device.serial is not None and device.serial.protocol != "frames":
        return Produces({stream: frozenset(device.serial.channels)}) if stream else Produces({}, open=True)
    if device.transport == "modbus" and device.modbus is not None and stream:
        return Produces({stream: frozenset(r.name for r in device.modbus.registers)})
    # The frame protocol's channels come with the device's HELLO and its waveform streams are named
    # after them; a replay sends whatever was recorded: anything is possible.
    return Produces({}, open=True)


def _simulated(device: DeviceConfig) -> Produces:
    if device.kind == "equipment":
        from agent.simulation.equipment import MACHINE_CHANNELS

        return Produces({"machine": frozenset(MACHINE_CHANNELS)})
    from agent.simulation.wearable import VITALS_CHANNELS

    streams: dict[str, frozenset[str]] = {"vitals": frozenset(VITALS_CHANNELS), "rr": frozenset({"rr"})}
    if device.simulator is not None and device.simulator.ecg:
        streams["ecg"] = frozenset({"ecg"})
    return Produces(streams)


def _ble(profiles: Sequence[str]) -> Produces:
    from agent.sources.ble_profiles import PROFILES  # how each profile's notifications become readings

    streams: dict[str, set[str]] = {}
    for name in profiles:
        profile = PROFILES.get(name)
        if profile is None:  # refused by the loader already
            continue
        if profile.channels:
            streams.setdefault(profile.stream, set()).update(profile.channels)
        if name == "heart_rate":  # its RR intervals, one reading per beat
            streams.setdefault("rr", set()).add("rr")
        if name == "polar_pmd":  # the ECG frames
            streams.setdefault("ecg", set()).add("ecg")
    return Produces({stream: frozenset(channels) for stream, channels in streams.items()})


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """' (did you mean "hr"?)' for the closest of `known` (`closest`: case ignored), or ""."""
    close = closest(word, known)
    return f' (did you mean "{close}"?)' if close else ""


def _names(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "none"


def _not_sent(key: str, channel: str, sent: frozenset[str]) -> ConfigError:
    """A device's key naming a channel the device does not send (where what it sends is known)."""
    nearest = did_you_mean(channel, sent)
    return ConfigError(key, f'the device sends no channel "{channel}"{nearest} (it sends: {_names(sent)})')


def _input_unit(spec: DetectorConfig) -> str | None:
    """The unit a detector of `spec` takes its samples in, if its type has one (`registry.INPUT_UNITS`)."""
    from agent.detectors.registry import INPUT_UNITS

    unit_of = INPUT_UNITS.get(spec.type)
    if unit_of is None:
        return None
    try:
        return unit_of(spec)
    except ConfigError:  # told by the detector's own check
        return None


def expected_units(config: AgentConfig) -> dict[tuple[str, str], ExpectedUnit]:
    """(stream name, channel) -> the unit a detector reads it in, for the detector types that take their
    samples in one unit (`registry.INPUT_UNITS`: the vibration detector's `unit`). A serial device whose
    HELLO declares another unit for such a channel is converted to it (agent.sources.serial_units). Where
    two detectors disagree the first one's is kept (`check_wiring` refuses such a config)."""
    expected: dict[tuple[str, str], ExpectedUnit] = {}
    for spec in config.detectors:
        if (unit := _input_unit(spec)) is None:
            continue
        for channel in spec.channels:
            expected.setdefault((spec.stream, channel), ExpectedUnit(unit, spec.id))
    return expected


def _unit_disagreements(config: AgentConfig) -> list[ConfigError]:
    """Two detectors reading one channel of one stream in different units: its samples have one unit, so
    one of the two judges them wrongly by a constant factor (9.81 between g and m/s2)."""
    first = expected_units(config)
    problems = []
    for spec in config.detectors:
        if (unit := _input_unit(spec)) is None:
            continue
        other = next(
            (e for c in spec.channels if (e := first[(spec.stream, c)]).unit != unit),
            None,
        )
        if other is not None:
            problems.append(
                ConfigError(
                    f"detectors.{spec.id}.params.unit",
                    f'is "{unit}", but detector {other.detector} reads the same channels of stream'
                    f' "{spec.stream}" in "{other.unit}" ({other.key}): a channel\'s samples have one unit',
                )
            )
    return problems


def _declared_unit_problems(config: AgentConfig) -> list[ConfigError]:
    """A device's `units` for a channel it does not send (where its channels are known before start), or
    in a unit that does not convert to the unit a detector reads that channel in ("mV" for a detector in
    g): its samples could only be judged wrongly or not at all."""
    expected = expected_units(config)
    problems = []
    for i, device in enumerate(config.devices):
        if not device.units:
            continue
        output = _transport_produces(device)
        sent = frozenset().union(*output.streams.values())
        for channel, unit in device.units:
            key = f"devices[{i}].units.{channel}"
            if not output.open and channel not in sent:
                problems.append(_not_sent(key, channel, sent))
                continue
            for (stream, read), want in expected.items():
                if read != channel or not (output.open or channel in output.streams.get(stream, ())):
                    continue
                if factor(unit, want.unit) is None:
                    problems.append(
                        ConfigError(
                            key,
                            f'"{unit}" does not convert to "{want.unit}", the unit detector {want.detector}'
                            f' reads channel "{channel}" of stream "{stream}" in ({want.key})',
                        )
                    )
    return problems


def _unknown_range_channels(config: AgentConfig) -> list[ConfigError]:
    """A `ConfigError` for each channel of a device's `ranges` that the device cannot send, where what
    it sends is known before start (a frame-protocol or replay device may send anything)."""
    problems: list[ConfigError] = []
    for i, device in enumerate(config.devices):
        output = produces(device)
        if not device.ranges or output.open:
            continue
        sent = frozenset().union(*output.streams.values())
        for channel, _ in device.ranges:
            if channel not in sent:
                problems.append(_not_sent(f"devices[{i}].ranges.{channel}", channel, sent))
    return problems


def check_wiring(config: AgentConfig) -> list[ConfigError]:
    """A `ConfigError` for each detector stream or channel that no configured device can produce,
    where what the devices produce is known before start (see the module docstring), for two
    detectors that read one channel in different units, and for a device's `units` that name a channel
    it does not send or do not convert to its detectors' units."""
    streams: dict[str, frozenset[str]] = {}
    any_open = False  # some device may send any stream with any channels
    for device in config.devices:
        output = produces(device)
        any_open = any_open or output.open
        for name, channels in output.streams.items():
            streams[name] = streams.get(name, frozenset()) | channels
    problems: list[ConfigError] = (
        _unit_disagreements(config) + _declared_unit_problems(config) + _unknown_range_channels(config)
    )
    for i, device in enumerate(config.devices):
        transport = _transport_produces(device)
        if transport.open:
            continue  # its streams and channels are known at run time only (a serial HELLO, a replay)
        own = transport.streams
        gate = device.running_when
        sent = frozenset().union(*own.values())
        if gate is not None and gate.channel not in sent:
            problems.append(_not_sent(f"devices[{i}].running_when.channel", gate.channel, sent))
        if device.beats is not None and device.beats.ecg_stream not in own:
            problems.append(
                ConfigError(
                    f"devices[{i}].beats.ecg_stream",
                    f'the device produces no stream "{device.beats.ecg_stream}" to find beats in '
                    f"(it produces: {_names(own)})",
                )
            )
    if any_open:
        # The detectors' streams and channels may come from the run-time device: `agent.pipeline.blind`
        # raises channel_missing if they do not. A known device's own keys are checked all the same
        # (they once were skipped with the rest: a running_when typo on a CSV device beside a HELLO one).
        return problems
    for spec in config.detectors:
        produced = streams.get(spec.stream)
        if produced is None:
            problems.append(
                ConfigError(
                    f"detectors.{spec.id}.stream",
                    f'no configured device produces a stream "{spec.stream}"'
                    f"{did_you_mean(spec.stream, streams)} (they produce: {_names(streams)})",
                )
            )
            continue
        for channel in spec.channels:
            if channel not in produced:
                problems.append(
                    ConfigError(
                        f"detectors.{spec.id}.channels",
                        f'no configured device produces a channel "{channel}" on stream "{spec.stream}"'
                        f"{did_you_mean(channel, produced)} (it has: {_names(produced)})",
                    )
                )
    return problems


MAX_RATES_KEPT = 10_000  # spacings remembered; past it a spacing may be looked at again


class DeclaredRates:
    """The run-time check of one stream name: the sample spacing readings declare (a serial device's
    HELLO rate, a BLE or simulator block's spacing) against each detector's `rate_hz`, which turns its
    `window_s` / `hop_s` into samples and is the time base of rate-dependent results (vibration
    velocity, RR and ECG timing). A 2000 Hz accelerometer read as 1000 Hz gave a false zone-C vibration
    alarm with no word (audit auddev, finding 5). One warning per (detector, declared rate) names
    `detectors.<id>.rate_hz`, the first device seen declaring it and both rates (a fleet of one model
    gets one line, not one per device); the verdicts go on (a limit on a vital
    sign is right at any rate, and a stopped detector would be a silent blind spot)."""

    def __init__(self, stream: str, rates: Sequence[tuple[str, float]]) -> None:
        self.stream = stream
        self._rates = rates  # (detector id, its rate_hz)
        self._looked: set[float] = set()  # spacings already compared
        self.told: set[tuple[str, float]] = set()  # (detector id, declared Hz) warned about
        self.calls = 0  # spacings new to a device stream: a few per device, not one per reading

    def declared(self, stream_id: str, period_s: float) -> None:
        """Readings of `stream_id` ("device/stream") declare samples `period_s` apart (> 0), another
        spacing than that stream's last one."""
        self.calls += 1
        if period_s in self._looked:
            return
        if len(self._looked) < MAX_RATES_KEPT:
            self._looked.add(period_s)
        device = device_name(stream_id.split("/", 1)[0])  # its pseudonym
        declared_hz = 1.0 / period_s
        for detector_id, rate_hz in self._rates:
            if rates_agree(declared_hz, rate_hz) or (detector_id, declared_hz) in self.told:
                continue
            self.told.add((detector_id, declared_hz))
            log.warning(
                'detectors.%s.rate_hz is %g Hz, but device %s declares %g Hz on stream "%s": the'
                " detector's windows and hops span other times than configured, and its rate-dependent"
                " results (vibration velocity, RR and ECG timing) are wrong, so its alarms may be false or"
                " missed; set detectors.%s.rate_hz = %g",
                detector_id,
                rate_hz,
                device,
                declared_hz,
                self.stream,
                detector_id,
                declared_hz,
            )


MAX_UNWATCHED_KEPT = 1_000  # device streams looked at; past it a new one is only counted


class UnwatchedStreams:
    """Readings of a stream name no detector watches, carrying a channel that detectors read on another
    stream: the device's data goes where the detectors do not look (a serial HELLO rate above 10 Hz
    names a waveform stream after the channels, `hr`, instead of `vitals`: review of 2026-11-30, finding
    3). One warning per device stream names the device (pseudonym), the stream its readings went to, and
    the detectors and stream that read those channels; `listed` keeps them for the status. A stream
    nobody watches whose channels no detector reads (an ECG kept for the beats) is no problem, nor is one
    the config says the device sends (`declared`: (device id, stream name) from `produces`; a wearable
    simulator's own ``rr`` beside the ``ecg_rr`` an `af` reads is unwatched by design)."""

    def __init__(
        self,
        read_on: dict[str, dict[str, list[str]]],
        pseudonym: Callable[[str], str],
        declared: set[tuple[str, str]] | None = None,
    ) -> None:
        self._read_on = read_on  # channel -> stream name -> detector ids that read it there
        self._pseudonym = pseudonym
        self._declared = declared or set()
        self._looked: set[str] = set()  # "device/stream" ids already looked at
        self.listed: dict[str, dict[str, list[str]]] = {}  # "pseudonym/stream" -> channels, watched_on

    def arrived(self, reading: Reading) -> None:
        """A reading of a stream name no detector watches (called for each: cheap after the first)."""
        if reading.stream in self._looked or len(self._looked) >= MAX_UNWATCHED_KEPT:
            return
        self._looked.add(reading.stream)
        read = [c for c in reading.channels if c in self._read_on]
        device_id, _, stream = reading.stream.partition("/")
        if not read or (device_id, stream) in self._declared:
            return
        where = sorted({s for c in read for s in self._read_on[c]})
        detectors = sorted({d for c in read for ids in self._read_on[c].values() for d in ids})
        self.listed[f"{self._pseudonym(device_id)}/{stream}"] = {"channels": read, "watched_on": where}
        log.warning(
            'device %s sends %s on stream "%s", which no detector watches; detector(s) %s read %s on stream'
            " %s, and see none of this device's: their alarms cannot come from it. A serial device's HELLO"
            " rate above 10 Hz makes a waveform stream named after its channels (docs/serial-protocol.md):"
            ' fix the firmware\'s rate, or point detectors.<id>.stream (and rate_hz) at "%s"',
            device_name(device_id),
            _names(reading.channels),
            stream,
            ", ".join(detectors),
            _names(read),
            ", ".join(f'"{s}"' for s in where),
            stream,
        )
