"""Settings that make alarms stuck on, unending or absent, found before a session starts.

A new user's review (S4, M2) found configurations that check-config and a reload accepted in silence:
a hysteresis the rule's score can never get under (an alarm that starts and never ends), a heart-rate
limit written in Hz (every bed in tachycardia from the first second), SpO2 `below = 101` (always
true), and a configuration without any alarm rule (nothing but the technical alarms). The opposite
mistake, a limit the quality gate never lets a value reach, was already told (`unreachable_limit`).

- `unclearable` is a refusal (a `ConfigError` naming `alarms[i].hysteresis`): such a rule can end
  no episode, so the first one lasts until the configuration changes; no set-up wants that.
- `always_alarming` and `nothing_can_alarm` are warnings, logged where the "can never alarm" warning
  is (check-config, start, reload): a limit inside the normal range or a configuration without rules is
  odd but can be meant (a test bench alarming on purpose, a neonatal ward's limits, a gateway that
  only forwards technical alarms while its rules are being written), and refusing a reload would keep
  the old configuration running instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent.config.schema import AgentConfig, AlarmRuleConfig
from agent.detectors.base import StreamingDetector
from agent.detectors.limit import LimitDetector
from agent.errors import ConfigError
from agent.pipeline.quality import PHYSICAL_RANGES


@dataclass(frozen=True, slots=True)
class NormalRange:
    low: float
    high: float
    unit: str
    what: str  # "heart rate": the words of the warning


# Documented clinical normal ranges; a limit that alarms on all of it alarms on (nearly) every patient:
# - hr, pr: 60–100 bpm, the adult resting heart rate (American Heart Association, "All About Heart
#   Rate"; pr is the oximeter's pulse rate, the same quantity). A neonatal ward's bradycardia limit
#   above 100 bpm is legitimate and gets the warning: hence a warning, not a refusal.
# - spo2: 95–100 % in healthy people at sea level (WHO, Pulse Oximetry Training Manual, 2011).
# - temp (a BLE Health Thermometer's body temperature): 36.5–37.5 °C (WHO, Thermal Protection of the
#   Newborn, 1997; the usual adult oral range, Mackowiak et al., JAMA 1992, lies around it).
# skin_temp has none: peripheral skin temperature follows the room (roughly 28–36 °C); its physical
# range (quality.PHYSICAL_RANGES) still catches a limit out of every reading.
NORMAL_RANGES: Mapping[str, NormalRange] = {
    "hr": NormalRange(60.0, 100.0, "bpm", "heart rate"),
    "pr": NormalRange(60.0, 100.0, "bpm", "pulse rate"),
    "spo2": NormalRange(95.0, 100.0, "%", "SpO2"),
    "temp": NormalRange(36.5, 37.5, "°C", "body temperature"),
}


def _unit_hint(channel: str, limit: float) -> str:
    """The likely slip behind a limit far from the channel's values: another unit."""
    if channel in ("hr", "pr") and 0 < limit * 60.0 <= PHYSICAL_RANGES[channel][1]:
        return f": is it in Hz? ({limit:g} Hz = {limit * 60.0:g} bpm)"
    if channel == "spo2" and 0 < limit <= 1.0:
        return f": is it a fraction? ({limit:g} = {limit * 100.0:g} %)"
    if channel == "temp" and 86.0 <= limit <= 113.0:  # 30–45 °C in °F
        return f": is it in °F? ({limit:g} °F = {(limit - 32.0) * 5.0 / 9.0:.1f} °C)"
    return ""


def always_alarming(
    channel: str, above: float, below: float, ranges: Mapping[str, tuple[float, float]] = PHYSICAL_RANGES
) -> tuple[str, str] | None:
    """(parameter, why) for a limit on `channel` (`above`, `below`; ±inf for none) that alarms on every
    reading the quality gate accepts, or on the whole normal range of the channel; None otherwise."""
    low, high = ranges.get(channel, (-math.inf, math.inf))
    if math.isfinite(below) and below >= high:
        but = "" if below > high else f" but {high:g} itself"
        why = f"{below:g} is not below the highest {channel} the quality gate accepts ({high:g})"
        return "below", f"{why}: it alarms on every reading{but}{_unit_hint(channel, below)}"
    if math.isfinite(above) and above <= low:
        but = "" if above < low else f" but {low:g} itself"
        why = f"{above:g} is not above the lowest {channel} the quality gate accepts ({low:g})"
        return "above", f"{why}: it alarms on every reading{but}{_unit_hint(channel, above)}"
    normal = NORMAL_RANGES.get(channel)
    if normal is None:
        return None
    span = f"the whole normal range ({normal.low:g}–{normal.high:g} {normal.unit})"
    if math.isfinite(above) and above < normal.low:
        why = f"it alarms on every {normal.what} above {above:g} {normal.unit}, {span}"
        return "above", why + _unit_hint(channel, above)
    if math.isfinite(below) and below > normal.high:
        why = f"it alarms on every {normal.what} below {below:g} {normal.unit}, {span}"
        return "below", why + _unit_hint(channel, below)
    return None


