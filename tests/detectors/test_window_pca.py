"""The `window_pca` detector: each stream's own PCA of its first rows, squared distance from it."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from detector_drive import run, scores_of
from numpy.lib.stride_tricks import sliding_window_view

from agent.config.schema import DetectorConfig
from agent.detectors.adaptation import adaptation_quantile, learning_rows
from agent.detectors.window_pca import WindowPcaDetector, fit_window_pca
from agent.errors import ConfigError

CHANNELS = ("a", "b", "c")
ADAPT = 120


def correlated(rng: np.random.Generator, streams: int, length: int) -> np.ndarray:
    """Three channels driven by one slow common source plus small independent noise."""
    source = np.cumsum(rng.normal(0, 0.3, (streams, length)), axis=1)
    mix = np.array([1.0, -2.0, 0.5])
    out: np.ndarray = (
        source[:, :, None] * mix + rng.normal(0, 0.1, (streams, length, 3)) + np.array([5.0, 1.0, -3.0])
    )
    return out


def detector(**overrides: float) -> WindowPcaDetector:
    params: dict[str, float] = {"adapt_rows": ADAPT, "smooth_rows": 5, "threshold_margin": 2.0}
    params.update(overrides)
    return WindowPcaDetector("pca", CHANNELS, 4, **params)  # type: ignore[arg-type]


def test_scores_and_threshold_match_a_direct_computation() -> None:
    values = correlated(np.random.default_rng(1), 1, 200)
    blocks = run(detector(), values)
    mean, scale, basis = fit_window_pca(values[0, :ADAPT], 4, 6, np.full(3, 1e-6))
    flat = sliding_window_view((values[0] - mean) / scale, 4, axis=0).transpose(0, 2, 1).reshape(-1, 12)
    raw = ((flat - flat @ basis @ basis.T) ** 2).sum(axis=1)  # window ending at row t is raw[t - 3]
    expected_threshold = 2.0 * adaptation_quantile(raw[: ADAPT - 3], 5, 0.95)
    for t in (ADAPT, ADAPT + 1, 150, 199):
        assert blocks[t].scores[0] == pytest.approx(raw[t - 7 : t - 2].mean(), rel=1e-9)
        assert blocks[t].thresholds[0] == pytest.approx(expected_threshold, rel=1e-9)
    # Rows used for adaptation get no verdict.
    assert all(math.isnan(b.scores[0]) for b in blocks[:ADAPT])
    np.testing.assert_allclose(blocks[150].baseline[0], values[0, :ADAPT].mean(axis=0))


def test_a_broken_correlation_alarms_and_normal_continuation_mostly_does_not() -> None:
    values = correlated(np.random.default_rng(2), 2, 400)
    values[1, 250:, 1] = values[1, 249, 1] + np.random.default_rng(3).normal(0, 0.1, 150)  # b stops following
    blocks = run(detector(threshold_margin=3.0), values)
    exceeded = np.array([b.exceeded for b in blocks])
    assert exceeded[ADAPT:, 0].mean() < 0.05
    assert exceeded[270:, 1].mean() > 0.9
    contributions = np.array([b.contributions[1] for b in blocks[300:]])
    assert (contributions.argmax(axis=1) == 1).mean() > 0.5  # the explanation names channel b mostly


def test_causal_and_vectorised_over_streams() -> None:
    values = correlated(np.random.default_rng(4), 3, 260)
    changed = values.copy()
    changed[:, 200:] += 50.0
    full, altered = scores_of(run(detector(), values)), scores_of(run(detector(), changed))
    np.testing.assert_array_equal(full[:200], altered[:200])
    assert not np.allclose(full[200:], altered[200:])
    slots = np.array([5, 0, 9])
    together = scores_of(run(detector(), values, slots=slots))
    for i in range(3):
        alone = scores_of(run(detector(), values[i : i + 1]))
        np.testing.assert_allclose(together[:, i], alone[:, 0], rtol=1e-12, equal_nan=True)


def test_state_round_trip_gives_identical_scores() -> None:
    values = correlated(np.random.default_rng(5), 2, 300)
    original = detector()
    run(original, values[:, :200])
    saved = json.loads(json.dumps(original.state(), allow_nan=False))
    assert set(saved["streams"]) == {"0", "1"}
    restored = detector()
    restored.load_state(saved)
    tail = values[:, 200 - original.window :]
    first = scores_of(run(original, tail))[original.window + original.smooth_rows :]
    second = scores_of(run(restored, tail))[original.window + original.smooth_rows :]
    np.testing.assert_allclose(first, second, rtol=1e-12)
    saved["streams"]["0"]["basis"] = [[0.0]]
    with pytest.raises(ConfigError, match=r"streams\.0\.basis"):
        detector().load_state(saved)


def test_missing_samples_are_skipped_while_adapting_and_give_no_verdict_later() -> None:
    values = correlated(np.random.default_rng(6), 3, 260)
    values[0, 10:30] = np.nan  # adaptation waits for 120 complete rows
    values[1, 200, 2] = np.nan
    values[2] = np.nan  # never delivered
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        blocks = run(detector(), values)
    scores = scores_of(blocks)
    assert np.isnan(scores[:140, 0]).all() and np.isfinite(scores[145:, 0]).all()
    assert np.isnan(scores[200:208, 1]).all() and np.isfinite(scores[208:, 1]).all()  # window + smoothing
    assert np.isnan(scores[:, 2]).all() and not any(b.exceeded[2] for b in blocks)


def test_config_keys_and_clear_errors() -> None:
    config = DetectorConfig(
        "pump_pca",
        "window_pca",
        "s",
        CHANNELS,
        params={"window_s": 3.0, "adapt_rows": 200, "smooth_rows": 8, "min_scale": {"a": 1, "b": 2, "c": 3}},
    )
    d = WindowPcaDetector.from_config(config, 2.0)
    assert (d.window, d.adapt_rows, d.smooth_rows, d.components) == (6, 200, 8, 9)
    np.testing.assert_array_equal(d.min_scale, [1.0, 2.0, 3.0])
    with pytest.raises(ConfigError, match=r"detectors\.pump_pca\.params\.smoothing"):
        WindowPcaDetector.from_config(
            DetectorConfig("pump_pca", "window_pca", "s", CHANNELS, params={"smoothing": 3}), 1.0
        )
    with pytest.raises(ConfigError, match=r"params\.components_fraction"):
        WindowPcaDetector("p", CHANNELS, 4, components_fraction=0.99)
    with pytest.raises(ConfigError, match=r"params\.adapt_rows"):
        WindowPcaDetector("p", CHANNELS, 30, adapt_rows=60)


@pytest.mark.parametrize("glitch", [65535.0, 1e300])
def test_one_glitch_sample_while_learning_does_not_blind_the_stream(glitch: float) -> None:
    # Equipment review F2: one ADC error word (65535) or a garbage float in the learning rows made the
    # plain std the channel's scale (3777 against 0.085), and a 15 % pressure drop went unseen.
    values = correlated(np.random.default_rng(2), 1, 400)
    values[0, 250:, 1] = values[0, 249, 1] + np.random.default_rng(3).normal(0, 0.1, 150)  # b stops following
    glitched = values.copy()
    glitched[0, 60, 0] = glitch
    clean_blocks = run(detector(threshold_margin=3.0), values)
    blocks = run(detector(threshold_margin=3.0), glitched)
    assert blocks[-1].thresholds[0] == pytest.approx(clean_blocks[-1].thresholds[0], rel=0.1)
    exceeded = np.array([b.exceeded[0] for b in blocks])
    assert exceeded[270:].mean() > 0.9
    assert exceeded[ADAPT:250].mean() < 0.05


def test_learning_keeps_every_row_of_a_channel_with_few_levels() -> None:
    # A channel that sits on one level most of the time (MAD 0) and on another for 8 % of the rows: the
    # other level is normal, not a glitch (the central 90 % sets the spread, not only the MAD).
    rows = np.zeros((200, 2))
    rows[:, 1] = np.random.default_rng(4).normal(0, 1, 200)
    rows[::12, 0] = 3.0
    assert learning_rows(rows, np.full(2, 1e-6)).all()
    rows[100, 1] = 65535.0
    assert np.flatnonzero(~learning_rows(rows, np.full(2, 1e-6))).tolist() == [100]
