"""tools.evaluate.af_combine: the offline features replicate the pipeline's af score and are past-only,
the models fit what they should, and each held-out subject is scored by a fit on the others only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.config.loader import load_config
from agent.config.schema import DetectorConfig
from agent.detectors.af import AtrialFibrillationDetector
from tools.evaluate.af_combine import Variant, check, fit, leave_one_subject_out, record_features
from tools.evaluate.af_features import NAMES, RECENT, contexts, features
from tools.evaluate.af_models import boosted_trees, logistic
from tools.evaluate.datasets import T0, Series

CPSC_CONFIG = Path(__file__).resolve().parents[2] / "tools" / "evaluate" / "configs" / "cpsc.toml"


def rhythm(seed: int) -> np.ndarray:
    """Sinus, a PVC, fast AF (a rate step in and out), sinus again, a doubled beat: every rule in play."""
    rng = np.random.default_rng(seed)
    sinus = 0.85 + rng.normal(0, 0.01, 60)
    sinus[20], sinus[21] = 0.55, 1.15  # premature beat and compensatory pause
    af = rng.gamma(25.0, 0.45 / 25.0, 60)
    after = 0.9 + rng.normal(0, 0.01, 60)
    after[30] = 0.22  # a doubled beat: out of the detector's range (a long pause would add gap rows)
    return np.concatenate([sinus, af, after])


def series(group: str, rr: np.ndarray, labels: np.ndarray) -> Series:
    return Series(f"rec_{group}", group, ("rr",), T0 + np.cumsum(rr), rr[:, None], labels)


def test_offline_score_equals_the_pipeline_replay_on_every_beat() -> None:
    config = load_config(CPSC_CONFIG)
    records = [series(str(k), rhythm(k), np.zeros(180, dtype=bool)) for k in (1, 2)]
    feats = record_features(config, records)
    assert check(config, records, feats) == []
    assert np.isnan(feats[0]["score"][:2]).all() and np.isfinite(feats[0]["score"][2:]).mean() > 0.9
    assert set(NAMES) <= set(feats[0])


def test_features_of_a_beat_do_not_change_with_later_beats() -> None:
    config = load_config(CPSC_CONFIG)
    (record,) = record_features(config, [series("1", rhythm(3), np.zeros(180, dtype=bool))])
    changed = rhythm(3)
    changed[100:] = 0.4  # rewrite the future
    (other,) = record_features(config, [series("1", changed, np.zeros(180, dtype=bool))])
    for name in ("score", RECENT, *NAMES):
        np.testing.assert_array_equal(record[name][:100], other[name][:100], err_msg=name)
    assert not np.array_equal(record["log_trend"][100:], other["log_trend"][100:])


def test_contexts_hold_each_beat_and_its_past_only() -> None:
    c = contexts(np.arange(1.0, 6.0), 3)
    np.testing.assert_array_equal(c[0], [np.nan, np.nan, 1.0])
    np.testing.assert_array_equal(c[4], [3.0, 4.0, 5.0])


def test_logistic_regression_recovers_a_rate_exponent() -> None:
    rng = np.random.default_rng(5)
    irregularity, trend = rng.normal(-3, 1, 4000), rng.normal(-0.3, 0.3, 4000)
    truth = irregularity + 2.0 * (np.log(0.8) - trend) + rng.logistic(0, 0.05, 4000) > -3.0
    model = logistic(np.column_stack([irregularity, trend]), truth)
    # The logit's slopes per unit of each raw feature: trend / irregularity ≈ -2.
    base = model(np.zeros((1, 2)))[0]
    slope_irr = model(np.array([[1.0, 0.0]]))[0] - base
    slope_trend = model(np.array([[0.0, 1.0]]))[0] - base
    assert 1.8 < -slope_trend / slope_irr < 2.2
    assert np.mean((model(np.column_stack([irregularity, trend])) > 0) == truth) > 0.95


def test_depth_two_trees_learn_an_interaction_a_linear_model_cannot() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2000, 2))
    truth = (x[:, 0] > 0) ^ (x[:, 1] > 0)
    assert np.mean((logistic(x, truth)(x) > 0) == truth) < 0.6
    assert np.mean((boosted_trees(x, truth, depth=2)(x) > 0) == truth) > 0.9


def test_each_held_out_subject_is_scored_by_a_fit_on_the_others() -> None:
    # The feature rises with AF on subjects 1 and 2 and falls on subject 3, which has twice their beats
    # together: a fit that saw the held-out subject would get subject 3 right and 1 and 2 wrong.
    def subject(n: int, sign: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        truth = np.arange(n) >= n // 2
        return truth, {"log_score": sign * np.where(truth, 1.0, -1.0), "no_verdict": np.zeros(n)}

    parts = [subject(100, 1.0), subject(100, 1.0), subject(400, -1.0)]
    records = [series(str(g), np.full(len(t), 0.8), t) for g, (t, _) in enumerate(parts, start=1)]
    variant = Variant("lr", "logistic", ("log_score",))
    held = leave_one_subject_out(variant, records, [f for _, f in parts])
    by_subject = {row[0]: row[3:5] for row in held.rows}  # (Se, Sp)
    assert by_subject == {"1": (0.0, 0.0), "2": (0.0, 0.0), "3": (0.0, 0.0)}
    peeked = fit(variant, [f for _, f in parts], [t for t, _ in parts])
    assert (peeked.model(parts[2][1]) > peeked.youden).tolist() == parts[2][0].tolist()


def test_features_measure_the_rules_newest_beats_when_the_ks_term_widens_the_context() -> None:
    rng = np.random.default_rng(7)
    rr = np.concatenate([np.full(40, 0.8) + rng.normal(0, 0.01, 40), rng.gamma(25.0, 0.5 / 25.0, 60)])

    def detector(**params: float) -> AtrialFibrillationDetector:
        base = {"verdict_beats": 3, "min_differences": 2, "rate_exponent": 2.0, "rate_step": 0.5}
        return AtrialFibrillationDetector.from_config(
            DetectorConfig("af", "af", "rr", ("rr",), params=base | params), 1.0
        )

    wide, plain = detector(ks_beats=32), detector()
    with_ks = features(wide, contexts(rr, wide.context_beats))
    without = features(plain, contexts(rr, plain.context_beats))
    for name in NAMES:
        if name != "log_score":  # the score carries the ks term; the rules' features do not
            np.testing.assert_array_equal(with_ks[name], without[name], err_msg=name)
    assert not np.array_equal(with_ks["score"], without["score"], equal_nan=True)