def unclearable(
    index: int,
    rule: AlarmRuleConfig,
    detector: StreamingDetector,
    ranges: Mapping[str, tuple[float, float]] = PHYSICAL_RANGES,
) -> ConfigError | None:
    """A `ConfigError` on `alarms[index].hysteresis` when `rule` could never end an episode of
    `detector`: its clear level (agent.alarms.machine.clear_level) lies where no score can go."""
    h = rule.hysteresis
    if h <= 0.0:
        return None
    key = f"alarms[{index}].hysteresis"
    if isinstance(detector, LimitDetector):
        return _limit_unclearable(key, h, detector, ranges)
    if detector.lowest_score < 0.0 or h < 1.0:
        return None  # a signed score can go below any clear level; h < 1 leaves room above 0
    threshold = detector.threshold
    level = threshold - h * abs(threshold) if threshold != 0.0 else -h
    return ConfigError(
        key,
        f"{h:g} means the {detector.type_name} rule on {detector.id} could never end: it clears at a score "
        f"≤ threshold × (1 − {h:g}) = {level:g} (threshold {threshold:g}), and {detector.type_name} scores "
        f"are never below 0; for this detector hysteresis is a fraction of the threshold, below 1 "
        f"(0.2 clears at 80 % of it)",
    )


def _limit_unclearable(
    key: str, h: float, detector: LimitDetector, ranges: Mapping[str, tuple[float, float]]
) -> ConfigError | None:
    """A limit's hysteresis is a margin in the channel's unit: clearing needs a reading at least `h`
    inside every limit, and inside the range the quality gate accepts (a reading beyond it is missing)."""
    channel = detector.channels[0]
    low, high = ranges.get(channel, (-math.inf, math.inf))
    lowest, highest = max(detector.below + h, low), min(detector.above - h, high)
    if lowest <= highest:
        return None
    wants = []
    if math.isfinite(detector.above):
        wants.append(f"at or below {detector.above - h:g} (above = {detector.above:g} minus {h:g})")
    if math.isfinite(detector.below):
        wants.append(f"at or above {detector.below + h:g} (below = {detector.below:g} plus {h:g})")
    known = math.isfinite(low) or math.isfinite(high)
    accepted = f"; the quality gate accepts {channel} {low:g}–{high:g}" if known else ""
    return ConfigError(
        key,
        f"{h:g} means the rule on {detector.id} could never end: it clears only on {channel} readings "
        f"{' and '.join(wants)}{accepted}; for a limit, hysteresis is a margin in the channel's unit "
        f"(5 with above = 120 clears at 115)",
    )


def nothing_can_alarm(config: AgentConfig) -> str | None:
    """Why no physiological or equipment alarm can start under `config` (no detector, or no rule)."""
    technical = "only technical alarms (device lost, battery low, outbox, uplink...) can start"
    if not config.detectors:
        return f"no [[detectors]] and so no alarm rule: {technical}; see docs/configuration.md"
    if not config.alarms:
        return (
            f"{len(config.detectors)} detector(s) but no [[alarms]] rule: their scores start no alarm, "
            f"{technical}; add [[alarms]] rules naming the detectors (docs/configuration.md)"
        )
    return None


def unclearable_rules(config: AgentConfig, detectors: Sequence[StreamingDetector]) -> list[ConfigError]:
    by_id = {d.id: d for d in detectors}
    problems = []
    for i, rule in enumerate(config.alarms):
        detector = by_id.get(rule.detector)  # an unknown id is the loader's alarms[i].detector
        if detector is not None and (problem := unclearable(i, rule, detector)) is not None:
            problems.append(problem)
    return problems
