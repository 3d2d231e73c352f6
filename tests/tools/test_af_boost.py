"""tools.evaluate.af_boost: the selection criteria weigh what they say; the replica's scores are the af
detector's (rule 10 included); the product family under Youden is af_ks_variants' (af_fit --ks's) loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.config.loader import load_config
from tools.evaluate.af_boost import FAMILIES, criterion, fits, lifted_score, measure
from tools.evaluate.af_combine import af_detector
from tools.evaluate.af_features import contexts
from tools.evaluate.af_ks_variants import leave_one_subject_out, scores
from tools.evaluate.datasets import T0, Series

CPSC_CONFIG = Path(__file__).resolve().parents[2] / "tools" / "evaluate" / "configs" / "cpsc.toml"


def test_goal_weighs_a_missed_beat_at_its_allowance_and_balanced_averages_subjects() -> None:
    # one subject, P = N = 100: 5 missed cost as much as 3 false (the goal's 5 % and 3 %)
    counts = [(np.array([95.0, 100.0, 90.0]), np.array([0.0, 3.0, 0.0]), 100, 100)]
    np.testing.assert_allclose(criterion("goal", counts), [-1.0, -1.0, -2.0])
    np.testing.assert_allclose(criterion("youden", counts), [1.95, 1.97, 1.90])
    # an all-AF subject (1000 beats) and an all-sinus one (10): balanced gives each the same weight
    two = [(np.array([900.0]), np.array([0.0]), 1000, 0), (np.array([0.0]), np.array([5.0]), 0, 10)]
    assert criterion("balanced", two)[0] == pytest.approx(0.9 + 0.5)
    assert criterion("youden", two)[0] == pytest.approx(0.9 + 0.5)  # one subject each side: the same
    three = [*two, (np.array([0.0]), np.array([0.0]), 0, 1000)]
    assert criterion("balanced", three)[0] == pytest.approx(0.9 + (0.5 + 1.0) / 2)
    assert criterion("youden", three)[0] == pytest.approx(0.9 + 1 - 5 / 1010)


def series(seed: int) -> list[Series]:
    """Three subjects of sinus, AF (some of it alternating short-long by chance), bigeminy."""
    rng = np.random.default_rng(seed)
    out = []
    for g in ("1", "2", "3"):
        for r in range(2):
            sinus = 0.8 + rng.normal(0, 0.01, 60)
            af = rng.gamma(12.0, 0.6 / 12.0, 80)
            af[40:50] = [0.45, 0.78, 0.47, 0.75, 0.44, 0.79, 0.46, 0.76, 0.45, 0.77]
            bigeminy = np.tile([0.5, 1.1], 30) + rng.normal(0, 0.01, 60)
            rr = np.concatenate([sinus, af, bigeminy])
            labels = np.zeros(rr.size, dtype=bool)
            labels[60:140] = True
            out.append(Series(f"r{g}_{r}", g, ("rr",), T0 + np.cumsum(rr), rr[:, None], labels))
    return out


def test_the_replica_is_the_detector_with_ks_bigeminy() -> None:
    data = series(1)
    detector = af_detector(load_config(CPSC_CONFIG))  # cpsc.toml: ks 0.34, 1.5, ks_bigeminy 0.15
    lifted = 0
    for s, b in zip(data, measure(CPSC_CONFIG, data), strict=True):
        expected = detector.irregularity(contexts(s.values[:, 0], detector.context_beats))[0]
        np.testing.assert_allclose(lifted_score(b, (0.34, 1.5, 0.15)), expected, rtol=1e-12)
        lifted += int(np.sum(np.isnan(b.s) & ~np.isnan(expected)))
    assert lifted > 0  # rule 10 had windows to score


def test_product_under_youden_picks_what_af_ks_variants_picks() -> None:
    data = series(2)
    beats = measure(CPSC_CONFIG, data)
    picked = fits(beats, "product", "youden")
    settings = FAMILIES["product"][1]
    table = {(b, k, 0.0, 0): scores(CPSC_CONFIG, data, (b, k, 0.0, 0)) for b, k in settings}
    folds, _ = leave_one_subject_out(table, data)
    for fold in folds:
        sigma, k, _, _ = fold.setting
        assert picked[fold.subject][0] == f"{(sigma, k)}, threshold {fold.threshold:.4g}"
