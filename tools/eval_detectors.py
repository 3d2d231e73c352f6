"""Detection quality of the statistical detectors + alarm rules on simulated wearables with ground truth.

    python -m tools.eval_detectors [--devices 20] [--hours 2]

Each simulated wearable (its own seed) gets one episode of each condition at seeded random times, with
quiet stretches between. The 1 Hz vitals are gridded to one sample per second (NaN where missing or flagged,
as the pipeline's quality gate does) and fed, all devices at once, through detectors built by
`build_detector` and `AlarmBook`s. The change detectors are calibrated first on separate, episode-free
devices at a target of 1 score exceedance per hour. For each rule it prints: episodes detected out of the
injected ones it targets, median and worst delay from the true start to the START event, and false episodes
per hour (START events overlapping no targeted truth episode, 60 s of slack either side).
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.alarms import AlarmBook, StreamRef
from agent.config.schema import AlarmRuleConfig, DetectorConfig, DeviceConfig, EpisodeConfig, SimulatorConfig
from agent.detectors import StreamingDetector, WindowBlock, build_detector
from agent.events import AlarmEvent, AlarmKind, Phase
from agent.simulation import GroundTruth, simulate

T0 = 1_800_000_000.0
CHANNELS = ("hr", "spo2", "skin_temp")
CONDITIONS = ("tachycardia", "bradycardia", "spo2_desaturation", "stuck_sensor", "dropout", "contact_loss")
SLACK_S = 60.0


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    type: str
    channels: tuple[str, ...]
    params: dict[str, Any]
    targets: tuple[str, ...]  # truth conditions this rule should catch
    kind: AlarmKind = AlarmKind.PHYSIOLOGICAL
    calibrate: bool = False
    rule: dict[str, Any] = field(default_factory=dict)


CASES = (
    Case("hr_high", "limit", ("hr",), {"above": 120}, ("tachycardia",), rule={"hysteresis": 5.0}),
    Case("hr_low", "limit", ("hr",), {"below": 45}, ("bradycardia",), rule={"hysteresis": 5.0}),
    Case("spo2_low", "limit", ("spo2",), {"below": 90}, ("spo2_desaturation",), rule={"hysteresis": 1.0}),
    Case(
        "spo2_below_93", "limit", ("spo2",), {"below": 93}, ("spo2_desaturation",), rule={"hysteresis": 1.0}
    ),
    Case("spo2_ewma", "ewma", ("spo2",), {"window_s": 120.0}, ("spo2_desaturation",), calibrate=True),
    Case(
        "hr_robust_z",
        "robust_z",
        ("hr",),
        {"window_s": 120.0},
        ("tachycardia", "bradycardia"),
        calibrate=True,
    ),
    Case("hr_ewma", "ewma", ("hr",), {"window_s": 120.0}, ("tachycardia", "bradycardia"), calibrate=True),
    Case("hr_cusum", "cusum", ("hr",), {"window_s": 120.0}, ("tachycardia", "bradycardia"), calibrate=True),
    Case(
        "stuck",
        "flatline",
        CHANNELS,
        {"window_s": 60.0, "epsilon": {"hr": 0.5, "spo2": 0.5, "skin_temp": 0.005}},
        ("stuck_sensor",),
        AlarmKind.TECHNICAL,
        calibrate=True,
    ),
    Case("blind", "dropout", CHANNELS, {"window_s": 30.0}, ("dropout", "contact_loss"), AlarmKind.TECHNICAL),
)


def device(seed: int, hours: float, episodes: bool) -> DeviceConfig:
    rng = np.random.default_rng(seed)
    span = hours * 3600.0
    slots = np.linspace(600.0, span - 600.0, len(CONDITIONS))  # one episode per slot, jittered
    planned = tuple(
        EpisodeConfig(c, float(s + rng.uniform(-120, 120)), float(rng.uniform(60, 180)))
        for c, s in zip(rng.permutation(CONDITIONS), slots, strict=True)
    )
    sim = SimulatorConfig(seed=seed, speed=0.0, episodes=planned if episodes else ())
    return DeviceConfig(f"w{seed}", "wearable", "simulator", simulator=sim)


def grid(seeds: list[int], hours: float, episodes: bool) -> tuple[np.ndarray, np.ndarray, list[GroundTruth]]:
    """(S, T, 3) vitals at 1 Hz with NaN where missing or flagged, (S, T) quality OK, and the truth."""
    total = int(hours * 3600)
    values = np.full((len(seeds), total, len(CHANNELS)), np.nan)
    good = np.zeros((len(seeds), total), dtype=bool)
    truth: list[GroundTruth] = []
    for i, seed in enumerate(seeds):
        readings, gt = simulate(device(seed, hours, episodes), hours * 3600.0, T0)
        truth += gt
        for r in readings:
            if r.stream.endswith("/vitals"):
                k = round(r.wall_time - T0)
                if 0 <= k < total:
                    good[i, k] = not r.quality
                    values[i, k] = r.values[0] if not r.quality else np.nan
    return values, good, truth


def build(case: Case) -> StreamingDetector:
    return build_detector(
        DetectorConfig(case.name, case.type, "vitals", case.channels, params=case.params), 1.0
    )


def run(
    case: Case, detector: StreamingDetector, names: list[str], values: np.ndarray, good: np.ndarray
) -> list[AlarmEvent]:
    columns = [CHANNELS.index(c) for c in case.channels]
    data = values[:, :, columns]
    n, total, _ = data.shape
    rule = AlarmRuleConfig(condition=case.name, detector=case.name, kind=case.kind, **case.rule)
    book = AlarmBook(rule, "eval", "", case.channels)
    refs = [StreamRef(name, "vitals") for name in names]
    events: list[AlarmEvent] = []
    for end in range(detector.window, total + 1, detector.hop):  # the pipeline scores full windows only
        window = np.ascontiguousarray(data[:, end - detector.window : end])
        t = np.full(n, T0 + end - 1)
        scores = detector.score(WindowBlock(window, np.arange(n), t, detector.hop))
        ok: np.ndarray = np.all(good[:, end - detector.hop : end], axis=1)
        events += book.update(refs, scores, t, ok, ["ok" if q else "poor" for q in ok])
    return events


def near(event: AlarmEvent, truth: GroundTruth) -> bool:
    return event.device == truth.device and truth.start - SLACK_S <= event.onset_time <= truth.end + SLACK_S


def score(case: Case, events: list[AlarmEvent], truth: list[GroundTruth], device_hours: float) -> str:
    targets = [g for g in truth if g.condition in case.targets]
    starts = [e for e in events if e.phase is Phase.START]
    delays = []
    for g in targets:
        hits = [e.detection_time for e in starts if near(e, g)]
        if hits:
            delays.append(min(hits) - g.start)
    false = sum(not any(near(e, g) for g in targets) for e in starts)
    delay = f"{statistics.median(delays):.0f} / {max(delays):.0f}" if delays else "-"
    rate = false / device_hours
    return f"| {case.name} | {case.type} | {len(delays)}/{len(targets)} | {delay} | {rate:.2f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--hours", type=float, default=2.0)
    args = parser.parse_args()
    seeds = list(range(1, args.devices + 1))
    values, good, truth = grid(seeds, args.hours, episodes=True)
    normal, _, _ = grid([1000 + s for s in seeds[:10]], 1.0, episodes=False)
    conditions = ", ".join(CONDITIONS)
    print(f"{args.devices} simulated wearables x {args.hours:g} h, one episode each of {conditions}\n")
    print("| rule | detector | detected | delay s (median / worst) | false episodes / h |")
    print("|---|---|---|---|---|")
    for case in CASES:
        detector = build(case)
        if case.calibrate:
            columns = [CHANNELS.index(c) for c in case.channels]
            block = WindowBlock(
                normal[:, :, columns], np.arange(normal.shape[0]), np.full(normal.shape[0], T0), 1
            )
            detector.calibrate(block, 1.0, detector.hop * 1.0)
        events = run(case, detector, [f"w{s}" for s in seeds], values, good)
        print(score(case, events, truth, len(seeds) * args.hours))


if __name__ == "__main__":
    main()
