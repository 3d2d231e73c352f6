"""new_extreme: a sample beyond the range seen so far scores its excursion in units of that range."""

from __future__ import annotations

import numpy as np
import pytest
from detector_drive import make, normal_block, run, scores_of

from agent.errors import ConfigError


def drive(values: list[float], **params: float) -> np.ndarray:
    detector = make("new_extreme", **params)
    return scores_of(run(detector, np.asarray(values, float)[None, :, None]))[:, 0]


def test_no_verdict_during_the_warm_up_then_the_excursion_beyond_the_range() -> None:
    scores = drive([0.0, 10.0, 5.0, 12.0, 4.0, -5.0], warmup_s=3.0)
    assert np.isnan(scores[:3]).all()
    assert scores[3] == pytest.approx(2.0 / 10.0)  # 2 above the old max, range 10
    assert scores[4] == pytest.approx(-4.0 / 12.0)  # inside [0, 12]: nearest bound 4 away
    assert scores[5] == pytest.approx(5.0 / 12.0)


def test_a_level_that_stays_up_scores_once() -> None:
    values = [0.0, 1.0] * 20 + [5.0] * 10
    detector = make("new_extreme", warmup_s=10.0)
    exceeded = np.array([b.exceeded[0] for b in run(detector, np.asarray(values)[None, :, None])])
    assert exceeded.sum() == 1 and exceeded[40]


def test_a_flat_history_is_floored_instead_of_dividing_by_zero() -> None:
    scores = drive([100.0] * 5 + [100.5], warmup_s=5.0)
    assert scores[-1] == pytest.approx(0.5 / 1.0)  # floor: 1 % of |100|


def test_missing_samples_neither_score_nor_count_toward_the_warm_up() -> None:
    scores = drive([1.0, np.nan, 2.0, np.nan, 3.0], warmup_s=2.0)
    assert np.isnan(scores[:4]).all()
    assert scores[4] == pytest.approx(1.0)


def test_the_explanation_names_the_old_record_and_the_limit() -> None:
    detector = make("new_extreme", warmup_s=2.0, threshold=0.1)
    block = run(detector, np.array([[[0.0], [10.0], [13.0]]]))[-1]
    assert block.observed[0] == 13.0
    assert block.baseline[0, 0] == 10.0
    assert block.limits[0] == pytest.approx(11.0)
    assert block.exceeded[0]


def test_calibration_leaves_the_threshold_alone() -> None:
    detector = make("new_extreme", threshold=0.2)
    detector.calibrate(normal_block(np.random.default_rng(0).normal(size=(2, 500, 1))), 1.0, 1.0)
    assert detector.threshold == 0.2
    assert detector.calibration_refusal()


def test_a_negative_threshold_names_its_key() -> None:
    with pytest.raises(ConfigError, match=r"detectors\.new_extreme_1\.params\.threshold"):
        make("new_extreme", threshold=-0.1)
