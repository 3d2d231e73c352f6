"""Operating state of gated machines: a machine switched off is not an anomaly.

A device with `running_when = {channel, above, settle_s}` counts as running while that channel (motor
current, shaft speed) is above `above`. Its streams are judged only on windows taken wholly while it ran,
after `settle_s` of running: while it is off or settling its detectors are not called for it (no verdict,
nothing learnt: a window_pca adaptation or a live calibration waits for running data), and its alarm
books get the hop as no verdict, so an open episode is held, neither ended as a recovery nor raised anew.
Learned models of a running machine (vibration against current, bearing temperature against load) see a
stopped one as far outside their normal: without this gate a stop raised `equipment_anomaly` on every hop.

State per stream slot, as a count of running samples since the last observed start: 0 while off, infinite
for a machine found running (a gateway restart does not wait `settle_s` again). It is brought up to date
at each flush from the gate channel's samples that arrived since the last one; a missing sample (NaN)
keeps the state it had. Counting samples rather than seconds follows the windows, which are samples too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.alarms import StreamRef
from agent.config.schema import RunningWhenConfig
from agent.events import iso_time
from agent.logs import device_name
from agent.pipeline.windows import StreamWindows
from agent.readings import FloatArray

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

log = logging.getLogger(__name__)


class RunningStates:
    """Per stream slot of one stream name: its device's gate (if any) and whether the machine runs."""

    def __init__(
        self, channels: Sequence[str], gates: Mapping[str, RunningWhenConfig], period_s: float
    ) -> None:
        self._channels = tuple(channels)
        self._gates = dict(gates)  # device id -> its gate
        self._period_s = period_s
        self._column = np.zeros(0, np.int64)  # the gate channel's column; -1: not gated
        self._above = np.zeros(0)
        self._settle = np.zeros(0)  # samples of running before its windows are judged
        self._on = np.zeros(0)  # running samples since the last start; 0 off, inf found running
        self._changed = np.zeros(0)  # wall time of the last start or stop, NaN: none seen
        self._names: list[str] = []  # each slot's stream as log lines name it ("<pseudonym>/stream")
        self.pending = np.zeros(0, np.int64)  # samples written since the last `update`

    def add_slot(self, slot: int, stream: str) -> None:
        size = self._column.shape[0]
        if slot >= size:  # grow geometrically, as the stream pipeline's own counters do
            grow = max(8, size, slot + 1 - size)
            self._column = np.concatenate([self._column, np.full(grow, -1, np.int64)])
            self._above = np.concatenate([self._above, np.zeros(grow)])
            self._settle = np.concatenate([self._settle, np.zeros(grow)])
            self._on = np.concatenate([self._on, np.full(grow, np.inf)])
            self._changed = np.concatenate([self._changed, np.full(grow, np.nan)])
            self.pending = np.concatenate([self.pending, np.zeros(grow, np.int64)])
        while len(self._names) <= slot:
            self._names.append("")
        device, _, name = stream.partition("/")
        self._names[slot] = f"{device_name(device)}/{name}"  # never the configured device id
        gate = self._gates.get(device)
        if gate is not None and gate.channel in self._channels:
            self._column[slot] = self._channels.index(gate.channel)
            self._above[slot] = gate.above
            self._settle[slot] = math.ceil(gate.settle_s / self._period_s - 1e-9)

    def update(self, windows: StreamWindows, end_times: FloatArray) -> None:
        """Step the state of every gated slot over its samples written since the last call (the newest
        of `windows`; `end_times` per slot: its newest sample's wall time)."""
        slots = np.flatnonzero((self.pending > 0) & (self._column >= 0))
        if slots.size == 0:
            self.pending[:] = 0
            return
        counts = np.minimum(self.pending[slots], windows.window)
        self.pending[:] = 0
        for count in np.unique(counts).tolist():
            group = slots[counts == count]
            samples = windows.windows(group, count)
            for row, slot in enumerate(group.tolist()):
                self._step(slot, samples[row, :, self._column[slot]], float(end_times[slot]))

    def _step(self, slot: int, samples: FloatArray, end_time: float) -> None:
        count = len(samples)
        known = np.flatnonzero(~np.isnan(samples))
        before = float(self._on[slot])
        if known.size == 0:  # nothing to tell by: the state goes on
            self._on[slot] = before + count if before > 0 else 0.0
            return
        running = samples[known] > self._above[slot]
        stops = known[~running]
        if stops.size:
            after = known[known > stops[-1]]
            on = float(count - after[0]) if after.size else 0.0
        elif before > 0:
            on = before + count
        else:
            on = float(count - known[0])
        self._on[slot] = on
        if (before > 0) != (on > 0):
            self._changed[slot] = end_time - max(on - 1, 0) * self._period_s
            self._tell(slot, float(samples[known[-1]]), on > 0)

    def _tell(self, slot: int, value: float, started: bool) -> None:
        channel = self._channels[int(self._column[slot])]
        above = float(self._above[slot])
        if started:
            settle_s = float(self._settle[slot]) * self._period_s
            log.info(
                "%s: machine running (%s %.4g above %.4g): its rules judge it again after %.0f s of settling",
                self._names[slot],
                channel,
                value,
                above,
                settle_s,
            )
        else:
            log.info(
                "%s: machine stopped (%s %.4g, not above %.4g): its rules give no verdict and learn"
                " nothing until it runs again (open alarms are held)",
                self._names[slot],
                channel,
                value,
                above,
            )

    def blocked(self, slots: IntArray, length: int) -> BoolArray:
        """Which of `slots` get no verdict on a block of their newest `length` samples: gated, and not
        running for the settling time plus the whole block."""
        gated = self._column[slots] >= 0
        out: BoolArray = gated & (self._on[slots] < self._settle[slots] + length)
        return out

    @property
    def gated(self) -> bool:
        return bool((self._column >= 0).any())

    def status(self, refs: Sequence[StreamRef]) -> dict[str, dict[str, Any]]:
        """For `edge-agent status` and the heartbeat: each gated stream seen, by "pseudonym/stream", with
        its state (off, settling, running), the time of its last start or stop ("since", None: none seen)
        and, while settling, the seconds of running left before it is judged ("settle_left_s"). A word
        and times only: never the gate channel's value."""
        out: dict[str, dict[str, Any]] = {}
        for slot in np.flatnonzero(self._column >= 0).tolist():
            if slot >= len(refs):
                continue
            on, settle = float(self._on[slot]), float(self._settle[slot])
            state = "off" if on <= 0 else "settling" if on < settle else "running"
            changed = float(self._changed[slot])
            ref = refs[slot]
            entry: dict[str, Any] = {
                "state": state,
                "since": iso_time(changed) if math.isfinite(changed) else None,
            }
            if state == "settling":
                entry["settle_left_s"] = round((settle - on) * self._period_s, 1)
            out[f"{ref.device_pseudonym}/{ref.stream}"] = entry
        return out
