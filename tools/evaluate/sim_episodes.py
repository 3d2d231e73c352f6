"""Simulated pumps with injected faults: per alarm rule, which episodes it caught, how late, and how often
it fired outside them.

Each pump (one seed each) runs `hours` with bearing_wear and temperature_drift episodes alternating: the
first starts after one hour (the baseline a calibration table or a window_pca adaptation learns on), each
lasts `episode_s`, and one hour of normal running separates them; an episode that would not end inside
the run is left out. An episode counts as detected by a rule when one of that rule's alarm starts
(detection time) falls inside the episode or within `grace_s` after its end (the fault is repaired at
its end, so a later start is not credited); the delay is from the episode's start to that first start.
Every other start of the rule is a false alarm, per hour of the time outside those credited spans.
Only rules whose detector reads a stream the pump produces ("machine") are reported.

With `stops`, each pump is also switched off (the simulator's "stopped" episode, no fault: a standby pump,
a duty rotation) for 15 min inside its first hour, where the rules learn (the first fault then comes 20
min later, after an hour of running), and for 20 min in every hour
between faults, 15 min after the fault's end; the pump's operating-state gate (`running_when`) is taken
from the config's equipment device, if it has one. Stops are not faults: a start during one is false.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from agent.config.schema import AgentConfig, DeviceConfig, EpisodeConfig, SimulatorConfig
from agent.events import AlarmEvent, AlarmKind, Phase
from agent.pipeline import Pipeline
from agent.simulation import GroundTruth, simulate
from tools.evaluate.datasets import T0
from tools.evaluate.report import table

FAULTS = ("bearing_wear", "temperature_drift")
LEARNING_STOP = (600.0, 900.0)  # start and length of the stop inside the first hour, s
LEARNING_SETTLE_S = 300.0  # with the learning stop: room for a gate's settling before the first fault
GAP_STOP = (900.0, 1200.0)  # after a fault's end: start and length of the stop between faults, s
LEAD_S = 3600.0  # normal running before the first episode
GAP_S = 3600.0  # normal running between episodes
PUMP_STREAM = "machine"


def pump_episodes(hours: float, episode_s: float, stops: bool = False) -> tuple[EpisodeConfig, ...]:
    """bearing_wear and temperature_drift alternating, as the module docstring lays them out (with
    `stops`, the pump's stops among them)."""
    episodes: list[EpisodeConfig] = []
    start = LEAD_S + (LEARNING_STOP[1] + LEARNING_SETTLE_S if stops else 0.0)  # an hour of running first
    while start + episode_s <= hours * 3600.0:
        episodes.append(EpisodeConfig(FAULTS[len(episodes) % 2], start, episode_s))
        start += episode_s + GAP_S
    if not stops:
        return tuple(episodes)
    halts = [EpisodeConfig("stopped", *LEARNING_STOP)]
    for fault in episodes:
        begin = fault.start_s + fault.duration_s + GAP_STOP[0]
        if begin + GAP_STOP[1] <= hours * 3600.0:
            halts.append(EpisodeConfig("stopped", begin, GAP_STOP[1]))
    return tuple(episodes) + tuple(halts)


@dataclass(slots=True)
class RuleTally:
    """One alarm rule over all pumps: delays per fault (None = missed) and starts outside episodes."""

    delays: dict[str, list[float | None]] = field(default_factory=lambda: {f: [] for f in FAULTS})
    false_starts: int = 0
    outside_hours: float = 0.0

    def add(
        self, starts: Sequence[float], truth: Sequence[GroundTruth], span: tuple[float, float], grace_s: float
    ) -> None:
        times = np.sort(np.asarray(starts, dtype=np.float64))
        credited = np.zeros(times.size, dtype=bool)
        covered = 0.0
        for g in truth:
            hi = min(g.end + grace_s, span[1])
            inside = (times >= g.start) & (times <= hi)
            credited |= inside
            covered += hi - g.start
            self.delays.setdefault(g.condition, []).append(
                float(times[inside][0] - g.start) if inside.any() else None
            )
        self.false_starts += int((~credited).sum())
        self.outside_hours += (span[1] - span[0] - covered) / 3600.0

    def row(self, fault: str) -> tuple[str, str, str]:
        found = [d for d in self.delays.get(fault, []) if d is not None]
        total = len(self.delays.get(fault, []))
        if not found:
            return f"{len(found)}/{total}", "-", "-"
        return f"{len(found)}/{total}", f"{np.median(found):.0f}", f"{max(found):.0f}"


def pump_rules(config: AgentConfig) -> list[str]:
    """Conditions of the alarm rules whose detector reads the pump's stream, in configuration order."""
    streams = {d.id: d.stream for d in config.detectors}
    return [a.condition for a in config.alarms if streams.get(a.detector) == PUMP_STREAM]


def alarm_starts(events: Sequence[AlarmEvent]) -> dict[str, list[float]]:
    """Detection times of the non-technical alarm starts, per condition."""
    out: dict[str, list[float]] = {}
    for e in events:
        if e.phase is Phase.START and e.kind is not AlarmKind.TECHNICAL:
            out.setdefault(e.condition, []).append(e.detection_time)
    return out


def evaluate_pumps(
    config: AgentConfig,
    seeds: Sequence[int],
    hours: float,
    episode_s: float,
    grace_s: float,
    *,
    stops: bool = False,
) -> dict[str, RuleTally]:
    """Run every seed's pump with episodes through the pipeline; one tally per pump rule."""
    episodes = pump_episodes(hours, episode_s, stops)
    gate = next((d.running_when for d in config.devices if d.kind == "equipment"), None)
    tallies = {rule: RuleTally() for rule in pump_rules(config)}
    for seed in seeds:
        device = DeviceConfig(
            f"equipment-{seed}",
            "equipment",
            "simulator",
            simulator=SimulatorConfig(seed=seed, episodes=episodes),
            running_when=gate if stops else None,
        )
        pumps = replace(config, devices=(device,))
        readings, everything = simulate(device, hours * 3600.0, T0)
        truth = [g for g in everything if g.condition in FAULTS]
        starts = alarm_starts(Pipeline(pumps, lambda d: d).ingest(readings))
        for rule, tally in tallies.items():
            tally.add(starts.get(rule, []), truth, (T0, T0 + hours * 3600.0), grace_s)
    return tallies


def report(
    config_name: str,
    tallies: dict[str, RuleTally],
    seeds: Sequence[int],
    hours: float,
    episode_s: float,
    grace_s: float,
    *,
    stops: bool = False,
) -> str:
    rows = []
    for rule, t in tallies.items():
        wear, drift = t.row("bearing_wear"), t.row("temperature_drift")
        per_hour = t.false_starts / t.outside_hours if t.outside_hours else float("nan")
        rows.append((rule, *wear, *drift, t.false_starts, f"{t.outside_hours:.2f}", f"{per_hour:.3f}"))
    layout = ", ".join(
        f"{e.condition} at {e.start_s / 60:g} min" for e in pump_episodes(hours, episode_s, stops)
    )
    return "\n".join(
        [
            f"# Simulator, pumps with injected episodes — `{config_name}`",
            "",
            f"{len(seeds)} pump(s) (seeds {seeds[0]}..{seeds[-1]}), {hours:g} h each; episodes of "
            f"{episode_s:g} s: {layout}. Detected: an alarm start inside the episode or within "
            f"{grace_s:g} s after its end; delay from the episode's start.",
            "",
            table(
                [
                    "rule",
                    "bearing_wear detected",
                    "median delay s",
                    "max delay s",
                    "temperature_drift detected",
                    "median delay s",
                    "max delay s",
                    "false starts",
                    "hours outside",
                    "false per hour",
                ],
                rows,
            ),
        ]
    )
