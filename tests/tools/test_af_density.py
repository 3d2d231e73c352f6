"""tools.evaluate.af_density: binned and parametric KS distances from AF's ΔRR, and the Lorenz evidence."""

from __future__ import annotations

import numpy as np

from tools.evaluate.af_density import (
    fit_reference,
    ks_distance,
    laplace_cdf,
    lorenz_evidence,
    parametric_distance,
)


def test_a_bin_with_too_few_values_borrows_its_neighbours() -> None:
    rng = np.random.default_rng(1)
    deltas = rng.normal(0, 0.1, (100, 10))
    level = np.full(100, 0.62)  # all in the 0.60-0.65 bin
    ref = fit_reference(deltas, level, min_values=500)
    home = int(ref.bin_of(np.array([0.62]))[0])
    assert ref.samples[home].size == 1000  # enough on its own
    assert ref.samples[home + 3].size == 1000  # empty bins reach it three bins away
    assert np.all(np.diff(ref.samples[home]) >= 0)  # sorted


def test_samples_like_the_reference_are_near_and_regular_ones_far() -> None:
    rng = np.random.default_rng(2)
    ref = fit_reference(rng.normal(0, 0.1, (400, 15)), np.full(400, 0.6))
    like = rng.normal(0, 0.1, (50, 15))
    regular = np.zeros((1, 15))
    level = np.full(50, 0.6)
    assert np.median(ks_distance(like, level, ref)) < 0.25
    assert ks_distance(regular, np.array([0.6]), ref)[0] > 0.45
    few = np.full((1, 15), np.nan)
    few[0, 0] = 0.1
    assert np.isnan(ks_distance(few, np.array([0.6]), ref)[0])  # one value: no verdict


def test_parametric_distance_of_constant_values_from_a_symmetric_family_is_one_half() -> None:
    rows = np.array([[0.0] * 10, [5.0] * 10])
    distance = parametric_distance(rows, laplace_cdf)
    assert distance[0] == 0.5 and distance[1] > 0.99


def test_lorenz_evidence_counts_occupied_bins_minus_origin_points_and_ectopy() -> None:
    regular = np.zeros((1, 6))  # 5 points, all in the origin bin
    assert lorenz_evidence(regular, 0.04)[0] == -5.0
    scattered = np.array([[0.0, 0.1, -0.2, 0.3, -0.1, 0.2]])  # 5 points in 5 different bins off the origin
    assert lorenz_evidence(scattered, 0.04)[0] == 5.0
    assert lorenz_evidence(scattered, 0.04, np.array([1.0]))[0] == 3.0
    repeated = np.array([[0.1, -0.1, 0.1, -0.1, 0.1]])  # bigeminal swing: 2 bins, 4 points
    assert lorenz_evidence(repeated, 0.04)[0] == 2.0
    assert np.isnan(lorenz_evidence(np.full((1, 6), np.nan), 0.04)[0])
