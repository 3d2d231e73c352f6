"""Readable explanations of alarm events: what crossed what, for how long, and which channels drove it.

Detectors that report a measured value and a limit in the channel's unit (limit, robust_z, ...) read as
"hr 142 bpm above limit 120 bpm for 12 s"; detectors without one fall back to score against threshold.
A value is shown at its unit's display resolution (bpm and % whole, °C and mm/s to 0.1, as a monitor
shows them), with more decimals only where the rounded value would not be on its side of the limit
("spo2 89.6 % below limit 90 %", never "90 % below limit 90 %"); the event's `value` stays exact.
Four detectors whose observed value needs its own sentence have one: the SpO2 desaturation ("spo2 drop to
93 %, 3 points or more below its baseline 97 % (limit 94 %)"), AF ("RR irregularity 0.74 above limit
0.057 (irregular rhythm, possible AF)"), PVC ("PVC score 2.6 above limit 0.69 (early beat: possible
PVC)", naming the part that drove it most) and the ventricular run ("run of 7 ventricular beats at 150
bpm, above limit 100 bpm (run of 5 or more: possible ventricular tachycardia)"). Texts never carry device
or patient ids.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

from agent.detectors.base import FloatArray
from agent.detectors.spo2 import DROP_TOLERANCE

TOP_CHANNELS = 3

# Decimals a bedside monitor shows for a value in this unit (HR and SpO2 as whole numbers, temperatures
# to 0.1). A unit not listed keeps `fmt`'s 4 significant digits.
DISPLAY_DECIMALS: Mapping[str, int] = {
    "bpm": 0,
    "%": 0,
    "mmHg": 0,
    "ms": 0,
    "/min": 0,
    "°C": 1,
    "degC": 1,
    "C": 1,
    "mm/s": 1,
    "A": 1,
    "kPa": 1,
    "m/s2": 2,
    "mV": 2,
    "s": 2,
}
EXTRA_DECIMALS = 3  # at most this many more where the rounded value would sit on the limit
# Quantities that are a level of the channel in its own unit, shown at the unit's resolution; others
# ("range", "rate", "missing fraction", ...) keep 4 significant digits (a 0.5 bpm range limit is not 0).
LEVELS = frozenset({"", "smoothed level", "velocity RMS"})
# The `quantity` of agent.detectors.spo2.DesaturationDetector, agent.detectors.af.AtrialFibrillation-
# Detector, agent.detectors.pvc.PvcDetector and agent.detectors.ventricular_run.VentricularRunDetector (a
# test checks they match): their sentences are worded below, not as "<channel> <quantity>".
DESATURATION = "drop below baseline"
RR_IRREGULARITY = "RR irregularity"
PVC_SCORE = "PVC score"
VENTRICULAR_RUN = "ventricular run"  # score: the run's beats; value: its rate in bpm
# What each channel of the pvc detector's stream says when it drove the score (its top contribution).
PVC_CAUSES: Mapping[str, str] = {"rr": "early beat", "qrs_shape": "QRS unlike the patient's recent beats"}


def fmt(value: float) -> str:
    """Up to 4 significant digits, no trailing zeros: 142, 37.85, 0.0012."""
    return f"{value:.4g}"


def _on_its_side(formats: Iterable[str], value: float, limit: float) -> str:
    """`value` in the first format whose text is still strictly on `value`'s side of `limit` (and not
    equal to it); `fmt` when none is."""
    above = value > limit
    for spec in formats:
        text = format(value, spec)
        shown = float(text)
        if shown != limit and (shown > limit) == above:
            return text
    return fmt(value)


def shown(value: float, unit: str, limit: float = math.nan) -> str:
    """`value` at the display resolution of `unit`: "142" bpm, "37.9" °C; `fmt` for a unit not known.
    With a `limit`, decimals are added (up to `EXTRA_DECIMALS`) until the text is on the value's side of
    it: 89.64 % against 90 % is "89.6", 120.3 bpm against 120 is "120.3"."""
    decimals = DISPLAY_DECIMALS.get(unit)
    if decimals is None or not math.isfinite(value):
        return fmt(value)
    formats = [f".{d}f" for d in range(decimals, decimals + EXTRA_DECIMALS + 1)]
    if not math.isfinite(limit):
        return format(value, formats[0])
    return _on_its_side(formats, value, limit)


def shown_with_decimals(value: float, unit: str) -> str:
    """`value` at the display resolution of `unit`, with the decimals it has beyond it (up to
    `EXTRA_DECIMALS` more): a baseline of 97 % is "97", one of 97.3 % from a decimal oximeter "97.3",
    so a limit derived from it is never shown on the wrong side of the value it is compared with."""
    decimals = DISPLAY_DECIMALS.get(unit)
    if decimals is None or not math.isfinite(value):
        return fmt(value)
    finest = round(value, decimals + EXTRA_DECIMALS)
    for d in range(decimals, decimals + EXTRA_DECIMALS):
        if round(value, d) == finest:
            return format(value, f".{d}f")
    return format(value, f".{decimals + EXTRA_DECIMALS}f")


def seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.3g} s"


def unjudged(seconds_stopped: float) -> str:
    """The clause an update or end of an episode restored across a stop carries."""
    return f"; not judged for about {seconds(seconds_stopped)} of it while no agent ran"


# The clause of an END the rule, changed at a reload or restart, gave before it ever found the condition.
RULE_CHANGED = (
    "; the rule changed (a reload or restart) and has not found the condition since:"
    " not necessarily a recovery"
)


def has_measure(observed: float, limit: float) -> bool:
    return math.isfinite(observed) and math.isfinite(limit)


def crossing(
    detector: str,
    channel: str,
    observed: float,
    limit: float,
    score: float,
    threshold: float,
    unit: str,
    quantity: str = "",
) -> str:
    """The core phrase, without duration: "hr 142 bpm above limit 120 bpm", "hr range 0 bpm below ...".
    The caller adds "for 10 s", "; active ..." or puts "peak " before it and "; ended after ..." after."""
    if not has_measure(observed, limit):
        return f"{detector} score {fmt(score)} above threshold {fmt(threshold)}"
    suffix = f" {unit}" if unit else ""
    if quantity == DESATURATION:  # observed: the SpO2 held for duration_s; limit: baseline - threshold
        baseline = limit + threshold
        # a drop of exactly `drop` (the limit itself, within the detector's tolerance) shows the value
        # as the limit is shown: "drop to 94.3 % ... (limit 94.3 %)", not "94 %"
        at_limit = observed > limit - DROP_TOLERANCE
        value = shown_with_decimals(observed, unit) if at_limit else shown(observed, unit, limit)
        return (
            f"{channel} drop to {value}{suffix}, {fmt(threshold)} points or more"
            f" below its baseline {shown_with_decimals(baseline, unit)}{suffix}"
            f" (limit {shown_with_decimals(limit, unit)}{suffix})"
        )
    if quantity == RR_IRREGULARITY:  # unitless: the median successive RR difference over the trend
        irregularity = _on_its_side([".2g", ".3g", ".4g"], observed, limit)
        return f"RR irregularity {irregularity} above limit {fmt(limit)} (irregular rhythm, possible AF)"
    if quantity == PVC_SCORE:  # unitless: log QRS shape distance + weight x log(1 / prematurity)
        value = _on_its_side([".2g", ".3g", ".4g"], observed, limit)
        cause = PVC_CAUSES.get(channel, channel)
        return f"PVC score {value} above limit {fmt(limit)} ({cause}: possible PVC)"
    if quantity == VENTRICULAR_RUN:
        rate = shown(observed, "bpm", limit)
        return (
            f"run of {score:.0f} ventricular beats at {rate} bpm, above limit {fmt(limit)} bpm (run of"
            f" {threshold + 1:.0f} or more: possible ventricular tachycardia)"
        )
    side = "above" if observed > limit else "below"
    value = shown(observed, unit, limit) if quantity in LEVELS else fmt(observed)
    what = f"{channel} {quantity}" if quantity else channel
    return f"{what} {value}{suffix} {side} limit {fmt(limit)}{suffix}"


def top_channels(channels: tuple[str, ...], contributions: FloatArray) -> tuple[tuple[str, float], ...]:
    """The channels with a positive share, largest first, at most `TOP_CHANNELS`."""
    order = np.argsort(-np.nan_to_num(contributions, nan=0.0), kind="stable")
    picked = [(channels[i], float(contributions[i])) for i in order[:TOP_CHANNELS] if contributions[i] > 0]
    return tuple(picked)


def baseline_map(channels: tuple[str, ...], baseline: FloatArray) -> Mapping[str, float]:
    return {c: float(v) for c, v in zip(channels, baseline, strict=True) if math.isfinite(v)}
