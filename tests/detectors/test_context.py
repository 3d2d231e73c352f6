"""The context detector (CAD OSE re-implemented): encoding, learning a pattern, surprises, warm-up, rest
period, memory cap, state and config errors. Synthetic data only."""

from __future__ import annotations

import json

import numpy as np
import pytest
from detector_drive import make, run, scores_of

from agent.detectors.context import NEGATIVE_FACT, ContextDetector, level_facts
from agent.detectors.context_memory import ContextMemory
from agent.errors import ConfigError


def test_level_facts_name_each_bit_and_extend_beyond_the_range() -> None:
    assert level_facts(5, 3) == (1, 2, 5)  # bits 1, 0, 1 (least significant first): 2i + bit
    assert level_facts(0, 3) == (0, 2, 4)
    assert level_facts(9, 3) == (1, 2, 4, 7)  # above the top level: a fourth bit the range never used
    assert level_facts(-1, 3) == (1, 2, 4, NEGATIVE_FACT)


def pattern(repeats: int) -> np.ndarray:
    return np.tile(np.array([0.0, 2.0, 5.0, 7.0, 5.0, 2.0]), repeats)


def scores(values: np.ndarray, **params: object) -> np.ndarray:
    detector = make("context", **{"warmup_s": 12.0, "rest_s": 0.0, "range_margin": 0.0, **params})
    return scores_of(run(detector, values[None, :, None]))[:, 0]


def test_a_repeating_pattern_becomes_predicted_and_a_break_in_it_is_a_surprise() -> None:
    values = pattern(40)
    values[200] = 0.0  # the pattern says 5 here, the value stays inside the learned range
    out = scores(values)
    assert np.isnan(out[:11]).all()  # warm-up: no verdict
    assert (out[100:200] == 0.0).all()  # learned: every sample predicted
    assert out[200] > 0.5  # unpredicted, and most contexts that were sure failed
    assert out[215:].max() < 0.25  # back on the pattern: at most a little doubt


def test_a_value_beyond_the_warm_up_range_is_a_surprise() -> None:
    values = pattern(40)
    values[150] = 20.0
    out = scores(values)
    assert out[150] > 0.75 and (out[100:150] == 0.0).all()


def test_the_rest_period_silences_the_samples_after_a_high_score() -> None:
    values = pattern(40)
    values[150] = 20.0
    values[155] = -20.0
    loud = scores(values)
    quiet = scores(values, rest_s=10.0)
    assert loud[155] > 0.75
    assert quiet[150] == loud[150] and (quiet[151:161] == 0.0).all()


def test_the_memory_stops_growing_at_its_cap() -> None:
    rng = np.random.default_rng(0)
    memory = ContextMemory(max_contexts=40)
    for level in rng.integers(0, 8, 500):
        memory.step(level_facts(int(level), 3))
    assert memory.size == 40


def test_a_full_memory_still_scores_a_new_transition_as_new() -> None:
    """Up to the first step whose new contexts it cannot keep, a capped memory scores exactly as an unbounded
    one: what it cannot store still counts as new (a memory that stopped counting them would score at most
    0.5 from then on)."""
    levels = np.random.default_rng(3).integers(0, 8, 300)
    capped, unbounded = ContextMemory(max_contexts=200), ContextMemory()
    for level in levels:
        facts = level_facts(int(level), 3)
        a, b = capped.step(facts), unbounded.step(facts)
        assert a == b
        if unbounded.size > 200:
            break
    assert unbounded.size > 200 and capped.size == 200 and a > 0.5
    for level in levels[:100]:
        capped.step(level_facts(int(level), 3))
    assert capped.size == 200


def test_a_full_memory_does_not_start_over_and_keeps_giving_verdicts() -> None:
    detector = make("context", max_contexts=60, warmup_s=20.0, rest_s=0.0)
    out = scores_of(run(detector, np.random.default_rng(2).normal(size=(1, 400, 1))))[:, 0]
    assert isinstance(detector, ContextDetector)
    memory = detector._streams[(0, 0)].memory
    assert memory is not None and memory.size == 60
    assert np.isfinite(out[20:]).all()  # a verdict for every sample after the warm-up


def test_the_first_transition_is_reviewed_only_on_steps_that_observe_a_new_one() -> None:
    """CAD OSE's quirk (its "no new context" marker False equals context 0): on a constant stream the
    one transition it learns is never reviewed, so it never fires and never becomes a fact: one context."""
    memory = ContextMemory()
    out = [memory.step(level_facts(3, 3)) for _ in range(50)]
    assert memory.size == 1
    # first: unpredicted, nothing selected, no transition yet; second: the one transition, new; then known
    assert out == [0.5, 1.0] + [0.0] * 48


def test_the_scores_are_cad_ose_s_including_its_tie_breaks() -> None:
    """400 random levels: CAD OSE's raw scores (ties among equally activated contexts by CPython 2's
    tuple hash, generalisation in CPython 2's dict order). Expected values from a scratch transcription
    of numenta/NAB context_ose (not committed) that reproduces NAB's published contextOSE results
    (raw standard score 46.1715 at threshold 0.7048 over the 58 series, per series as in NAB's
    contextOSE_standard_scores.csv); main before this change gave 14,547 contexts, sum 137.318."""
    levels = np.random.default_rng(7).integers(0, 8, 400)
    memory = ContextMemory()
    out = [memory.step(level_facts(int(level), 3)) for level in levels]
    assert memory.size == 14_484
    assert sum(out) == pytest.approx(137.16180170254447, abs=1e-9)
    assert (out[100], out[200], out[300], out[399]) == (0.0, 0.5236221494987274, 0.5511422651857796, 0.0)


