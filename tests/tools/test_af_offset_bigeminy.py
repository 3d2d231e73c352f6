"""tools.evaluate.af_offset and af_bigeminy: the replicas equal the shipped detector when the variant is off,
each variant changes what it says and nothing else, and the report's folds run end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.config.loader import load_config
from agent.detectors.af import _after_rate_step
from tools.evaluate.af_bigeminy import alternating
from tools.evaluate.af_bigeminy import scorer as bigeminy_scorer
from tools.evaluate.af_features import contexts
from tools.evaluate.af_hysteresis import af_detector
from tools.evaluate.af_offset import (
    BASELINE,
    NO_FALLBACK,
    PAIRS_AFTER,
    check_replica,
    newest_step,
    offset_causes,
    report,
    rules,
    shipped,
    variant,
    variant_scores,
)
from tools.evaluate.datasets import T0, Series

CPSC_CONFIG = Path(__file__).resolve().parents[2] / "tools" / "evaluate" / "configs" / "cpsc.toml"


def rhythm(seed: int) -> np.ndarray:
    """Sinus with a PVC, fast AF, a pause and slower sinus with a PAC right after the offset."""
    rng = np.random.default_rng(seed)
    sinus = 0.8 + rng.normal(0, 0.01, 60)
    sinus[20], sinus[21] = 0.5, 1.1
    af = rng.gamma(25.0, 0.42 / 25.0, 60)
    after = 0.78 + rng.normal(0, 0.01, 60)
    after[0] = 1.1  # the pause that ends AF
    after[4], after[5] = 0.45, 1.05  # a premature beat and its compensatory pause
    return np.concatenate([sinus, af, after])


def series(group: str, rr: np.ndarray) -> Series:
    labels = np.zeros(rr.size, dtype=bool)
    labels[60:120] = True
    return Series(f"rec_{group}", group, ("rr",), T0 + np.cumsum(rr), rr[:, None], labels)


def test_newest_step_cuts_like_the_detector_and_knows_its_direction() -> None:
    slow = np.concatenate([np.full(8, 0.4), np.full(8, 0.8)])[None, :]
    fast = slow[:, ::-1].copy()
    flat = np.full((1, 16), 0.8)
    rows = np.concatenate([slow, fast, flat])
    cut, slowing = newest_step(rows, 0.5)
    np.testing.assert_array_equal(cut, _after_rate_step(rows, 0.5))
    assert slowing.tolist() == [True, False, False]
    assert np.isnan(cut[0, :8]).all() and not np.isnan(cut[2]).any()


def test_the_shipped_replica_is_the_detector_and_variants_touch_only_offsets() -> None:
    config = load_config(CPSC_CONFIG)
    records = [series(str(k), rhythm(k)) for k in (1, 2)]
    assert check_replica(config, records, variant(BASELINE)) == 0
    assert check_replica(config, records, variant(NO_FALLBACK)) > 0
    detector = af_detector(config, (2.0, 0.5))
    rr = contexts(rhythm(3), detector.context_beats)
    base = variant_scores(detector, rr, BASELINE)
    np.testing.assert_array_equal(base, shipped(detector, rr))
    for name in (NO_FALLBACK, PAIRS_AFTER):
        got = variant_scores(detector, rr, name)
        changed = ~np.isclose(got, base, rtol=0, atol=0, equal_nan=True)
        ok = (contexts(rhythm(3), 16) >= 0.25) & (contexts(rhythm(3), 16) <= 2.5)
        _, slowing = newest_step(np.where(ok, contexts(rhythm(3), 16), np.nan), 0.5)
        assert not (changed & ~slowing).any()  # only beats whose newest step slows
    # past-only: rewriting the future leaves earlier verdicts alone
    future = rhythm(3)
    future[150:] = 0.4
    again = variant_scores(detector, contexts(future, 16), PAIRS_AFTER)
    np.testing.assert_array_equal(again[:150], variant_scores(detector, rr, PAIRS_AFTER)[:150])


def test_alternation() -> None:
    bigeminy = np.tile([0.6, 1.0], 8)[None, :]
    broken = bigeminy.copy()
    broken[0, -1] = 0.55  # two short intervals in a row at the end: one pair does not alternate
    assert alternating(bigeminy, 8, 0).tolist() == [True]
    assert alternating(broken, 8, 0).tolist() == [False]
    assert alternating(broken, 8, 1).tolist() == [True]


def test_stricter_bigeminy_scores_chance_alternation_but_not_bigeminy() -> None:
    config = load_config(CPSC_CONFIG)
    detector = af_detector(config, (2.0, 0.5))
    assert check_replica(config, [series("1", rhythm(1))], bigeminy_scorer(None)) == 0
    bigeminy = contexts(np.tile([0.6, 1.0], 20), 16)
    # mostly short-long, with breaks: the median lag-2 test calls it bigeminal, alternation does not
    chance = np.array(
        [0.5, 0.8, 0.52, 0.79, 0.5, 0.5, 0.81, 0.52, 0.8, 0.51, 0.51, 0.8, 0.5, 0.79, 0.52, 0.8]
    )
    rr = contexts(chance, 16)[-1:]
    assert np.isnan(shipped(detector, rr)).all()
    assert np.isfinite(bigeminy_scorer(0)(detector, rr)).all()
    assert np.isnan(bigeminy_scorer(0)(detector, bigeminy)[10:]).all()
    assert np.isnan(bigeminy_scorer(1)(detector, bigeminy)[10:]).all()


def test_the_report_runs_its_folds() -> None:
    config = load_config(CPSC_CONFIG)
    records = [series(str(k), rhythm(k)) for k in (1, 2, 3)]
    r = rules()
    single = (r.ratio == 1) & (r.below == 1)
    text = report("t", config, records, records[:1], {BASELINE: shipped}, [(BASELINE, BASELINE, single)])
    assert "| shipped rule |" in text and "held-out subject" in text


def test_offset_causes_account_for_every_false_beat_after_an_offset() -> None:
    config = load_config(CPSC_CONFIG)
    records = [series(str(k), rhythm(k)) for k in (1, 2, 3)]
    causes, seen, offsets = offset_causes(config, records)
    detector = af_detector(config, (2.0, 0.5))
    flagged = 0
    for s in records:
        score = shipped(detector, contexts(s.values[:, 0], 16))
        tail = slice(120, 140)  # the 20 beats after the offset
        flagged += int(((np.nan_to_num(score[tail], nan=0.0) > 0.057) & ~s.labels[tail]).sum())
    assert offsets == 3 and 0 <= seen <= 3
    assert sum(causes.values()) == flagged
