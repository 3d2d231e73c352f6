"""SpO2 desaturation: >= 3 points below the rolling baseline for >= 10 s, and the index per hour."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from detector_drive import T0, run, scores_of

from agent.config.schema import DetectorConfig
from agent.detectors.base import WindowBlock
from agent.detectors.spo2 import DesaturationDetector
from agent.errors import ConfigError
from firmware_bridge.gatt.ieee11073 import decode_sfloat, encode_sfloat


def make(**params: Any) -> DesaturationDetector:
    config = DetectorConfig("desat", "spo2_desaturation", "vitals", ("spo2",), params=params)
    return DesaturationDetector.from_config(config, 1.0)


def quiet(rng: np.random.Generator, n: int, level: float = 97.0) -> np.ndarray:
    """Pulse-oximeter SpO2 at 1 Hz: whole percent readings around a steady level."""
    return np.rint(level + rng.normal(0, 0.6, n))


def dip(spo2: np.ndarray, start: int, length: int, depth: float) -> None:
    spo2[start : start + length] -= depth


def scores(detector: DesaturationDetector, spo2: np.ndarray) -> np.ndarray:
    return scores_of(run(detector, spo2[None, :, None]))[:, 0]


def test_a_sustained_drop_fires_after_10_s_and_a_short_one_never() -> None:
    rng = np.random.default_rng(1)
    spo2 = quiet(rng, 1200)
    dip(spo2, 400, 30, 5.0)  # 30 s at 92 %: an event
    dip(spo2, 800, 7, 5.0)  # 7 s: too short
    d = make()
    s = scores(d, spo2)
    above = np.flatnonzero(s > d.threshold)
    assert above.size > 0
    assert 400 + 9 <= above[0] <= 400 + 12  # all of the last 10 s down
    assert above[-1] < 430 + 2
    assert not (s[790:830] > d.threshold).any()
    assert not (s[320:400] > d.threshold).any()


def test_a_drop_of_less_than_3_points_is_not_an_event() -> None:
    spo2 = np.full(900, 97.0)
    dip(spo2, 400, 60, 2.0)
    d = make()
    assert np.nanmax(scores(d, spo2)) == pytest.approx(2.0)
    assert d.desaturation_index(np.array([0]))[0] == 0.0


def sfloat(mantissa: int, exponent: int) -> float:
    """A PLX SpO2 as the device sends it (an SFLOAT), decoded as the BLE source decodes it."""
    return decode_sfloat(encode_sfloat(mantissa, exponent))


@pytest.mark.parametrize(
    ("baseline", "low"),
    [
        (97.0, 94.0),  # whole percent: the commonest smallest desaturation
        (sfloat(973, -1), sfloat(943, -1)),  # 97.3 -> 94.3 from a decimal oximeter
        (97.3, 97.3 - 2.9999999999999716),  # the review's float difference, a hair below 3
        (float(np.float32(97.3)), float(np.float32(94.3))),  # readings that went through float32
    ],
)
def test_a_drop_of_exactly_3_points_is_an_event_and_counts_in_the_index(baseline: float, low: float) -> None:
    spo2 = np.full(900, baseline)
    spo2[400:420] = low  # 20 s exactly 3 points down
    d = make()
    s = scores(d, spo2)
    hits = np.flatnonzero(s > d.threshold)
    assert hits.size > 0 and hits[0] == 409  # the 10th low second, as for a deeper drop
    assert hits[-1] == 419
    events = d._slot_state("events", np.array([0]), 0.0)[0, 0]
    assert events == 1.0
    assert d.desaturation_index(np.array([0]))[0] > 0


@pytest.mark.parametrize("low", [94.1, 94.01, sfloat(941, -1), float(np.float32(94.01))])
def test_a_drop_a_resolution_step_short_of_3_points_is_not_an_event(low: float) -> None:
    spo2 = np.full(900, 97.0)
    spo2[400:460] = low  # 2.9 or 2.99 points down for a minute
    d = make()
    assert not (scores(d, spo2) > d.threshold).any()
    assert d.desaturation_index(np.array([0]))[0] == 0.0


def test_a_drop_at_the_limit_keeps_the_exact_spo2_and_limit() -> None:
    spo2 = np.full(400, 97.0)
    spo2[380:] = 94.0
    d = make()
    block = run(d, spo2[None, :, None])[-1]
    assert block.exceeded[0]
    assert (block.observed[0], block.limits[0], block.thresholds[0]) == (94.0, 94.0, 3.0)
    assert block.scores[0] == pytest.approx(3.0, abs=1e-12)


def test_the_index_counts_events_per_hour() -> None:
    rng = np.random.default_rng(2)
    spo2 = quiet(rng, 3600)
    for start in range(400, 3600, 400):  # 8 events in the hour
        dip(spo2, start, 25, 4.5)
    d = make()
    s = scores_of(run(d, spo2[None, :, None]))[:, 0]
    odi = d.desaturation_index(np.array([0]))[0]
    scored_hours = np.isfinite(s).sum() / 3600.0  # one scored second per hop with a verdict
    assert 0.9 < scored_hours < 1.0
    assert odi == pytest.approx(8 / scored_hours, rel=1e-9)


def test_gated_samples_are_not_low_and_a_mostly_missing_stretch_has_no_verdict() -> None:
    spo2 = np.full(700, 97.0)
    spo2[400:430] = np.nan  # probe off: no reading, not a desaturation
    d = make()
    s = scores(d, spo2)
    assert not (s > d.threshold).any()
    assert np.isnan(s[420])


def test_the_baseline_follows_a_new_steady_level() -> None:
    rng = np.random.default_rng(3)
    spo2 = np.concatenate([quiet(rng, 400, 97.0), quiet(rng, 1200, 93.0)])
    d = make()
    s = scores(d, spo2)
    assert (s[400:500] > d.threshold).any()  # the fall itself is a desaturation
    assert not (s[1000:] > d.threshold).any()  # 93 % for 10 minutes is the new baseline


def test_state_round_trip_keeps_the_index() -> None:
    rng = np.random.default_rng(4)
    spo2 = quiet(rng, 1000)
    dip(spo2, 500, 20, 6.0)
    d = make()
    run(d, spo2[None, :, None], slots=np.array([3]))
    restored = make()
    restored.load_state(json.loads(json.dumps(d.state())))
    slots = np.array([3])
    assert restored.desaturation_index(slots)[0] == d.desaturation_index(slots)[0] > 0


def test_hop_longer_than_the_duration_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        make(duration_s=5, hop_s=10)
    assert err.value.path == "detectors.desat.params.hop_s"


def test_indices_by_stream_for_the_heartbeat() -> None:
    rng = np.random.default_rng(5)
    spo2 = np.stack([quiet(rng, 1200), quiet(rng, 1200)])
    dip(spo2[1], 600, 30, 6.0)
    d = make()
    run(d, spo2[:, :, None])
    odi = d.desaturation_indices(["a/vitals", "b/vitals", "c/vitals"])
    assert odi["a/vitals"] == 0.0 and odi["b/vitals"] > 0
    assert "c/vitals" not in odi  # never scored


def session(detector: DesaturationDetector, spo2: np.ndarray, t0: float) -> list[Any]:
    """Feed `spo2` (1 Hz, first sample at `t0`) hop by hop into an empty window, as a new session does."""
    padded = np.concatenate([np.full(detector.window, np.nan), spo2])
    blocks = []
    for end in range(1, len(spo2) + 1):
        window = padded[end : end + detector.window][None, :, None]
        blocks.append(detector.score(WindowBlock(window, np.array([0]), np.array([t0 + end - 1.0]), 1)))
    return blocks


def restarted(gap_s: float) -> tuple[DesaturationDetector, float]:
    """A detector that scored 10 min of 97 % from T0, its state saved as JSON and loaded into a fresh
    one (a restart); and the time of the new session's first sample, `gap_s` after the last one."""
    before = make()
    session(before, np.full(600, 97.0), T0)
    after = make()
    after.load_state(json.loads(json.dumps(before.state())))
    return after, T0 + 599.0 + gap_s