def test_memory_json_round_trip_continues_identically() -> None:
    rng = np.random.default_rng(1)
    levels = [int(v) for v in rng.integers(0, 4, 300)]
    first = ContextMemory()
    for level in levels[:200]:
        first.step(level_facts(level, 3))
    second = ContextMemory.from_json(json.loads(json.dumps(first.to_json())), 7, 15, 1_000_000)
    assert [first.step(level_facts(v, 3)) for v in levels[200:]] == [
        second.step(level_facts(v, 3)) for v in levels[200:]
    ]


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"threshold": 1.5}, "threshold"),
        ({"bits": 0}, "bits"),
        ({"range_margin": -0.1}, "range_margin"),
        ({"rest_s": -1.0}, "rest_s"),
        ({"max_contexts": 0}, "max_contexts"),
        ({"treshold": 0.5}, "treshold"),
    ],
)
def test_bad_params_name_their_key(params: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        make("context", **params)
    assert err.value.path == f"detectors.context_1.params.{key}"


def test_calibration_is_refused_and_leaves_the_threshold() -> None:
    detector = make("context", threshold=0.8)
    assert detector.calibration_refusal()
    assert detector.threshold == 0.8


def test_an_out_of_range_param_says_the_range() -> None:
    with pytest.raises(ConfigError, match=r"expected a number in \[0, 1\], got 1.5"):
        make("context", threshold=1.5)
    with pytest.raises(ConfigError, match=r"expected a number >= 0, got -1"):
        make("context", rest_s=-1.0)


# -- a configured span (the device's `ranges`): CAD OSE's own quantisation, no warm-up -------------------


def cad_ose_reference(values: np.ndarray, low: float, high: float, bits: int = 3) -> np.ndarray:
    """CAD OSE's raw scores, written out: levels int((v - min) / ((max - min) / (2^bits - 1))), clipped."""
    memory = ContextMemory(7, 15)
    top = 2**bits - 1
    step = (high - low) / top
    levels = [min(max(int((v - low) // step), 0), top) for v in values]
    return np.array([memory.step(level_facts(level, bits)) for level in levels])


def test_a_configured_span_quantises_as_cad_ose_from_the_first_sample() -> None:
    values = pattern(40)
    values[150] = 3.3
    detector = make("context", rest_s=0.0, rest_level=1.0)
    detector.set_spans(0, {"x": (0.0, 7.0)})
    out = scores_of(run(detector, values[None, :, None]))[:, 0]
    assert np.isfinite(out).all()  # no warm-up: a verdict for every sample
    assert out.tolist() == cad_ose_reference(values, 0.0, 7.0).tolist()


def test_values_beyond_the_span_take_its_edge_levels() -> None:
    values = pattern(30)
    beyond = values.copy()
    beyond[values == 7.0] = 40.0  # above the span: the top level, as 7 is
    beyond[values == 0.0] = -3.0  # below it: the lowest level
    spans = {"x": (0.0, 7.0)}
    inside, outside = make("context", rest_s=0.0), make("context", rest_s=0.0)
    inside.set_spans(0, spans)
    outside.set_spans(0, spans)
    a = scores_of(run(inside, values[None, :, None]))
    b = scores_of(run(outside, beyond[None, :, None]))
    assert a.tolist() == b.tolist()


def test_without_a_span_the_scores_are_those_of_the_learned_range_bit_for_bit() -> None:
    """No span, an empty one, or a span of another channel give the same scores, hashed (first taken from
    main at 3ee2344, before spans existed; re-taken when the memory came to follow CAD OSE's tie-breaks
    and its context-0 rule and to keep a full memory instead of starting over, 2026-12-01)."""
    import hashlib

    rng = np.random.default_rng(7)
    values = np.concatenate([rng.normal(0, 1, (2, 300, 1)), rng.normal(4, 1, (2, 200, 1))], axis=1)
    values[1, 350, 0] = np.nan
    for spans in (None, {}, {"y": (0.0, 1.0)}):
        detector = make("context", warmup_s=50.0, rest_s=20.0, max_contexts=400)
        if spans is not None:
            detector.set_spans(0, spans)
            detector.set_spans(1, spans)
        out = scores_of(run(detector, values))
        digest = hashlib.sha256(np.nan_to_num(out, nan=-1.0).tobytes()).hexdigest()
        assert digest == "26864b294a1b3df31e169dbbb406ed8c9fd70e0a4bfbc99c23b8385c3582cf8e"


def test_a_spanned_stream_survives_a_restart_and_starts_over_when_its_span_changes() -> None:
    values = pattern(20)[None, :, None]
    detector = make("context", rest_s=0.0)
    detector.set_spans(0, {"x": (0.0, 7.0)})
    run(detector, values)
    saved = json.loads(json.dumps(detector.state()))
    restored = make("context", rest_s=0.0)
    restored.load_state(saved)
    restored.set_spans(0, {"x": (0.0, 7.0)})  # the same span: the memory is kept
    assert isinstance(restored, ContextDetector)
    kept = restored._streams[(0, 0)]
    assert kept.span and kept.memory is not None and kept.memory.size > 0
    restored.set_spans(0, {"x": (0.0, 14.0)})  # another span: the stream starts over within it
    assert (0, 0) not in restored._streams
    fresh = make("context", rest_s=0.0)
    fresh.set_spans(0, {"x": (0.0, 14.0)})
    assert scores_of(run(restored, values)).tolist() == scores_of(run(fresh, values)).tolist()
    restored.set_spans(0, {})  # the span removed: the range is learned again, with a warm-up
    assert (0, 0) not in restored._streams
