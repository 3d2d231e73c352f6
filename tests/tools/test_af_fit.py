"""tools.evaluate.af_fit: the rate exponent, rate step and threshold are chosen on the given subjects only,
and each grid point is a real pipeline replay with the exponent and step applied."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tools.evaluate.af_fit import KS_EXPONENTS, KS_SCALES, Setting, choose, grid, params_of
from tools.evaluate.datasets import T0, FloatArray, Series
from tools.evaluate.replay import scores_with_params

CPSC_CONFIG = Path(__file__).resolve().parents[2] / "tools" / "evaluate" / "configs" / "cpsc.toml"


def beats(group: str, labels: np.ndarray, rr: np.ndarray | None = None) -> Series:
    rr = np.full(len(labels), 0.8) if rr is None else rr
    times = T0 + np.cumsum(rr)
    return Series(f"rec_{group}", group, ("rr",), times, rr[:, None], labels)


def test_choose_uses_only_the_subjects_it_is_given() -> None:
    truth = np.array([False] * 50 + [True] * 50)
    series = [beats("1", truth), beats("2", truth), beats("3", truth)]
    clean = np.where(truth, 1.0, 0.0)
    wrong = np.where(truth, 0.0, 1.0)
    scores: dict[Setting, list[FloatArray]] = {
        (0.0, 0.0): [clean, clean, wrong],  # separates subjects 1 and 2, inverted on 3
        (1.0, 0.5): [wrong, wrong, clean],  # the reverse
    }
    fit = choose(scores, series, {"1", "2"})
    assert (fit.exponent, fit.step) == (0.0, 0.0) and fit.youden == 2.0
    assert 0.0 <= fit.threshold < 1.0
    assert (choose(scores, series, {"3"}).exponent, choose(scores, series, {"3"}).step) == (1.0, 0.5)


def test_each_grid_point_is_a_pipeline_replay_with_that_rate_exponent() -> None:
    rng = np.random.default_rng(3)
    rr = rng.gamma(25.0, 0.5 / 25.0, 80)  # irregular, fast (RR trend ~0.5 s)
    series = beats("1", np.ones(80, dtype=bool), rr)
    flat, weighted = scores_with_params(
        CPSC_CONFIG, "af", [({"rate_exponent": 0.0}, series), ({"rate_exponent": 2.0}, series)], jobs=1
    )
    assert np.isnan(flat[:2]).all() and np.isnan(weighted[:2]).all()  # the pipeline waits for 3 beats
    ratio = weighted[2:] / flat[2:]
    ratio = ratio[np.isfinite(ratio)]
    assert ratio.size > 50
    assert 1.8 < np.median(ratio) < 3.6  # (0.8 s / ~0.5 s) ** 2 ≈ 2.6


def test_each_grid_point_replays_with_its_rate_step() -> None:
    rng = np.random.default_rng(4)
    rr = np.concatenate([np.full(40, 0.85) + rng.normal(0, 0.01, 40), rng.gamma(25.0, 0.45 / 25.0, 40)])
    series = beats("1", np.arange(80) >= 40, rr)
    settings = [{"rate_exponent": 2.0, "rate_step": 0.0}, {"rate_exponent": 2.0, "rate_step": 0.5}]
    whole, cut = scores_with_params(CPSC_CONFIG, "af", [(o, series) for o in settings], jobs=1)
    np.testing.assert_array_equal(whole[:40], cut[:40])  # no step yet: the same beats measured
    assert not np.allclose(whole[40:50], cut[40:50], equal_nan=True)  # after the step: the new rhythm alone


def test_the_ks_grid_keeps_the_configs_rate_settings_and_includes_the_option_off() -> None:
    settings = grid(CPSC_CONFIG, ks=True)
    assert settings[0][3] == 0.0 and all(s[:2] == (2.0, 0.5) for s in settings)
    assert len(settings) == 1 + len(KS_SCALES) * len(KS_EXPONENTS)
    assert params_of(settings[0]) == {"rate_exponent": 2.0, "rate_step": 0.5, "ks_beats": 0}
    assert params_of(settings[1]) == {
        "rate_exponent": 2.0,
        "rate_step": 0.5,
        "ks_beats": 32,
        "ks_scale": settings[1][2],
        "ks_exponent": settings[1][3],
    }
    assert len(grid(CPSC_CONFIG, ks=False)) == 45 and params_of((2.0, 0.4)) == {
        "rate_exponent": 2.0,
        "rate_step": 0.4,
    }


def test_each_ks_grid_point_replays_with_the_option() -> None:
    rng = np.random.default_rng(5)
    series = beats("1", np.ones(60, dtype=bool), rng.gamma(25.0, 0.5 / 25.0, 60))
    off, on = scores_with_params(
        CPSC_CONFIG, "af", [(params_of(s), series) for s in grid(CPSC_CONFIG, ks=True)[:2]], jobs=1
    )
    both = np.isfinite(off) & np.isfinite(on)
    assert both.sum() > 50 and (on[both] > off[both]).all()  # score / D ** k with D < 1