def test_a_restarted_detector_scores_a_drop_at_once_against_its_kept_baseline() -> None:
    # Issue 5 / clinical review: after a restart or reload the window is empty and, before, the detector
    # gave no verdict until half of its 300 s baseline part had filled: a 97 -> 93 % drop went unseen.
    after, t0 = restarted(gap_s=30.0)
    spo2 = np.concatenate([np.full(3, 97.0), np.full(12, 93.0)])
    blocks = session(after, spo2, t0)
    last = blocks[-1]
    assert last.scores[0] > after.threshold  # 12 s at 93 %: the newest 10 s all 4 points down
    assert last.baseline[0, 0] == 97.0 and last.observed[0] == 93.0  # the kept baseline, told as such
    # it judges once min_valid of the newest 10 s are in (8 samples), as a filled window would
    assert np.isnan(blocks[6].scores[0]) and not np.isnan(blocks[7].scores[0])
    assert after.learning(np.array([0]))[0][0] >= after.learning(np.array([0]))[1]  # not "learning"


def test_a_kept_baseline_older_than_baseline_s_is_not_used() -> None:
    # freshness is judged at each window's end: measured at the last saved sample, 301 s before
    after, t0 = restarted(gap_s=301.0)
    blocks = session(after, np.concatenate([np.full(3, 97.0), np.full(12, 93.0)]), t0)
    assert np.isnan(scores_of(blocks)).all()  # no verdict, as before: the stream is learning again
    have, need = after.learning(np.array([0]))
    assert need == 150 and have[0] < need
    # 285 s: the last window of the 15 s session ends 299 s after the kept baseline; still used
    fresh, t1 = restarted(gap_s=285.0)
    assert session(fresh, np.concatenate([np.full(3, 97.0), np.full(12, 93.0)]), t1)[-1].scores[0] > 3.0


def test_the_kept_baseline_is_one_number_and_one_time_per_slot() -> None:
    d = make()
    session(d, np.full(400, 97.0), T0)
    streams = d.state()["streams"]
    assert streams["kept_baseline"][0] == [97.0] and streams["kept_at"][0] == [T0 + 399.0]
    assert set(streams) == {"inside", "events", "seconds", "kept_baseline", "kept_at", "kept_of"}


def test_a_first_start_lists_the_stream_as_learning_until_its_baseline_part_is_half_full() -> None:
    d = make()
    blocks = session(d, np.full(100, 97.0), T0)
    assert np.isnan(blocks[-1].scores[0])
    have, need = d.learning(np.array([0]))
    assert need == 150 and have[0] == 90  # 100 samples, the newest 10 in the candidate part
    session(d, np.full(200, 97.0), T0 + 100.0)  # a new session window: starts empty again
    assert d.learning(np.array([0]))[0][0] == need  # its own baseline was kept 100 s ago: fresh
