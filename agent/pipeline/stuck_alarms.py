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

A limit is judged against each range the quality gate applies to its channel (`gate_spans`): a device's
own span (`[[devices]] ranges`) replaces the built-in one for that device, so a 0–50 mm/s transmitter
makes `above = 60` a limit that can never alarm there, and the built-in span is judged only when some
device that may send the channel has none (until 2026-12-01 only the built-in ranges were used).
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
from agent.pipeline.wiring import produces


@dataclass(frozen=True, slots=True)
class NormalRange:
    low: float
    high: float
    unit: str
    what: str  # "heart rate": the words of the warning


# Documented clinical normal ranges; a limit that alarms on all of it alarms on (nearly) every patient.
# Each was re-read on 2026-12-01 (they had been written from memory); none disagreed, none was changed:
# - hr, pr: 60–100 bpm, the adult resting heart rate. The American Heart Association's "All About Heart
#   Rate (Pulse)" (heart.org) gives 60 to 100 bpm for adults, as quoted at
#   https://www.reference.com/health/resting-heart-rate-chart-eeea2e87bd9e37cb; the same range as a
#   definition (bradycardia below 60, tachycardia above 100) in most clinical references. pr is the
#   oximeter's pulse rate, the same quantity. A neonatal ward's bradycardia limit above 100 bpm is
#   legitimate and gets the warning: hence a warning, not a refusal.
# - spo2: 95–100 % in healthy adults at sea level (Cleveland Clinic, Yale Medicine, as quoted at
#   https://askvity.info/pulse-oximetry/what-is-a-normal-oximeter-reading-for-adults; "typically above
#   95 %", https://allwales.icst.org.uk/education/spo2-normal-range/). MedlinePlus is quoted with 94–100 %
#   (95 warns about `above = 94.5` too, a slip more). The WHO Pulse Oximetry Training Manual (2011), cited
#   here before, could not be re-read.
# - temp (a BLE Health Thermometer's body temperature): 36.5–37.5 °C, WHO's normothermia of the newborn
#   (Thermal Protection of the Newborn, 1997: hypothermia < 36.5, hyperthermia > 37.5 °C), as tabled in
#   J Investig Med (jim.bmj.com, "Published guidelines for hypothermia, normothermia and hyperthermia",
#   table 2). Adults' normal range is wider and holds it: oral 35.7–37.4 °C as mean ± 2 SD over 36
#   studies (Geneva et al., Open Forum Infect Dis 2019, PMC6456186), an upper limit of 37.7 °C (Mackowiak
#   et al., JAMA 1992, PMID 1302471); a limit that covers 36.5–37.5 still alarms on nearly everybody.
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


@dataclass(frozen=True, slots=True)
class GateSpan:
    """A range the quality gate applies to a channel for some devices: `ranges` (the built-in ones, the
    channel's replaced by the devices' own span) and the keys that set it (none: the built-in)."""

    ranges: Mapping[str, tuple[float, float]]
    set_by: tuple[str, ...] = ()


def gate_spans(config: AgentConfig, stream: str, channel: str) -> list[GateSpan]:
    """The distinct ranges the quality gate applies to `channel` of `stream`: each configured span of a
    device that may send it (`devices[i].ranges.<channel>` replaces the built-in one for that device),
    and the built-in range if such a device has none, or if no device is known to send it."""
    own: dict[tuple[float, float], list[str]] = {}
    built_in = False
    for i, device in enumerate(config.devices):
        output = produces(device)
        if not output.open and channel not in output.streams.get(stream, frozenset()):
            continue
        span = dict(device.ranges).get(channel)
        if span is None:
            built_in = True
        else:
            own.setdefault((float(span[0]), float(span[1])), []).append(f"devices[{i}].ranges.{channel}")
    spans = [GateSpan(PHYSICAL_RANGES)] if built_in or not own else []
    spans += [GateSpan({**PHYSICAL_RANGES, channel: span}, tuple(keys)) for span, keys in own.items()]
    return spans


def always_alarming(
    channel: str,
    above: float,
    below: float,
    ranges: Mapping[str, tuple[float, float]] = PHYSICAL_RANGES,
    set_by: Sequence[str] = (),
) -> tuple[str, str] | None:
    """(parameter, why) for a limit on `channel` (`above`, `below`; ±inf for none) that alarms on every
    reading the quality gate accepts, or on the whole normal range of the channel; None otherwise.
    `set_by`: the keys that set `ranges`' span of the channel (devices' `ranges`), named beside it."""
    low, high = ranges.get(channel, (-math.inf, math.inf))
    keys = "".join(f", {key}" for key in set_by)
    if math.isfinite(below) and below >= high:
        but = "" if below > high else f" but {high:g} itself"
        why = f"{below:g} is not below the highest {channel} the quality gate accepts ({high:g}{keys})"
        return "below", f"{why}: it alarms on every reading{but}{_unit_hint(channel, below)}"
    if math.isfinite(above) and above <= low:
        but = "" if above < low else f" but {low:g} itself"
        why = f"{above:g} is not above the lowest {channel} the quality gate accepts ({low:g}{keys})"
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
