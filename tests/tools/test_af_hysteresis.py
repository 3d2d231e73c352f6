"""tools.evaluate.af_hysteresis: the rhythm state is past-only, reduces to the single threshold at ratio 1
and m 1, enters and leaves where the rule says, and each held-out subject is scored by a fit on the others."""

from __future__ import annotations

import numpy as np

from tools.evaluate.af_hysteresis import (
    ERROR_CLASSES,
    Grid,
    Rules,
    choose,
    error_classes,
    leave_one_subject_out,
    onsets_and_offsets,
    record_counts,
    rhythm_state,
)
from tools.evaluate.datasets import T0, Series


def rules(enter: float, ratio: float, m: int, hold: bool = False) -> Rules:
    return Rules(np.array([enter]), np.array([ratio]), np.array([m]), np.array([hold]))


def scores(seed: int, n: int = 400) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s = rng.lognormal(np.log(0.06), 0.6, n)
    s[rng.random(n) < 0.1] = np.nan
    return s


def test_ratio_one_and_one_beat_is_the_single_threshold() -> None:
    grid = Rules.grid()
    single = ~grid.hold & (grid.ratio == 1) & (grid.below == 1)
    picked = Rules(grid.enter[single], grid.ratio[single], grid.below[single], grid.hold[single])
    s = scores(1)
    expected = np.nan_to_num(s, nan=-np.inf)[:, None] > picked.enter[None, :]
    np.testing.assert_array_equal(rhythm_state(s, picked), expected)


def test_a_verdict_never_changes_with_later_beats() -> None:
    grid = Rules.grid()
    s = scores(2)
    reset = np.random.default_rng(3).random(s.size) < 0.05
    before = rhythm_state(s, grid, reset)
    future = s.copy()
    future[250:] = np.where(np.isnan(future[250:]), 0.3, np.nan)  # rewrite the future
    after = rhythm_state(future, grid, reset)
    np.testing.assert_array_equal(before[:250], after[:250])
    assert not np.array_equal(before[250:], after[250:])


def test_enters_above_t_enter_and_leaves_after_m_beats_at_or_below_t_exit() -> None:
    s = np.array([0.05, 0.09, 0.05, 0.03, 0.05, 0.03, 0.03, 0.05, 0.09, 0.04, 0.04])
    # enter at 0.08, exit at 0.04 (ratio 0.5) after 2 beats in a row; 0.05 resets the count
    got = rhythm_state(s, rules(0.08, 0.5, 2))[:, 0]
    assert got.astype(int).tolist() == [0, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0]
    got = rhythm_state(s, rules(0.08, 0.5, 1))[:, 0]
    assert got.astype(int).tolist() == [0, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0]


def test_no_verdict_beats_count_as_below_or_hold_the_state() -> None:
    s = np.array([0.1, np.nan, np.nan, 0.06, np.nan])
    below = rhythm_state(s, rules(0.08, 0.5, 2))[:, 0]
    hold = rhythm_state(s, rules(0.08, 0.5, 2, hold=True))[:, 0]
    assert below.astype(int).tolist() == [1, 1, 0, 0, 0]
    assert hold.astype(int).tolist() == [1, 1, 1, 1, 1]
    # holding never enters AF on a no-verdict beat
    assert not rhythm_state(np.array([np.nan, np.nan]), rules(0.08, 1.0, 1, hold=True)).any()


def test_a_reset_leaves_af_before_the_beat_is_judged() -> None:
    s = np.array([0.1, 0.05, 0.05, 0.05])
    reset = np.array([False, False, True, False])
    got = rhythm_state(s, rules(0.08, 0.5, 1), reset)[:, 0]
    assert got.astype(int).tolist() == [1, 1, 0, 0]


def series(name: str, group: str, labels: np.ndarray) -> Series:
    rr = np.full(labels.size, 0.8)
    return Series(name, group, ("rr",), T0 + np.cumsum(rr), rr[:, None], labels)


def test_each_held_out_subject_is_scored_by_a_fit_on_the_others() -> None:
    # Setting A separates AF on subjects 1 and 2, setting B on subject 3, which has twice their beats
    # together: a fit that saw the held-out subject would get it right; each fold gets its subject wrong.
    def subject(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        truth = np.arange(n) >= n // 2
        return truth, np.where(truth, 0.2, 0.05), np.where(truth, 0.05, 0.2)

    parts = [subject(100), subject(100), subject(400)]
    records = [series(f"r{g}", str(g), t) for g, (t, _, _) in enumerate(parts, start=1)]
    a, b = (1.0, 0.0), (2.0, 0.0)
    s = {a: [parts[0][1], parts[1][1], parts[2][2]], b: [parts[0][2], parts[1][2], parts[2][1]]}
    r = Rules.grid()
    grid = Grid(records, r, {k: record_counts(v, records, r) for k, v in s.items()}, s)
    family = ~r.hold & (r.ratio == 1) & (r.below == 1)
    total, folds = leave_one_subject_out(grid, family, [a, b], "youden")
    by_subject = {g: (setting, m.sensitivity, m.specificity) for g, setting, _, m in folds}
    assert by_subject == {"1": (b, 0.0, 0.0), "2": (b, 0.0, 0.0), "3": (a, 0.0, 0.0)}
    assert total.tp == 0 and total.tn == 0
    assert choose(grid, family, [a, b], {"3"}, "youden")[0] == b  # what 3 alone would pick
    assert choose(grid, family, [a, b], {"1", "2"}, "youden")[0] == a


def test_error_classes_and_onsets() -> None:
    truth = np.zeros(80, dtype=bool)
    truth[40:60] = True
    verdict = truth.copy()
    verdict[40:43] = False  # a late onset: near a boundary
    verdict[60:65] = True  # a tail after the offset
    verdict[20] = True  # a lone false beat
    score = np.full(80, 0.05)
    counts = dict(zip(ERROR_CLASSES, error_classes(verdict, truth, score).tolist(), strict=True))
    assert counts["AF, within 10 beats of a boundary"] == 3
    assert counts["non-AF, within 10 beats of a boundary"] == 5
    assert counts["non-AF, elsewhere"] == 1
    assert sum(counts.values()) == 9
    delays, tails = onsets_and_offsets(verdict, series("r", "1", truth))
    assert len(delays) == 1 and delays[0] is not None
    assert delays[0][0] == 3 and abs(delays[0][1] - 2.4) < 1e-6
    assert tails == [5]
