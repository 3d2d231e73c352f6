"""tools.evaluate.pvc_alarms: the example's af and pvc rules with and without the alarm hierarchy, alarm
episodes timed by the beats that raise them, and a start's place against the AF annotations. On MIT-BIH
record 119's minute of ventricular bigeminy (tests/data, ODC-By 1.0) and on hand-made series."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tools.evaluate.beats_from_ecg import detected_rr
from tools.evaluate.datasets import T0, Series
from tools.evaluate.pvc_alarms import (
    AF,
    PVC,
    CpscStarts,
    af_onsets,
    alarmed_s,
    episodes,
    rhythm_config,
    variant,
)
from tools.evaluate.replay import Episode, readings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cardiac-monitoring.toml"
EXCERPT = ROOT / "tests" / "data" / "mitdb_119_mlii_180s_60s.npz"


def test_the_rhythm_config_is_the_examples_af_and_pvc_rules_and_the_variants_set_the_hierarchy() -> None:
    config = rhythm_config(EXAMPLE)
    assert sorted(d.type for d in config.detectors) == ["af", "pvc"]
    assert sorted(r.condition for r in config.alarms) == [AF, PVC]
    assert all(r.superseded_by == () for r in variant(config, "without").alarms)
    with_key = {r.condition: r.superseded_by for r in variant(config, "with").alarms}
    assert with_key == {AF: (), PVC: (AF,)}


def test_the_bigeminy_minute_raises_frequent_pvcs_either_way() -> None:
    d = np.load(EXCERPT)
    times, values = detected_rr(d["ecg_adc"] / float(d["adc_per_mv"]), float(d["fs_hz"]))
    series = Series(
        "119",
        "119",
        ("rr", "hr", "qrs_shape", "qrs_core", "p_wave", "qrs_width"),
        T0 + times,
        values,
        np.zeros(len(times), bool),
    )
    for name in ("without", "with"):
        found = episodes(variant(rhythm_config(EXAMPLE), name), readings(series, "ecg_rr"))
        assert [e.condition for e in found] == [PVC]
        assert found[0].start - T0 < 40.0 and found[0].end is None  # open at the end of the minute
        assert alarmed_s(found, PVC, float(series.times[-1])) == float(series.times[-1]) - found[0].start


def test_a_start_is_placed_after_an_onset_elsewhere_in_af_or_outside() -> None:
    t = np.arange(0.0, 400.0, 1.0)
    af = ((t >= 100) & (t < 300)).astype(np.float64)  # AF from 100 s to 300 s
    onset = ((t >= 100) & (t < 130)).astype(np.float64)
    extra = {"af": af, "af_onset": onset}
    series = Series("r", "r", ("rr",), T0 + t, np.ones((len(t), 1)), np.zeros(len(t), bool), extra=extra)
    assert af_onsets(series) == [T0 + 100.0]
    found = [Episode(PVC, T0 + s, None) for s in (50.0, 110.0, 160.0, 250.0, 350.0)]
    found.append(Episode(AF, T0 + 130.0, None))  # not a PVC start: not counted
    # 160 s is 60 s after the onset: still counted as one
    assert CpscStarts.of(series, found) == CpscStarts(onset=2, in_af=1, outside=2)
