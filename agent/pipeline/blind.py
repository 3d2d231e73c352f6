"""A detector blinded by a channel its device does not send: the `channel_missing` technical alarm.

A serial frame device declares its channels in its HELLO; check-config cannot know them, so a detector
reading `channels = ["acc_x", "acc_y", "acc_w"]` (one typo) from a device sending acc_x, acc_y, acc_z
was accepted, the detector saw acc_w as missing and judged nothing: 4.0 mm/s for 52 s gave no alarm of
any kind, one WARNING at start and a line in `status` (new-user review S3). A blind spot must reach
the back end like any other loss of monitoring.

The rule, per device stream (device, stream name) whose stream name a detector watches: it is *blind*
for a detector while a channel the detector reads (its sparse ones aside: af's p_wave) has arrived in
no reading of that stream name since the session started, from any device, and no device whose
channels are known before start (`wiring.produces`: the simulator, BLE profiles, CSV / JSON-lines
serial and Modbus channel maps) produces it on that stream name. So it concerns the devices that
declare their channels at run time (a serial HELLO, a replay's recording), whose readings carry what
they declared from the first one. A known device's channel that is only late (a BLE profile that has
not reported yet) is no wiring problem (`profile_silent` tells a profile gone silent), check-config
refuses a channel no known device produces when no run-time device is configured, and a stream name
two kinds of device share, one of them sending the channel, is none either (`wiring.MissingChannels`).

The alarm (`agent.session`): condition `channel_missing` on the device stream, raised once it has been
blind for `GRACE_S` (a second device may still bring the channel), ended as soon as it is not: the
channel arrives, or a reload with a fixed config makes a new session whose tracker finds the device's
first readings fine and steps the restored episode to its end. Its priority is the highest of MEDIUM
and the priorities of the blinded detectors' alarm rules (what it keeps from being monitored), raised
further by open episodes it leaves unjudged (`technical.blinding`). Each (detector, channel, stream
name) is logged once at ERROR, naming the config key to fix and the device by its pseudonym only.

Cost: one dictionary look-up and a tuple comparison per reading (`saw`); the work is done only when a
device stream brings a channel tuple other than its last one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.alarms import StreamRef
from agent.config.schema import AgentConfig
from agent.detectors.base import Detector, sparse_channels
from agent.ecg.rr_from_ecg import CHANNELS as RR_CHANNELS
from agent.events import Priority
from agent.logs import device_name
from agent.pipeline.wiring import did_you_mean, produces
from agent.readings import Reading

log = logging.getLogger(__name__)

CONDITION = "channel_missing"
GRACE_S = 10.0  # blind this long (from the first reading that shows it) before the alarm starts
MAX_STREAMS_KEPT = 10_000  # device streams remembered; past it a new unwatched one is looked at each time


@dataclass(frozen=True, slots=True)
class _Watcher:
    detector: str
    index: int  # its place among [[detectors]]
    channels: tuple[str, ...]  # the channels it needs on every reading (sparse ones left out)
    priority: Priority  # the highest of its alarm rules' (MEDIUM when it has none)


@dataclass(frozen=True, slots=True)
class Blind:
    """One channel a detector reads that a device stream does not carry."""

    detector: str
    index: int
    channel: str
    sends: tuple[str, ...]  # the channels the device stream's readings carried, sorted

    @property
    def key(self) -> str:
        return f"detectors.{self.detector}.channels"

    def text(self) -> str:
        """What the alarm and `status` say: the detector, the channel, what the device sends instead."""
        return (
            f'detector {self.detector} reads channel "{self.channel}", which the device does not send'
            f" (it sends {', '.join(self.sends) or 'no channel'}){did_you_mean(self.channel, self.sends)}:"
            f" the detector cannot judge the stream; fix {self.key}"
        )


class BlindDetectors:
    """The device streams blinded for a detector (see the module docstring), fed every reading."""

    def __init__(
        self, config: AgentConfig, detectors: Sequence[Detector], pseudonym: Callable[[str], str]
    ) -> None:
        highest: dict[str, Priority] = {}
        for rule in config.alarms:
            now = highest.get(rule.detector, Priority.MEDIUM)
            highest[rule.detector] = rule.priority if rule.priority.rank < now.rank else now
        self._watchers: dict[str, list[_Watcher]] = {}
        for index, (spec, detector) in enumerate(zip(config.detectors, detectors, strict=True)):
            sparse = sparse_channels(detector)
            needed = tuple(c for c in detector.channels if c not in sparse)
            priority = highest.get(spec.id, Priority.MEDIUM)
            self._watchers.setdefault(spec.stream, []).append(_Watcher(spec.id, index, needed, priority))
        # stream name -> the channels its detectors need; -> those of them missing there (see `_looked`)
        self._needed = {name: {c for w in ws for c in w.channels} for name, ws in self._watchers.items()}
        self._missing: dict[str, set[str]] = {}
        self._known: dict[str, set[str]] = {}  # stream name -> channels known devices produce there
        for device in config.devices:
            for name, channels in produces(device).streams.items():
                self._known.setdefault(name, set()).update(channels)
            if device.beats is not None:  # the gateway's own ECG -> RR stage, whatever the transport: its
                # optional channels come late (qrs_shape once its templates are made), never missing
                self._known.setdefault(device.beats.rr_stream, set()).update(RR_CHANNELS)
        self._pseudonym = pseudonym
        self._last: dict[str, tuple[str, ...]] = {}  # "device/stream" -> its last readings' channels
        self._carried: dict[str, set[str]] = {}  # watched "device/stream" -> channels it has had
        self._arrived: dict[str, set[str]] = {}  # stream name -> channels any of its readings had
        self._ids: dict[str, list[str]] = {}  # stream name -> its "device/stream" ids seen
        self._since: dict[str, float] = {}  # "device/stream" -> monotonic time it became blind
        self._told: set[tuple[str, str, str]] = set()  # (detector, channel, stream name) logged
        self.refs: dict[str, StreamRef] = {}  # watched "device/stream" -> its alarm row
        self.blind: dict[str, list[Blind]] = {}  # watched "device/stream" -> what blinds it now

    def known(self, stream: str) -> frozenset[str]:
        """The channels devices known before start produce on stream name `stream`."""
        return frozenset(self._known.get(stream, ()))

    def watches(self, stream: str) -> bool:
        """Whether some detector watches stream name `stream` (a row there can be stepped)."""
        return stream in self._watchers

    def saw(self, reading: Reading) -> None:
        """One reading (called for every one: a look-up unless its channels changed)."""
        last = self._last.get(reading.stream)
        if last is not None and (last is reading.channels or last == reading.channels):
            return
        self._looked(reading)

    def _looked(self, reading: Reading) -> None:
        sid, channels = reading.stream, reading.channels
        device, _, name = sid.partition("/")
        watchers = self._watchers.get(name)
        if watchers is None:
            if len(self._last) < MAX_STREAMS_KEPT:
                self._last[sid] = channels
            return
        self._last[sid] = channels
        carried = self._carried.get(sid)
        if carried is None:
            self.refs[sid] = StreamRef(self._pseudonym(device), name)
            self._ids.setdefault(name, []).append(sid)
            carried = self._carried[sid] = set()
        elif carried.issuperset(channels):  # a layout it had before (BLE rows with and without a profile)
            return
        carried.update(channels)
        arrived = self._arrived.setdefault(name, set())
        arrived.update(channels)
        missing = self._needed[name] - arrived - self._known.get(name, set())
        if missing != self._missing.get(name):  # a channel arrived (or first sight): every stream anew
            self._missing[name] = missing
            for other in self._ids[name]:
                self._judge(other, name, watchers, missing, reading.monotonic)
        else:
            self._judge(sid, name, watchers, missing, reading.monotonic)

    def _judge(self, sid: str, name: str, watchers: list[_Watcher], missing: set[str], now: float) -> None:
        """Judge device stream `sid` of stream name `name`, given the channels `missing` there."""
        if not missing:
            self.blind[sid] = []
            self._since.pop(sid, None)
            return
        sends = tuple(sorted(self._carried[sid]))
        blind = [
            Blind(w.detector, w.index, channel, sends)
            for w in watchers
            for channel in w.channels
            if channel in missing
        ]
        self.blind[sid] = blind
        self._since.setdefault(sid, now)
        for item in blind:
            told = (item.detector, item.channel, name)
            if told in self._told:
                continue
            self._told.add(told)
            log.error(
                'detector %s reads channel "%s" of stream "%s", but device %s does not send it%s (its'
                " readings there carry %s): the detector"
                " cannot judge that stream, and technical alarm %s starts after %.0f s; fix %s"
                " (the [[detectors]] entry #%d, counted from 0) and reload",
                item.detector,
                item.channel,
                name,
                device_name(sid.partition("/")[0]),
                did_you_mean(item.channel, item.sends),
                ", ".join(item.sends) or "no channel",
                CONDITION,
                GRACE_S,
                item.key,
                item.index,
            )

    def check(self, now: float) -> tuple[list[StreamRef], list[float], list[float]]:
        """(rows, seconds blind, limit) of every watched device stream seen, at monotonic time `now`."""
        refs = list(self.refs.values())
        values = [now - self._since[sid] if sid in self._since else 0.0 for sid in self.refs]
        return refs, values, [GRACE_S] * len(refs)

    def of(self, ref: StreamRef) -> list[Blind]:
        """What blinds device stream `ref` now (empty: nothing)."""
        return next((self.blind.get(sid, []) for sid, r in self.refs.items() if r == ref), [])

    def priority(self, ref: StreamRef) -> Priority:
        """The highest of MEDIUM and the rules of the detectors blinded on `ref`."""
        ids = {b.detector for b in self.of(ref)}
        found = [w.priority for ws in self._watchers.values() for w in ws if w.detector in ids]
        return min([Priority.MEDIUM, *found], key=lambda p: p.rank)

    def listed(self) -> dict[str, list[str]]:
        """ "pseudonym/stream" -> what blinds it, for `status` (blind streams only)."""
        return {
            f"{self.refs[sid].device_pseudonym}/{self.refs[sid].stream}": [b.text() for b in blind]
            for sid, blind in self.blind.items()
            if blind
        }
