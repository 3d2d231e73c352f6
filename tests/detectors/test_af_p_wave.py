"""af with the atrial-activity channel (``p_wave``, agent.ecg.p_wave): P waves present veto the AF score.

The same irregular RR scores as AF with p_wave values of a fibrillatory baseline (about 0) and as not AF
(0) with those of P waves (about 0.95); without the channel nothing changes; at an AF onset (a rate step)
the P waves of the sinus beats before it do not veto the new rhythm.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from detector_drive import run, scores_of

from agent.config.schema import DetectorConfig
from agent.detectors.af import AtrialFibrillationDetector
from agent.errors import ConfigError

SHIPPED = {
    "rate_exponent": 2.0,
    "threshold": 0.057,
    "min_differences": 2,
    "verdict_beats": 3,
    "rate_step": 0.5,
}


def make(channels: tuple[str, ...] = ("rr", "p_wave"), **params: Any) -> AtrialFibrillationDetector:
    return AtrialFibrillationDetector.from_config(
        DetectorConfig("af", "af", "rr", channels, params=SHIPPED | params), 1.2
    )


def irregular(rng: np.random.Generator, n: int, rr: float = 0.8) -> np.ndarray:
    return rng.gamma(25.0, rr / 25.0, n)


def with_p(rr: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.stack([rr, p], axis=-1)[None, :, :]  # (1, T, 2)


def test_p_waves_present_veto_an_irregular_rhythm_and_absent_ones_do_not() -> None:
    rng = np.random.default_rng(1)
    rr = irregular(rng, 80)
    absent = scores_of(run(make(), with_p(rr, rng.normal(0.05, 0.15, 80))))[:, 0]
    present = scores_of(run(make(), with_p(rr, rng.normal(0.95, 0.03, 80))))[:, 0]
    alone = scores_of(run(make(("rr",)), rr[None, :, None]))[:, 0]
    np.testing.assert_array_equal(absent, alone)  # no P waves: the RR score as without the channel
    assert np.mean(alone[20:] > 0.057) > 0.8
    assert (present[20:] == 0.0).all()


def test_too_few_values_or_a_low_median_leave_the_score_alone() -> None:
    rng = np.random.default_rng(2)
    rr = irregular(rng, 60)
    alone = scores_of(run(make(("rr",)), rr[None, :, None]))[:, 0]
    sparse = np.full(60, np.nan)
    sparse[::6] = 0.95  # at most 3 values in any 16 beats: fewer than p_wave_beats (4)
    np.testing.assert_array_equal(scores_of(run(make(), with_p(rr, sparse)))[:, 0], alone)
    low = np.full(60, 0.45)  # below p_wave_present (0.5)
    np.testing.assert_array_equal(scores_of(run(make(), with_p(rr, low)))[:, 0], alone)
    raised = scores_of(run(make(p_wave_present=0.4), with_p(rr, low)))[:, 0]
    assert (raised[20:] == 0.0).all()


def test_the_p_waves_before_an_af_onset_do_not_veto_it() -> None:
    """Sinus at 0.85 s with P waves, then fast AF at 0.45 s with none: the step cuts the old beats'
    P waves out of the context, so the onset is seen as without the channel."""
    rng = np.random.default_rng(3)
    sinus = 0.85 * (1 + rng.normal(0, 0.01, 60))
    rr = np.concatenate([sinus, irregular(rng, 40, 0.45)])
    p = np.concatenate([np.full(60, 0.95), np.full(40, np.nan)])  # AF's short intervals carry none
    alone = scores_of(run(make(("rr",)), rr[None, :, None]))[:, 0]
    cut = scores_of(run(make(), with_p(rr, p)))[:, 0]
    uncut = scores_of(run(make(rate_step=0.0), with_p(rr, p)))[:, 0]
    first = 60 + int(np.argmax(alone[60:] > 0.057))
    assert first < 66
    # The first fast beat is vetoed (no step is seen before 3 beats follow it; it is below threshold
    # anyway), every later one is scored as without the channel.
    assert alone[60] <= 0.057 and cut[60] == 0.0
    np.testing.assert_array_equal(cut[61:], alone[61:])
    # Without the cut (no rate_step) the sinus beats' P waves would hold the onset back.
    assert (alone[60:70] > 0.057).sum() >= 3 and not (uncut[60:70] > 0.057).any()


def test_the_p_wave_context_survives_a_state_round_trip() -> None:
    rng = np.random.default_rng(4)
    rr, p = irregular(rng, 60), np.concatenate([np.full(30, 0.95), np.full(30, 0.0)])
    original = make()
    run(original, with_p(rr[:40], p[:40]))
    state = json.loads(json.dumps(original.state(), allow_nan=False))
    assert "p_wave_history" in json.dumps(state)
    restored, fresh = make(), make()
    restored.load_state(state)
    tail = with_p(rr[37:], p[37:])  # the last window (3 beats) again, then new beats
    a, b, c = (scores_of(run(d, tail))[:, 0] for d in (original, restored, fresh))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c, equal_nan=True)


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"p_wave_present": 1.5}, "p_wave_present"),
        ({"p_wave_context": 20}, "p_wave_context"),
        ({"p_wave_beats": 9, "p_wave_context": 8}, "p_wave_beats"),
    ],
)
def test_bad_p_wave_params_name_their_key(params: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        make(**params)


def test_three_channels_are_refused() -> None:
    with pytest.raises(ConfigError, match="channels"):
        make(("rr", "p_wave", "qrs_shape"))


@pytest.mark.parametrize(
    ("channels", "key"),
    [
        (("rr", "hr"), r"channels\[1\]"),
        (("p_wave", "rr"), r"channels\[0\]"),
        (("rr", "qrs_shape"), r"channels\[1\]"),
    ],
)
def test_a_second_channel_other_than_p_wave_is_refused(channels: tuple[str, ...], key: str) -> None:
    """Channels are read by position: hr taken for atrial activity vetoed every beat and silenced AF (a
    review found `["rr", "hr"]` passed check-config and never alarmed)."""
    with pytest.raises(ConfigError, match=key):
        make(channels)


def test_p_wave_keys_without_the_p_wave_channel_are_refused() -> None:
    """A site that sets the veto's keys but not its channel would believe the veto is on."""
    with pytest.raises(ConfigError, match=r"params\.p_wave_present.*second channel"):
        make(("rr",), p_wave_present=0.6)
