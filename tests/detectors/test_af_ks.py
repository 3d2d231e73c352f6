"""The af detector's ΔRR-distribution option (ks_*): a KS distance from AF's ΔRR divides the score."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from test_af import af, make, scores, sinus, slide

from agent.detectors.rr_distribution import af_distance, normal_cdf
from agent.errors import ConfigError

KS = {"ks_beats": 32, "ks_scale": 0.34, "ks_exponent": 1.5}


def test_normal_cdf_matches_erf() -> None:
    x = np.array([-np.inf, -3.0, -1.0, -0.2, 0.0, 0.5, 2.0, np.inf])
    expected = [0.5 * (1 + math.erf(v / math.sqrt(2))) if np.isfinite(v) else float(v > 0) for v in x]
    np.testing.assert_allclose(normal_cdf(x), expected, atol=2e-7)


def test_af_like_differences_are_near_and_regular_or_ectopic_ones_far() -> None:
    rng = np.random.default_rng(1)
    mean_rr = 0.6
    # RR whose ΔRR / mean RR is Normal(0, 0.34): a random walk's steps, so the differences are exactly that
    steps = rng.normal(0, 0.34 * mean_rr, (200, 32))
    walk = mean_rr + np.concatenate([np.zeros((200, 1)), np.cumsum(steps, axis=1)], axis=1)
    walk -= walk.mean(axis=1, keepdims=True) - mean_rr  # mean RR exactly 0.6 s
    regular = np.full((1, 33), 0.8)
    ectopic = np.full((1, 33), 0.8)
    ectopic[0, 10], ectopic[0, 11] = 0.5, 1.1  # one premature beat and its pause
    near = af_distance(walk, 0.34)
    assert np.median(near) < 0.2
    assert af_distance(regular, 0.34)[0] == pytest.approx(0.5, abs=1e-6)  # all ΔRR 0: CDF jumps at 0.5
    assert af_distance(ectopic, 0.34)[0] > 0.4


def test_out_of_range_intervals_drop_their_differences_and_too_few_give_nan() -> None:
    rr = np.array([[np.nan, np.nan, 0.7, np.nan], [0.7, 0.6, np.nan, 0.8], [0.7, 0.6, 0.9, np.nan]])
    distance = af_distance(rr, 0.34)
    assert np.isnan(distance[0]) and np.isnan(distance[1])  # 0 and 1 differences
    assert np.isfinite(distance[2])


def test_the_option_lifts_af_more_than_sinus_and_is_off_by_default() -> None:
    rng = np.random.default_rng(2)
    rr = np.concatenate([sinus(rng, 100), af(rng, 100)])
    plain, with_ks = scores(make(), rr), scores(make(**KS), rr)
    assert make().ks_beats == 0 and make().context_beats == 16
    gain = with_ks / plain
    assert np.nanmedian(gain[140:]) > 2.0 * np.nanmedian(gain[40:100])  # AF-like ΔRR gain much more
    assert (gain[np.isfinite(gain)] >= 1.0).all()  # D <= 1: the score never drops


def test_the_distance_sees_32_beats_remembered_while_the_rules_see_16() -> None:
    rng = np.random.default_rng(3)
    rr = np.concatenate([sinus(rng, 40), af(rng, 60)])[None, :]
    detector = make(**KS)
    assert detector.context_beats == 32 and detector.score_beats == 16
    streamed = slide(detector, rr, range(8, 100))
    stateless = make(**KS, verdict_beats=16)
    assert stateless.window == 16  # the window still holds only 16: the other 16 are remembered
    np.testing.assert_array_equal(streamed[7:], slide(stateless, rr, range(15, 100)))
    # The 16 beats the rules see are the same with and without the option: only the distance changed.
    plain = slide(make(), rr, range(8, 100))
    distance = af_distance(np.lib.stride_tricks.sliding_window_view(rr[0], 32)[1:85], 0.34)
    expected = plain[24:, 0] / np.maximum(np.nan_to_num(distance, nan=1.0), 1e-3) ** 1.5
    np.testing.assert_allclose(streamed[24:, 0], expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"ks_beats": 12}, "ks_beats"),  # shorter than window_beats (16)
        ({"ks_beats": 300}, "ks_beats"),
        ({"ks_beats": 32, "ks_scale": 0.0}, "ks_scale"),
        ({"ks_beats": 32, "ks_exponent": 5.0}, "ks_exponent"),
    ],
)
def test_bad_ks_params_name_their_key(params: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        make(**params)
    assert err.value.path == f"detectors.af.params.{key}"


def chance_alternation(rng: np.random.Generator) -> np.ndarray:
    """AF whose newest intervals alternate short-long by chance: the lag-2 rule calls the window bigeminal."""
    alternating = np.array([0.45, 0.78, 0.47, 0.75, 0.44, 0.79, 0.46, 0.76, 0.45, 0.77])
    return np.concatenate([rng.gamma(12.0, 0.6 / 12.0, 24), alternating])


def test_ks_bigeminy_scores_bigeminal_windows_with_an_af_like_spread_only() -> None:
    rng = np.random.default_rng(3)
    rr = chance_alternation(rng)
    bigeminy = np.tile([0.5, 1.1], 20)  # two-point ΔRR: far from AF's (D > 0.3)
    gated = {**KS, "ks_bigeminy": 0.25}
    assert make(**KS).ks_bigeminy == 0.0  # off by default
    assert np.isnan(scores(make(**KS), rr)[-1])  # bigeminal: no verdict
    assert af_distance(rr[None, -32:], 0.34)[0] < 0.25
    lifted = scores(make(**gated), rr)
    assert np.isfinite(lifted[-1])  # the spread is AF's: judged, and as AF
    assert lifted[-1] > make(**gated).threshold
    # The lifted score is the rules' score without the bigeminal suppression (no rate steps here).
    free = scores(make(**KS, bigeminy_ratio=0.0), rr)
    assert lifted[-1] == pytest.approx(free[-1], rel=1e-12)
    assert np.isnan(scores(make(**gated), bigeminy)[-10:]).all()  # bigeminy proper: still no verdict
    # Windows with a verdict are scored as before.
    plain = scores(make(**KS), rr)
    has = ~np.isnan(plain)
    np.testing.assert_array_equal(lifted[has], plain[has])


def test_ks_bigeminy_is_off_with_the_distance() -> None:
    rr = chance_alternation(np.random.default_rng(3))
    np.testing.assert_array_equal(scores(make(ks_bigeminy=0.25), rr), scores(make(), rr))


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_bad_ks_bigeminy_names_its_key(value: float) -> None:
    with pytest.raises(ConfigError) as err:
        make(**KS, ks_bigeminy=value)
    assert err.value.path == "detectors.af.params.ks_bigeminy"
    assert "expected 0 (off) .. below 1" in str(err.value)
