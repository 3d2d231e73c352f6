"""Alarm texts: values at their unit's display resolution, and readable desaturation and AF sentences.

The clinical review of 2026-11-30 (findings 8 and 12) read "hr 142.3 bpm", "spo2 89.64 % below limit 90 %",
"spo2 drop below baseline 93 % below limit 94 %" and "rr RR irregularity 0.7392 above limit 0.057".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.alarms import explain
from agent.config import parse_config
from agent.detectors.af import AtrialFibrillationDetector
from agent.detectors.pvc import PvcDetector
from agent.detectors.spo2 import DesaturationDetector
from agent.ecg.rr_from_ecg import CHANNELS as RR_CHANNELS
from agent.events import AlarmEvent, AlarmKind, Phase
from agent.pipeline import Pipeline
from agent.readings import Reading

T0 = 1_800_000_000.0


@pytest.mark.parametrize(
    ("observed", "limit", "unit", "quantity", "text"),
    [
        (142.35, 120.0, "bpm", "", "hr 142 bpm above limit 120 bpm"),
        (120.3, 120.0, "bpm", "", "hr 120.3 bpm above limit 120 bpm"),  # "120 above 120" would be wrong
        (89.64, 90.0, "%", "", "hr 89.6 % below limit 90 %"),
        (85.2, 90.0, "%", "", "hr 85 % below limit 90 %"),
        (38.26, 38.0, "°C", "", "hr 38.3 °C above limit 38 °C"),
        (7.349, 4.5, "mm/s", "velocity RMS", "hr velocity RMS 7.3 mm/s above limit 4.5 mm/s"),
        (0.0, 0.5, "bpm", "range", "hr range 0 bpm below limit 0.5 bpm"),  # a derived quantity: as before
        (142.35, 120.0, "beats", "", "hr 142.3 beats above limit 120 beats"),  # unit not known: 4 digits
    ],
)
def test_values_are_shown_at_their_units_resolution(
    observed: float, limit: float, unit: str, quantity: str, text: str
) -> None:
    assert explain.crossing("d", "hr", observed, limit, 1.0, 0.0, unit, quantity) == text


def test_desaturation_reads_as_a_drop_from_the_baseline() -> None:
    phrase = explain.crossing("desat", "spo2", 93.0, 94.0, 4.0, 3.0, "%", DesaturationDetector.quantity)
    assert phrase == "spo2 drop to 93 %, 3 points or more below its baseline 97 % (limit 94 %)"


def test_af_reads_as_an_irregular_rhythm() -> None:
    phrase = explain.crossing("af", "rr", 0.7392026493668764, 0.057, 0.74, 0.057, "", "RR irregularity")
    assert phrase == "RR irregularity 0.74 above limit 0.057 (irregular rhythm, possible AF)"
    close = explain.crossing("af", "rr", 0.0574, 0.057, 0.0574, 0.057, "", "RR irregularity")
    assert close.startswith("RR irregularity 0.0574 above limit 0.057")


def test_a_pvc_reads_as_a_possible_pvc_naming_the_part_that_drove_it() -> None:
    early = explain.crossing("pvc", "rr", 2.6185, 0.69, 2.6185, 0.69, "", "PVC score")
    assert early == "PVC score 2.6 above limit 0.69 (early beat: possible PVC)"
    wide = explain.crossing("pvc", "qrs_shape", 0.6912, 0.69, 0.6912, 0.69, "", "PVC score")
    assert wide == "PVC score 0.691 above limit 0.69 (QRS unlike the patient's recent beats: possible PVC)"


def test_the_special_sentences_follow_the_detectors_quantities() -> None:
    assert DesaturationDetector.quantity == explain.DESATURATION
    assert AtrialFibrillationDetector.quantity == explain.RR_IRREGULARITY
    assert PvcDetector.quantity == explain.PVC_SCORE
    # The stage's channels pvc reads (hr is for limits, p_wave for af, qrs_core and qrs_width for
    # ventricular_run, whose sentence names no cause).
    assert set(explain.PVC_CAUSES) == set(RR_CHANNELS) - {"hr", "p_wave", "qrs_core", "qrs_width"}


def pseudonym(device: str, prefix: str = "d") -> str:
    return f"{prefix}-p1"


def test_through_the_pipeline_texts_round_and_values_stay_exact(tmp_path: Path) -> None:
    config = {
        "gateway": {"id": "gw", "site": "s"},
        "mqtt": {"url": "mqtt://127.0.0.1:1883"},
        "outbox": {"path": "outbox.sqlite"},
        "devices": [{"id": "bed-7", "kind": "wearable", "transport": "simulator", "patient": "MRN-0000007"}],
        "detectors": [
            {
                "id": "hr-high",
                "type": "limit",
                "stream": "vitals",
                "channels": ["hr"],
                "params": {"above": 120},
            },
            {
                "id": "spo2-low",
                "type": "limit",
                "stream": "vitals",
                "channels": ["spo2"],
                "params": {"below": 90},
            },
            {"id": "desat", "type": "spo2_desaturation", "stream": "vitals", "channels": ["spo2"]},
        ],
        "alarms": [
            {"condition": "tachycardia", "detector": "hr-high", "min_duration_s": 10, "unit": "bpm"},
            {"condition": "spo2_low", "detector": "spo2-low", "min_duration_s": 10, "unit": "%"},
            {"condition": "spo2_desaturation", "detector": "desat", "min_duration_s": 0, "unit": "%"},
        ],
    }
    pipeline = Pipeline(parse_config(config, base_dir=tmp_path), pseudonym)
    events: list[AlarmEvent] = []
    for t in range(420):
        hr, spo2 = (142.35, 89.64) if t >= 350 else (80.0, 97.0)
        reading = Reading.single("bed-7/vitals", {"hr": hr, "spo2": spo2, "skin_temp": 33.5}, T0 + t, t)
        events += pipeline.ingest([reading])
    starts = {e.condition: e for e in events if e.phase is Phase.START and e.kind is AlarmKind.PHYSIOLOGICAL}
    assert starts["tachycardia"].explanation.text == "hr 142 bpm above limit 120 bpm for 10 s"
    assert starts["tachycardia"].value == 142.35
    assert starts["spo2_low"].explanation.text == "spo2 89.6 % below limit 90 % for 10 s"
    assert starts["spo2_low"].value == 89.64
    desat = starts["spo2_desaturation"]
    assert desat.explanation.text.startswith(
        "spo2 drop to 90 %, 3 points or more below its baseline 97 % (limit 94 %)"
    )
    assert (desat.value, desat.threshold) == (89.64, 94.0)
    assert not any("bed-7" in e.explanation.text or "MRN" in e.explanation.text for e in events)


@pytest.mark.parametrize(
    ("observed", "limit", "text"),
    [
        (94.0, 94.0, "spo2 drop to 94 %, 3 points or more below its baseline 97 % (limit 94 %)"),
        (94.3, 94.3, "spo2 drop to 94.3 %, 3 points or more below its baseline 97.3 % (limit 94.3 %)"),
        (94.1, 94.3, "spo2 drop to 94 %, 3 points or more below its baseline 97.3 % (limit 94.3 %)"),
        (93.96, 94.0, "spo2 drop to 93.96 %, 3 points or more below its baseline 97 % (limit 94 %)"),
    ],
)
def test_a_desaturation_at_its_limit_reads_the_value_as_the_limit(
    observed: float, limit: float, text: str
) -> None:
    """A drop of exactly 3 points is an event: the sentence must not show a decimal baseline and limit
    rounded to whole percent ("drop to 94.3 % ... (limit 94 %)" reads as above the limit)."""
    phrase = explain.crossing("desat", "spo2", observed, limit, 3.0, 3.0, "%", DesaturationDetector.quantity)
    assert phrase == text


@pytest.mark.parametrize(
    ("baseline", "low", "text"),
    [
        (97.0, 94.0, "spo2 drop to 94 %, 3 points or more below its baseline 97 % (limit 94 %)"),
        (97.3, 94.3, "spo2 drop to 94.3 %, 3 points or more below its baseline 97.3 % (limit 94.3 %)"),
    ],
)
def test_a_drop_of_exactly_3_points_raises_a_desaturation(
    tmp_path: Path, baseline: float, low: float, text: str
) -> None:
    config = {
        "gateway": {"id": "gw", "site": "s"},
        "mqtt": {"url": "mqtt://127.0.0.1:1883"},
        "outbox": {"path": "outbox.sqlite"},
        "devices": [{"id": "bed-7", "kind": "wearable", "transport": "simulator"}],
        "detectors": [{"id": "desat", "type": "spo2_desaturation", "stream": "vitals", "channels": ["spo2"]}],
        "alarms": [{"condition": "spo2_desaturation", "detector": "desat", "min_duration_s": 0, "unit": "%"}],
    }
    pipeline = Pipeline(parse_config(config, base_dir=tmp_path), pseudonym)
    events: list[AlarmEvent] = []
    for t in range(400):
        spo2 = low if 350 <= t < 370 else baseline  # 20 s exactly 3 points down
        events += pipeline.ingest([Reading.single("bed-7/vitals", {"spo2": spo2}, T0 + t, t)])
    starts = [e for e in events if e.phase is Phase.START]
    assert len(starts) == 1
    assert starts[0].explanation.text == text
    assert (starts[0].value, starts[0].threshold) == (low, low)
    assert starts[0].detection_time == T0 + 359  # the 10th low second
