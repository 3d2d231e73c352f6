"""The QRS width at a stream's start (vtstart): a stage whose templates are made afresh there (the stream's
first start, a restart whose templates were not handed over) gives ``qrs_width`` for its first beats, so a
patient connected while in VT, whose first beats become the "normal" template, is still alarmed by
`ventricular_run`; a narrow rhythm at the start reads narrow and is not; templates handed over give none.

Synthetic ECG (tests.ecg.test_beat_shape.synthetic_ecg at a Polar H10's 130 Hz): wide beats ("V", a 100 ms
complex) at 150 bpm, or narrow ones ("N") as fast.
"""

from __future__ import annotations

import math

import numpy as np

from agent.config.schema import BeatsConfig, DetectorConfig
from agent.detectors.ventricular_run import DEFAULT_MIN_QRS_WIDTH_S, VentricularRunDetector
from agent.ecg.kept_shapes import KEEP_SHAPES_S
from agent.ecg.rr_from_ecg import RrFromEcg
from tests.detectors.detector_drive import run, scores_of
from tests.ecg.test_beat_shape import SYNTH_FS, _KnownPeaks
from tests.ecg.test_kept_shapes import SINUS_S, _feed, in_memory, vt_after_a_new_stage

CHANNELS = ("rr", "qrs_shape", "qrs_core", "qrs_width")  # the cardiac example's
FAST_S = [0.5 + 0.4 * i for i in range(30)]  # 150 bpm from the first beat on


def stream_start(kinds: str) -> list[dict[str, float]]:
    """The RR readings of a first stage fed `kinds` at 150 bpm from its first sample."""
    stage = RrFromEcg(
        "strap",
        BeatsConfig(),
        make_finder=lambda _: _KnownPeaks([round(p * SYNTH_FS) for p in FAST_S]),
        channels=CHANNELS,
    )
    got: list[dict[str, float]] = _feed(stage, kinds * len(FAST_S), FAST_S, 0.0, SYNTH_FS)
    return got


def vt_scores(got: list[dict[str, float]]) -> np.ndarray:
    """ventricular_run's scores (the run's length while fast) over the readings, the cardiac example's
    four channels (a channel left out of a reading: NaN)."""
    values = np.array([[r.get(c, math.nan) for c in CHANNELS] for r in got])[None]
    detector = VentricularRunDetector.from_config(
        DetectorConfig("vt", "ventricular_run", "rr", CHANNELS), 1.0
    )
    out: np.ndarray = scores_of(run(detector, values))[:, 0]
    return out


def test_a_vt_under_way_at_the_stream_start_reads_wide_and_alarms() -> None:
    # Failed before vtstart: no width at the stream's first start, the VT became the template, no alarm.
    got = stream_start("V")
    widths = [r["qrs_width"] for r in got if "qrs_width" in r]
    assert len(widths) == len(got) == len(FAST_S) - 1  # every beat with an interval is young
    assert min(widths) >= DEFAULT_MIN_QRS_WIDTH_S
    assert np.nanmax(vt_scores(got)) >= 5


def test_a_narrow_fast_rhythm_at_the_stream_start_reads_narrow_and_does_not_alarm() -> None:
    got = stream_start("N")
    widths = [r["qrs_width"] for r in got if "qrs_width" in r]
    assert len(widths) == len(got) and max(widths) < DEFAULT_MIN_QRS_WIDTH_S
    assert np.nanmax(vt_scores(got)) == 0


def test_a_restart_whose_templates_were_not_kept_gives_the_width() -> None:
    # Failed before vtstart: a break of KEEP_SHAPES_S or more started the templates afresh without it.
    got = vt_after_a_new_stage(KEEP_SHAPES_S + 1.0, in_memory, channels=CHANNELS[1:])
    assert all(r["qrs_width"] >= DEFAULT_MIN_QRS_WIDTH_S for r in got)
    nothing_handed = vt_after_a_new_stage(2.0, lambda _first, _at: None, channels=CHANNELS[1:])
    assert all(r["qrs_width"] >= DEFAULT_MIN_QRS_WIDTH_S for r in nothing_handed)


def test_templates_handed_over_give_no_width() -> None:
    got = vt_after_a_new_stage(2.0, in_memory, channels=CHANNELS[1:])
    assert got and not any("qrs_width" in r for r in got)  # the old templates judge the VT (vtkeep)


def test_the_width_is_given_only_while_the_templates_are_young() -> None:
    stage = RrFromEcg(
        "strap",
        BeatsConfig(),
        make_finder=lambda _: _KnownPeaks([round(p * SYNTH_FS) for p in SINUS_S]),
        channels=CHANNELS,
    )
    got = _feed(stage, "N" * len(SINUS_S), SINUS_S, 0.0, SYNTH_FS)
    assert ["qrs_width" in r for r in got] == [True] * 31 + [False] * (len(got) - 31)
