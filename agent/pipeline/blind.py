"""What each watched stream name has delivered of its detectors' channels: the run-time wiring lines and
the `channel_missing` technical alarm, from one tracker.

A detector binds to a stream name and channels by text (`agent.pipeline.wiring` checks them before start
where the devices' output is known). At run time a channel a detector reads (its sparse ones aside:
af's p_wave, ventricular_run's qrs_width) may not have come in any reading of its stream name yet. Two
cases, told apart by whether a device whose channels are known before start (`wiring.produces`: the
simulator, BLE profiles, CSV / JSON-lines serial and Modbus channel maps, the beats stage's) produces it
on that stream name:

- *Late* (a known device produces it: a BLE profile that has not reported yet, its channel left out of
  the row until it does; an oximeter sharing the stream that connects later). One WARNING per
  (detector, stream name, channel) at the stream name's first readings, naming the three, never a device
  or a value; `profile_silent` tells a profile gone silent.
- *Missing* (no known device produces it: a serial HELLO or a replay's recording declares channels only
  at run time). A serial frame device declaring acc_x, acc_y, acc_z under a detector reading `acc_w` (one
  typo) was accepted by check-config, and 4.0 mm/s for 52 s gave no alarm of any kind, one WARNING and a
  line in `status` (new-user review S3): a blind spot must reach the back end like any other loss of
  monitoring. Each device stream of the name is *blind* for the detector: one ERROR per (detector,
  channel, stream name) names the config key to fix and the device by its pseudonym only, and the
  session (`agent.session`) raises `channel_missing` on the device stream once it has been blind for
  `GRACE_S` from the first reading that showed it (a second device may still bring the channel).

Either way the (detector, channel) is listed for the status (`missing_channels`) until a reading of the
stream name, from any device, brings the channel: one INFO line then, and the alarm ends at its next
check (a reload with a fixed config makes a new session whose tracker finds the device's first
readings fine and steps the restored episode to its end). A channel that has arrived once is no wiring
problem: rows without it later (a stale BLE thermometer, a second kind of device) are neither warned
about, listed nor blind. The alarm's priority is the highest of MEDIUM and the priorities of the blinded
detectors' alarm rules (what it keeps from being monitored), raised further by open episodes it leaves
unjudged (`technical.blinding`).

Cost: `saw` takes a stream name's readings a batch at a time (`Pipeline.ingest`). Until the name has had
every channel its detectors need, a look-up and a tuple comparison a reading, and work only when a
device stream's channels change; after, one set look-up a reading in C (a new device stream's row).
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
# The late-channel lines keep the logger they were born under: docs and tools/evaluate filter on it.
wiring_log = logging.getLogger("agent.pipeline.wiring")

CONDITION = "channel_missing"
GRACE_S = 10.0  # blind this long (from the first reading that shows it) before the alarm starts


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
    """What each watched stream name's readings have delivered of its detectors' channels: the late ones
    warned about, the missing ones' blind device streams (see the module docstring), fed batch by batch."""

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
        self._last: dict[str, tuple[str, ...]] = {}  # watched "device/stream" -> its last readings' channels
        self._settled: set[str] = set()  # stream names that have had every channel their detectors need
        self._carried: dict[str, set[str]] = {}  # watched "device/stream" -> channels it has had
        self._arrived: dict[str, set[str]] = {}  # stream name -> channels any of its readings had
        self._ids: dict[str, list[str]] = {}  # stream name -> its "device/stream" ids seen
        self._since: dict[str, float] = {}  # "device/stream" -> monotonic time it became blind
        self._told: set[tuple[str, str, str]] = set()  # (detector, channel, stream name) logged
        self.refs: dict[str, StreamRef] = {}  # watched "device/stream" -> its alarm row
        self.blind: dict[str, list[Blind]] = {}  # watched "device/stream" -> what blinds it now

    def watches(self, stream: str) -> bool:
        """Whether some detector watches stream name `stream` (a row there can be stepped)."""
        return stream in self._watchers

    def saw(self, name: str, readings: Sequence[Reading]) -> None:
        """A batch of readings of watched stream name `name`, in arrival order. Once the name has had
        every channel its detectors need nothing can be late, missing or blind there any more: only a
        device stream new to the tracker counts (its alarm row), found by one set look-up a reading in
        C. Before, each reading whose channels differ from its device stream's last ones is looked at,
        at its place in the batch (the alarm's timing is that of the first reading that shows it)."""
        carried = self._carried
        if name in self._settled:
            if all(map(carried.__contains__, [r.stream for r in readings])):
                return
            for reading in readings:
                if reading.stream not in carried:
                    self._looked(name, reading)
            return
        last = self._last
        for reading in readings:
            before = last.get(reading.stream)
            if before is not None and (before is reading.channels or before == reading.channels):
                continue
            last[reading.stream] = reading.channels
            self._looked(name, reading)

    def _looked(self, name: str, reading: Reading) -> None:
        sid, channels = reading.stream, reading.channels
        watchers = self._watchers[name]
        carried = self._carried.get(sid)
        if carried is None:
            self.refs[sid] = StreamRef(self._pseudonym(reading.device), name)
            self._ids.setdefault(name, []).append(sid)
            carried = self._carried[sid] = set()
        elif carried.issuperset(channels):  # a layout it had before (BLE rows with and without a profile)
            return
        carried.update(channels)
        first = name not in self._arrived  # the stream name's first readings
        arrived = self._arrived.setdefault(name, set())
        fresh = set(channels) - arrived
        arrived |= fresh
        if self._needed[name] <= arrived:
            self._settled.add(name)
        missing = self._needed[name] - arrived - self._known.get(name, set())
        if missing != self._missing.get(name):  # a channel arrived (or first sight): every stream anew
            self._missing[name] = missing
            for other in self._ids[name]:
                self._judge(other, name, watchers, missing, reading.monotonic)
        else:
            self._judge(sid, name, watchers, missing, reading.monotonic)
        if first:
            self._tell_late(name, watchers, channels)
        elif fresh:
            self._tell_arrived(name, watchers, fresh)

    def _tell_late(self, name: str, watchers: list[_Watcher], channels: tuple[str, ...]) -> None:
        """The first readings of stream name `name` came with `channels`: one WARNING per (detector,
        channel) they lack that a known device produces there (the others are blind: told at ERROR by
        `_judge`). Only names from the configuration and the readings' channel names are logged."""
        known = self._known.get(name, set())
        for watcher in watchers:
            for channel in dict.fromkeys(watcher.channels):  # a channel listed twice is told once
                if channel in channels or channel not in known:
                    continue
                wiring_log.warning(
                    'detector %s watches channel "%s" of stream "%s", but readings of that stream have not'
                    " had it yet (their channels: %s): the detector sees it as missing, and cannot alarm on"
                    " it, until it arrives (a device or BLE profile slower than the stream may not have"
                    " reported yet; a line tells when it arrives). If it never does, check"
                    " detectors.%s.channels against the device",
                    watcher.detector,
                    channel,
                    name,
                    ", ".join(sorted(channels)) or "none",
                    watcher.detector,
                )

    @staticmethod
    def _tell_arrived(name: str, watchers: list[_Watcher], fresh: set[str]) -> None:
        """Channels `fresh` came for the first time in a reading of `name`, after its first ones: each
        was listed as missing for the detectors that read it (late or blind); one INFO line each."""
        for watcher in watchers:
            for channel in dict.fromkeys(watcher.channels):
                if channel in fresh:
                    wiring_log.info(
                        'channel "%s" of stream "%s" arrived: detector %s sees it from now on',
                        channel,
                        name,
                        watcher.detector,
                    )

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

    def missing_channels(self) -> dict[str, list[str]]:
        """Detector id -> its channels that no reading of its stream name has had since the first ones
        came (late or blind: each logged once). Empty when every detector has had all its channels."""
        out: dict[str, list[str]] = {}
        for name, watchers in self._watchers.items():
            arrived = self._arrived.get(name)
            if arrived is None:  # no reading yet: nothing told
                continue
            pairs = {(w.detector, c) for w in watchers for c in w.channels if c not in arrived}
            for detector, channel in sorted(pairs):
                out.setdefault(detector, []).append(channel)
        return out

    def listed(self) -> dict[str, list[str]]:
        """ "pseudonym/stream" -> what blinds it, for `status` (blind streams only)."""
        return {
            f"{self.refs[sid].device_pseudonym}/{self.refs[sid].stream}": [b.text() for b in blind]
            for sid, blind in self.blind.items()
            if blind
        }
