"""tools.evaluate.af_slow_step: the asymmetric cut is the detector's when s_slow >= rate_step, sees slowing
steps earlier otherwise, can cut after the pause, and its fit over grids is the single-grid fit when they
agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.config.loader import load_config
from agent.detectors.af import _after_rate_step
from tools.evaluate.af_features import contexts
from tools.evaluate.af_hysteresis import af_detector
from tools.evaluate.af_hysteresis import leave_one_subject_out as single_grid_loso
from tools.evaluate.af_offset import SETTINGS, build, shipped
from tools.evaluate.af_slow_step import (
    asymmetric_cut,
    asymmetric_scores,
    leave_one_subject_out,
    scorer,
    single_threshold,
)
from tools.evaluate.datasets import T0, Series

CPSC_CONFIG = Path(__file__).resolve().parents[2] / "tools" / "evaluate" / "configs" / "cpsc.toml"


def test_symmetric_when_the_slow_step_is_not_lower() -> None:
    rng = np.random.default_rng(0)
    rr = rng.lognormal(np.log(0.7), 0.35, (2000, 16))
    rr[rng.random(rr.shape) < 0.05] = np.nan
    for step in (0.4, 0.5, 0.7):
        cut, _ = asymmetric_cut(rr, step, step, after_pause=False)
        np.testing.assert_array_equal(np.isnan(cut), np.isnan(_after_rate_step(rr, step)))
    lower, _ = asymmetric_cut(rr, 0.5, 0.3, after_pause=False)
    assert (np.isnan(lower).sum(axis=1) > np.isnan(_after_rate_step(rr, 0.5)).sum(axis=1)).any()


def test_a_moderate_slowing_is_a_step_only_at_the_lower_level_and_the_pause_is_cut_off() -> None:
    rr = np.array([[0.45, 0.42, 0.47, 0.44, 0.46, 0.43, 1.1, 0.66, 0.68, 0.67]])  # log(0.67 / 0.45) = 0.4
    shipped_cut, slowing = asymmetric_cut(rr, 0.5, 0.5, after_pause=False)
    assert not slowing[0] and not np.isnan(shipped_cut).any()
    early, slowing = asymmetric_cut(rr, 0.5, 0.3, after_pause=False)
    assert slowing[0] and np.isnan(early[0, :4]).all()
    paused, _ = asymmetric_cut(rr, 0.5, 0.3, after_pause=True)
    np.testing.assert_array_equal(~np.isnan(paused[0]), np.arange(10) >= 7)  # after the 1.1 s pause
    faster = rr[:, ::-1].copy()  # a speeding step of the same size stays below rate_step
    assert not np.isnan(asymmetric_cut(faster, 0.5, 0.3, after_pause=False)[0]).any()


def rhythm(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sinus = 0.8 + rng.normal(0, 0.01, 40)
    af = rng.gamma(25.0, 0.45 / 25.0, 40)
    after = 0.72 + rng.normal(0, 0.01, 40)
    after[0] = 1.1
    return np.concatenate([sinus, af, after])


def test_scores_and_the_fit_over_grids() -> None:
    config = load_config(CPSC_CONFIG)
    records = []
    for k in (1, 2, 3):
        rr = rhythm(k)
        labels = np.zeros(rr.size, dtype=bool)
        labels[40:80] = True
        records.append(Series(f"r{k}", str(k), ("rr",), T0 + np.cumsum(rr), rr[:, None], labels))

    detector = af_detector(config, (2.0, 0.5))
    ctx = contexts(rhythm(4), 16)
    np.testing.assert_array_equal(asymmetric_scores(detector, ctx, np.inf, False), shipped(detector, ctx))
    rules = single_threshold()
    grid = build(config, records, scorer(0.3, True), rules)
    total, folds = leave_one_subject_out([grid, grid])
    expected, single = single_grid_loso(grid, np.ones(rules.enter.size, dtype=bool), SETTINGS, "youden")
    assert total == expected
    assert [(g, f[1], f[2]) for g, f, _ in folds] == [(g, s, i) for g, s, i, _ in single]
    assert all(f[0] == 0 for _, f, _ in folds)  # ties keep the first grid
