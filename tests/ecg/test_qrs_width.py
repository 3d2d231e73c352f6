"""The QRS width from a beat alone (agent.ecg.qrs_width) and when the stage gives it (``qrs_width``: only
while the shape templates are young: at the stream's start and after a break,
agent.ecg.beat_shape.YOUNG_BEATS)."""

from __future__ import annotations

import math

import numpy as np
from test_beat_channels import record_frames

from agent.config.schema import BeatsConfig
from agent.ecg.beat_shape import YOUNG_BEATS
from agent.ecg.qrs_width import qrs_width
from agent.ecg.rr_from_ecg import CHANNELS, RrFromEcg

FS = 360.0


def complex_of(sigma_s: float, n: int = 720) -> np.ndarray:
    """A biphasic complex (a Gaussian's derivative) of width ~`sigma_s` at sample n // 2, on a slow drift."""
    t = (np.arange(n) - n // 2) / FS
    return -t / sigma_s * np.exp(-0.5 * (t / sigma_s) ** 2) + 0.2 * np.sin(2 * np.pi * 0.3 * t)


def test_a_wide_complex_reads_wide_and_a_narrow_one_narrow() -> None:
    narrow, wide = qrs_width(complex_of(0.008), 360, FS), qrs_width(complex_of(0.03), 360, FS)
    assert narrow < 0.06 < 0.09 < wide  # the detector's default floor (0.09 s) between them


def test_sign_and_scale_do_not_change_it() -> None:
    beat = complex_of(0.02)
    width = qrs_width(beat, 360, FS)
    assert math.isclose(qrs_width(-0.3 * beat, 360, FS), width, rel_tol=1e-9)
    assert math.isclose(qrs_width(5.0 * beat + 2.0, 360, FS), width, rel_tol=1e-9)


def test_no_width_without_the_samples_around_the_peak() -> None:
    beat = complex_of(0.02)
    assert math.isnan(qrs_width(beat, 20, FS))  # too near the start
    assert math.isnan(qrs_width(beat, 700, FS))  # too near the end
    holed = beat.copy()
    holed[380] = np.nan
    assert math.isnan(qrs_width(holed, 360, FS))
    assert math.isnan(qrs_width(np.zeros(720), 360, FS))  # flat


def test_the_stage_gives_the_width_only_for_the_young_templates_at_the_start_and_after_a_break() -> None:
    """MIT-BIH 119's bigeminy, a lead-off at 25-27 s then a short GAP (the templates go on): widths for
    the first beats of the stream (its templates are made afresh: a patient connected in VT) and after the
    lead-off, for at most `YOUNG_BEATS` beats each, none after the GAP; the PVCs (qrs_shape > 1) wider
    than the normal beats."""
    stage = RrFromEcg("holter", BeatsConfig(), channels=CHANNELS)
    got = [r for frame in record_frames() for r in stage.take(frame) if r.stream == "holter/rr"]
    with_width = [
        r for r in got if "qrs_width" in r.channels and not np.isnan(r.values).all()
    ]  # not "no value"
    at_start = [r for r in with_width if r.wall_time < 25.0]
    after = [r for r in with_width if r.wall_time > 27.0]
    assert len(at_start) + len(after) == len(with_width)
    beats_before = [
        r for r in got if r.wall_time < 25.0 and "rr" in r.channels and np.isfinite(r.values[0, 0])
    ]
    assert len(at_start) == min(len(beats_before), YOUNG_BEATS - 1)  # the stream's first beat: no interval
    assert min(r.wall_time for r in at_start) < 3.0
    assert YOUNG_BEATS - 2 <= len(after) <= YOUNG_BEATS  # the first beat after a break: no interval
    later = [r for r in got if r.wall_time > max(r.wall_time for r in after) and "rr" in r.channels]
    assert later and not any("qrs_width" in r.channels for r in later)  # not again after the GAP
    width = {r.wall_time: float(r.values[0, r.channels.index("qrs_width")]) for r in with_width}
    shaped = [r for r in with_width if "qrs_shape" in r.channels]
    pvc = [width[r.wall_time] for r in shaped if r.values[0, r.channels.index("qrs_shape")] > 1.0]
    normal = [width[r.wall_time] for r in shaped if r.values[0, r.channels.index("qrs_shape")] < 0.5]
    assert pvc and normal and min(pvc) >= 0.09 > max(normal)
    asked = RrFromEcg("holter", BeatsConfig(), channels=("qrs_core",))  # not asked: never given
    assert not any("qrs_width" in r.channels for frame in record_frames() for r in asked.take(frame))
