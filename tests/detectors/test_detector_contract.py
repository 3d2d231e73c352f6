"""The contract every registered detector type keeps, checked by one parametrised suite.

Causality, vectorisation over streams, calibration to a target false-alarm rate on fresh normal data,
state round trip, and NaN handling. Each case builds the detector through `build_detector` at 2 Hz with a
2-sample hop so the hop loops are exercised.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from detector_drive import ar1, normal_block, run, scores_of

from agent.config.schema import DetectorConfig
from agent.detectors import TYPES, ScoreBlock, StreamingDetector, WindowBlock, build_detector
from agent.detectors.base import MAX_FRAME_HOPS, float_rows, json_rows, worst_of

PUMP_MODEL = Path(__file__).resolve().parents[2] / "models" / "pump"
PUMP_CHANNELS = tuple(json.loads((PUMP_MODEL / "card.json").read_text())["channels"])
RATE = 2.0
HOP_S = 1.0
CHANNELS = ("x", "y")

# type -> (channels, params, calibration is two-sided)
# Two-sided: calibration sets the threshold to the quantile, so the fresh-data rate must be near the target.
# One-sided: limits are clinical and flatline/dropout only ever desensitise, so the rate must not exceed it.
CASES: dict[str, tuple[tuple[str, ...], dict[str, Any], bool]] = {
    "limit": (("x",), {"above": 73.0, "below": 67.0}, False),
    "robust_z": (CHANNELS, {"window_s": 15.0}, True),
    "ewma": (CHANNELS, {"window_s": 15.0, "alpha": 0.3}, True),
    "cusum": (CHANNELS, {"window_s": 15.0}, True),
    "rate_of_change": (CHANNELS, {"max_rate": {"x": 1.0, "y": 2.0}}, True),
    "flatline": (CHANNELS, {"window_s": 10.0, "epsilon": 0.05}, False),
    "dropout": (CHANNELS, {"window_s": 10.0, "max_missing": 0.3}, False),
    # The shipped pump autoencoder (8 channels) with its card normalisation.
    "autoencoder": (PUMP_CHANNELS, {"model": str(PUMP_MODEL), "precision": "fp32"}, True),
    # Domain detectors, with their units bent to AR(1) data around 70 (RR bounds, zones, ISO band).
    "af": (("x",), {"min_rr_s": 1.0, "max_rr_s": 1000.0, "window_beats": 16}, True),
    # RR and QRS shape channels: both around 70 here, a log-scale score like any other.
    "pvc": (CHANNELS, {}, True),
    # pvc's beats, counted into runs: a run length and rate are settings (nothing to calibrate).
    "ventricular_run": (CHANNELS, {}, False),
    "spo2_desaturation": (("x",), {"baseline_s": 20.0, "duration_s": 2.0}, False),
    "vibration": (CHANNELS, {"window_s": 16.0, "iso_low_hz": 0.1, "zone_boundaries": [1e5, 2e5, 4e5]}, False),
    # Nothing to calibrate (a fraction of the stream's own range): new records of normal data stay rare.
    "new_extreme": (CHANNELS, {"warmup_s": 50.0}, False),
    # Per-stream thresholds, 3 x q95 of each stream's own first 80 samples (nothing to calibrate): rare on
    # normal data.
    "window_pca": (
        CHANNELS,
        {"window_s": 3.0, "adapt_rows": 80, "smooth_rows": 3, "threshold_margin": 3.0},
        False,
    ),
    # Nothing to calibrate (a share of each stream's own context memory); its rest period keeps
    # exceedances on normal data rare. Range learned on the first 60 samples; a small memory cap keeps
    # the 40 noise streams of the calibration case fast (noise is the memory's worst case).
    "context": (CHANNELS, {"warmup_s": 30.0, "rest_s": 50.0, "max_contexts": 50, "max_active": 2}, False),
}
TOLERANCE = 0.5  # calibrated false-alarm rate on fresh data within +-50% of the target (documented)


def test_every_registered_type_is_covered() -> None:
    assert set(CASES) == set(TYPES)


def build(type_: str) -> StreamingDetector:
    channels, params, _ = CASES[type_]
    return build_detector(
        DetectorConfig(f"{type_}_c", type_, "s", channels, params={**params, "hop_s": HOP_S}), RATE
    )


def series(type_: str, seed: int, streams: int = 3, length: int = 240) -> np.ndarray:
    """AR(1) normal data with anomalies every detector reacts to: a jump, a stuck stretch, a gap."""
    channels = CASES[type_][0]
    rng = np.random.default_rng(seed)
    values = ar1(rng, (streams, length, len(channels)))
    values[0, 60:90] += 8.0
    values[1, 100:140] = values[1, 100]
    values[2, 150:190] = np.nan
    values[rng.random(values.shape) < 0.05] = np.nan
    return values


def assert_blocks_equal(a: list[ScoreBlock], b: list[ScoreBlock]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for field in ("scores", "thresholds", "contributions", "observed", "limits", "baseline"):
            np.testing.assert_allclose(
                getattr(x, field), getattr(y, field), rtol=1e-12, atol=1e-12, equal_nan=True
            )


@pytest.mark.parametrize("type_", sorted(CASES))
def test_causal_future_data_never_changes_past_scores(type_: str) -> None:
    values = series(type_, seed=1)
    cut = 120  # samples 0..cut-1 are the past
    changed = values.copy()
    rng = np.random.default_rng(99)
    changed[:, cut:] = rng.normal(500.0, 50.0, changed[:, cut:].shape)
    changed[:, cut + 5 : cut + 30] = np.nan
    full = run(build(type_), values, rate=RATE)
    altered = run(build(type_), changed, rate=RATE)
    prefix = run(build(type_), values[:, :cut], rate=RATE)
    d = build(type_)
    past = cut // d.hop  # hops whose newest sample is before `cut`
    assert_blocks_equal(full[:past], altered[:past])
    assert_blocks_equal(full[:past], prefix)
    assert not np.allclose(scores_of(full[past:]), scores_of(altered[past:]), equal_nan=True)


@pytest.mark.parametrize("type_", sorted(CASES))
def test_vectorised_over_streams_equals_one_stream_at_a_time(type_: str) -> None:
    values = series(type_, seed=2, streams=5)
    slots = np.array([7, 0, 3, 12, 1])  # any stable slot numbers
    together = run(build(type_), values, slots=slots, rate=RATE)
    for i in range(values.shape[0]):
        alone = run(build(type_), values[i : i + 1], slots=np.array([0]), rate=RATE)
        assert_blocks_equal([b.rows(np.array([i])) for b in together], alone)


@pytest.mark.parametrize("phi", [0.0, 0.7], ids=["gaussian", "ar1"])
@pytest.mark.parametrize("type_", sorted(CASES))
def test_calibration_reaches_the_target_false_alarm_rate_on_fresh_normal_data(type_: str, phi: float) -> None:
    channels, _, two_sided = CASES[type_]
    target_per_hour = 36.0  # one exceedance per 100 hops of 1 s
    train = ar1(np.random.default_rng(10), (40, 1600, len(channels)), phi=phi)
    fresh = ar1(np.random.default_rng(11), (40, 1600, len(channels)), phi=phi)
    train[:, ::97] = np.nan  # a normal link drops a few samples
    fresh[:, ::89] = np.nan
    detector = build(type_)
    detector.calibrate(normal_block(train), target_per_hour, HOP_S)
    blocks = run(detector, fresh, rate=RATE)[detector.window // detector.hop :]  # skip the warm-up
    exceed = np.array([b.exceeded for b in blocks])
    hours = exceed.size * HOP_S / 3600.0
    rate = exceed.sum() / hours
    assert rate <= target_per_hour * (1 + TOLERANCE)
    if two_sided:
        assert rate >= target_per_hour * (1 - TOLERANCE)


@pytest.mark.parametrize("type_", sorted(CASES))
def test_state_round_trip_gives_identical_scores(type_: str) -> None:
    values = series(type_, seed=3)
    original = build(type_)
    original.calibrate(
        normal_block(ar1(np.random.default_rng(4), (5, 400, len(CASES[type_][0])))), 100.0, HOP_S
    )
    half = 100
    run(original, values[:, :half], rate=RATE)
    saved = json.loads(json.dumps(original.state(), allow_nan=False))
    restored = build(type_)
    restored.load_state(saved)
    assert restored.threshold == original.threshold
    # continue both from the same point: windows that straddle the restart see the same samples
    tail = values[:, half - original.window :]
    first = run(original, tail, rate=RATE)[original.window // original.hop :]
    second = run(restored, tail, rate=RATE)[original.window // original.hop :]
    assert_blocks_equal(first, second)


@pytest.mark.parametrize("type_", sorted(CASES))
def test_nan_everywhere_never_raises_or_warns(type_: str) -> None:
    channels = CASES[type_][0]
    rng = np.random.default_rng(5)
    values = ar1(rng, (6, 120, len(channels)))
    values[0] = np.nan  # a stream that never delivered
    values[1, :, 0] = np.nan  # one dead channel
    values[2, rng.random(120) < 0.9] = np.nan  # mostly missing
    values[3, 50:] = np.nan  # went silent
    values[4, ::2] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        blocks = run(build(type_), values, rate=RATE)
    for b in blocks:
        assert b.scores.shape == b.thresholds.shape == b.observed.shape == b.limits.shape == (6,)
        assert b.contributions.shape == b.baseline.shape == (6, len(channels))
        assert not np.isinf(b.scores).any()
        assert (b.contributions >= 0).all() and np.isfinite(b.contributions).all()
        assert not b.exceeded[np.isnan(b.scores)].any()


@pytest.mark.parametrize("type_", sorted(CASES))
def test_a_frame_of_several_hops_is_judged_by_its_worst_hop(type_: str) -> None:
    # A device frame longer than the hop (Polar H10: 73 ECG samples) reaches the detector in one block.
    values = series(type_, seed=6)
    hops = 3
    hop_by_hop = run(build(type_), values, rate=RATE)
    d = build(type_)
    framed = run(d, values, rate=RATE, frame=hops * d.hop)
    expected = [worst_of(hop_by_hop[i : i + hops]) for i in range(0, hops * len(framed), hops)]
    if d.judges_whole_frames:  # its own reading of a frame: the same verdicts, its own explanations
        np.testing.assert_allclose(scores_of(framed), scores_of(expected), equal_nan=True)
        np.testing.assert_array_equal([b.exceeded for b in framed], [b.exceeded for b in expected])
    else:  # split into hops: exactly the hop-by-hop verdicts
        assert_blocks_equal(framed, expected)
    assert np.isfinite(scores_of(framed)).any()  # there were verdicts to compare


@pytest.mark.parametrize("type_", sorted(CASES))
def test_a_frame_with_a_part_hop_is_scored_whole(type_: str) -> None:
    values = series(type_, seed=7)
    d = build(type_)
    framed = run(d, values, rate=RATE, frame=3 * d.hop + 1)  # hop boundaries fall inside frames
    channels = len(CASES[type_][0])
    for b in framed:
        assert b.scores.shape == (3,) and b.contributions.shape == (3, channels)
    assert np.isfinite(scores_of(framed)).any()


def test_a_long_gap_costs_a_bounded_number_of_calls() -> None:
    d = build("robust_z")
    calls = []
    score_hop = d.score_hop
    d.score_hop = lambda block: calls.append(block.hop) or score_hop(block)  # type: ignore[method-assign]
    gap = 200 * d.hop + 1  # a reconnect after a long dropout: NaN rows up to the new sample
    values = np.full((1, d.window + gap - d.hop, 2), np.nan)
    values[0, -1] = 70.0
    out = d.score(WindowBlock(values, np.array([0]), np.array([0.0]), gap))
    assert len(calls) == MAX_FRAME_HOPS and sum(calls) == gap and calls[-1] == d.hop
    assert out.scores.shape == (1,)


@pytest.mark.parametrize("type_", sorted(CASES))
def test_an_empty_block_gives_empty_scores(type_: str) -> None:
    d = build(type_)
    channels = len(CASES[type_][0])
    out = d.score(
        WindowBlock(np.zeros((0, d.window, channels)), np.zeros(0, dtype=np.int64), np.zeros(0), d.hop)
    )
    assert out.scores.shape == (0,) and out.contributions.shape == (0, channels)


def test_state_tables_convert_to_json_and_back_value_for_value() -> None:
    table = np.array([[1.5, np.nan, -0.0], [np.inf, -np.inf, 1e-300], [3.0, 2.0**60, -7.25]])
    rows = json_rows(table)
    assert rows == [[1.5, None, -0.0], [None, None, 1e-300], [3.0, 2.0**60, -7.25]]
    assert json.loads(json.dumps(rows, allow_nan=False)) == rows
    back = float_rows(rows)
    finite = np.isfinite(table)
    assert np.array_equal(back[finite], table[finite]) and np.isnan(back[~finite]).all()
    with pytest.raises(ValueError):
        float_rows([[1.0, "not a number"]])
