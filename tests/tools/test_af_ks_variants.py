"""tools.evaluate.af_ks_variants: with both options off the scores are the shipped detector's; the bigeminal
suppression is lifted only for an AF-like spread of differences; the distance's window starts at a rate step
only with enough differences after it; the leave-one-subject-out loop is af_fit's."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.config.loader import load_config
from agent.detectors.af import _after_rate_step
from agent.detectors.rr_distribution import af_distance
from tools.evaluate.af_combine import af_detector
from tools.evaluate.af_features import contexts
from tools.evaluate.af_fit import held_out
from tools.evaluate.af_ks_variants import Setting, fewest_missed, ks_window, leave_one_subject_out, variant
from tools.evaluate.datasets import T0, Series

CPSC_CONFIG = Path(__file__).resolve().parents[2] / "tools" / "evaluate" / "configs" / "cpsc.toml"
SHIPPED: Setting = (0.34, 1.5, 0.0, 0)  # configs/cpsc.toml's ks_scale and ks_exponent, idea 1 off


def score(setting: Setting, rr: np.ndarray) -> np.ndarray:
    detector = variant(CPSC_CONFIG, setting)
    return detector.irregularity(contexts(rr, detector.context_beats))[0]


def rhythm(seed: int) -> np.ndarray:
    """Sinus, AF, ventricular bigeminy, sinus with PVCs: every rule of the detector has work to do."""
    rng = np.random.default_rng(seed)
    sinus = 0.8 + rng.normal(0, 0.01, 40)
    af = rng.gamma(25.0, 0.45 / 25.0, 60)
    bigeminy = np.tile([0.5, 1.1], 30) + rng.normal(0, 0.01, 60)
    ectopic = 0.9 + rng.normal(0, 0.01, 40)
    ectopic[10::9] = 0.55
    ectopic[11::9] = 1.25
    return np.concatenate([sinus, af, bigeminy, ectopic])


def test_with_both_options_off_the_scores_are_the_shipped_detectors() -> None:
    rr = rhythm(1)
    shipped = af_detector(load_config(CPSC_CONFIG))
    # cpsc.toml has idea 1 on since branch afboost (the detector's ks_bigeminy = 0.15): the same scores
    assert shipped.ks_bigeminy == 0.15
    np.testing.assert_array_equal(
        score((0.34, 1.5, 0.15, 0), rr), shipped.irregularity(contexts(rr, shipped.context_beats))[0]
    )
    shipped.ks_bigeminy = 0.0  # and with it off, the detector before it
    expected = shipped.irregularity(contexts(rr, shipped.context_beats))[0]
    np.testing.assert_array_equal(score(SHIPPED, rr), expected)
    np.testing.assert_array_equal(score((0.34, 1.5, 0.0, 6), rr)[:45], expected[:45])  # before 6 beats of AF


def chance_alternation(seed: int) -> np.ndarray:
    """AF whose newest intervals alternate short-long by chance: the lag-2 rule calls them bigeminal."""
    rng = np.random.default_rng(seed)
    af = rng.gamma(12.0, 0.6 / 12.0, 24)
    alternating = np.array([0.45, 0.78, 0.47, 0.75, 0.44, 0.79, 0.46, 0.76, 0.45, 0.77])
    return np.concatenate([af, alternating])


def test_bigeminal_suppression_is_lifted_for_an_af_like_spread_only() -> None:
    rr = chance_alternation(3)
    assert np.isnan(score(SHIPPED, rr)[-1])  # shipped: no verdict
    assert af_distance(contexts(rr, 32)[-1:], 0.34)[0] < 0.25
    assert np.isfinite(score((0.34, 1.5, 0.25, 0), rr)[-1])  # the spread is AF's: judged
    bigeminy = np.tile([0.5, 1.1], 20)
    assert af_distance(contexts(bigeminy, 32)[-1:], 0.34)[0] > 0.3
    assert np.isnan(score((0.34, 1.5, 0.25, 0), bigeminy)[-10:]).all()  # two-point: still no verdict


def test_the_distance_starts_at_a_rate_step_only_with_enough_differences_after_it() -> None:
    rng = np.random.default_rng(4)
    rr = np.concatenate([rng.gamma(25.0, 0.45 / 25.0, 24), 0.8 + rng.normal(0, 0.01, 8)])[None, :]
    first = int(np.argmax(~np.isnan(_after_rate_step(rr, 0.5)[0])))
    assert 24 <= first <= 26  # the offset is a step
    cut = ks_window(rr, 0.5, 3)
    np.testing.assert_array_equal(np.isnan(cut[0]), np.arange(32) < first)
    np.testing.assert_array_equal(ks_window(rr, 0.5, 10), rr)  # too few differences after it
    np.testing.assert_array_equal(ks_window(rr, 0.5, 0), rr)  # off
    assert af_distance(cut, 0.34)[0] > af_distance(rr, 0.34)[0] + 0.2  # the sinus beats look regular now


def test_the_loop_is_af_fits_leave_one_subject_out() -> None:
    rng = np.random.default_rng(5)
    series = []
    for g in ("1", "2", "3"):
        for _ in range(2):
            labels = rng.random(200) < 0.4
            rr = np.full(200, 0.8)
            series.append(Series(f"r{g}", g, ("rr",), T0 + np.arange(200.0), rr[:, None], labels))
    noise = (0.3, 0.5, 0.7)  # the settings differ in how well they separate
    table = {
        (0.3, float(k), 0.0, 0): [s.labels + rng.normal(0, n, 200) for s in series]
        for k, n in enumerate(noise)
    }
    folds, _ = leave_one_subject_out(table, series)
    rows, total = held_out(table, series, ["1", "2", "3"])  # type: ignore[arg-type]
    # af_fit's rows: subject, AF beats, non-AF beats, the setting, threshold, Se, Sp
    assert [(f.subject, *f.setting, f.threshold) for f in folds] == [(r[0], *r[3:8]) for r in rows]
    assert sum(f.metrics.fn for f in folds) == total.fn and sum(f.metrics.fp for f in folds) == total.fp


def test_fewest_missed_stays_within_the_false_allowance() -> None:
    score = np.array([0.9, 0.8, 0.7, np.nan, 0.6, 0.5, 0.4, 0.3])
    truth = np.array([True, False, True, True, False, True, False, True])
    assert fewest_missed(score, truth, 0) == (4, 0)  # above 0.8: only the 0.9
    assert fewest_missed(score, truth, 1) == (3, 1)  # above 0.6: 0.9 and 0.7 (0.8 false)
    assert fewest_missed(score, truth, 3) == (1, 3)  # everything with a verdict
