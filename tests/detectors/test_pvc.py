"""PVC per beat: an early wide beat scores high, sinus arrhythmia and an early narrow beat do not,
bigeminy is judged beat by beat, a beat without a shape gets no verdict, the RR history survives a restart."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from detector_drive import T0, run, scores_of

from agent.config import parse_config
from agent.config.schema import DetectorConfig
from agent.detectors.base import ScoreBlock, WindowBlock
from agent.detectors.pvc import DEFAULT_THRESHOLD, PvcDetector
from agent.errors import ConfigError
from agent.events import Phase
from agent.pipeline import Pipeline
from agent.pipeline.wiring import check_wiring
from agent.readings import Reading

NORMAL_SHAPE, WIDE_SHAPE = 0.2, 2.0  # typical qrs_shape of a normal beat and of a PVC (MIT-BIH medians)


def make(**params: Any) -> PvcDetector:
    return PvcDetector.from_config(
        DetectorConfig("pvc", "pvc", "rr", ("rr", "qrs_shape"), params=params), 1.0
    )


def beats(rr: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """(1, n, 2) one stream of beats: the interval ending at each and its QRS shape."""
    return np.stack([rr, shape], axis=1)[None]


def sinus(rng: np.random.Generator, n: int, rr: float = 0.8, swing: float = 0.025) -> tuple[np.ndarray, ...]:
    """Sinus rhythm (respiratory sinus arrhythmia of `swing` over ~4.3 beats, 1 % jitter), normal shapes."""
    k = np.arange(n)
    intervals = rr * (1 + swing * np.sin(2 * np.pi * k / 4.3)) + rng.normal(0, 0.01 * rr, n)
    return intervals, NORMAL_SHAPE * np.exp(rng.normal(0, 0.2, n))


def scores(detector: PvcDetector, values: np.ndarray) -> np.ndarray:
    return scores_of(run(detector, values))[:, 0]


def test_an_early_wide_beat_scores_high_and_the_pause_after_it_does_not() -> None:
    rng = np.random.default_rng(1)
    rr, shape = sinus(rng, 60)
    rr[30], rr[31] = 0.5, 1.1  # premature, then the compensatory pause
    shape[30] = WIDE_SHAPE
    d = make()
    s = scores(d, beats(rr, shape))
    assert np.isnan(s[:8]).all() and np.isfinite(s[8:]).all()  # 8 intervals of history first
    assert s[30] > d.threshold + 1.0
    assert np.nanmax(np.delete(s, 30)) < d.threshold
    block = run(make(), beats(rr, shape))[30]
    assert block.contributions[0, 0] > 0 and block.contributions[0, 1] > 0  # early and wide: both
    assert block.contributions.sum() == pytest.approx(1.0)
    assert block.baseline[0, 0] == pytest.approx(np.mean(rr[22:30]))  # the RR it was early against


def test_sinus_arrhythmia_and_an_early_narrow_beat_stay_below_the_threshold() -> None:
    rng = np.random.default_rng(2)
    rr, shape = sinus(rng, 400, swing=0.15)  # marked RSA: intervals 15 % either side
    rr[200] = 0.6  # a premature atrial beat: 25 % early, normal QRS
    s = scores(make(), beats(rr, shape))
    assert np.nanmax(s) < DEFAULT_THRESHOLD
    narrow_but_wide = shape.copy()
    narrow_but_wide[200] = WIDE_SHAPE
    assert scores(make(), beats(rr, narrow_but_wide))[200] > DEFAULT_THRESHOLD  # the shape decides


def test_a_wide_beat_on_time_is_told_by_its_shape_and_credited_to_it() -> None:
    rng = np.random.default_rng(3)
    rr, shape = sinus(rng, 40)
    shape[25] = 3.0 * WIDE_SHAPE  # a late-coupled PVC (or an aberrant beat): on time, very unlike the rest
    d = make()
    blocks = run(d, beats(rr, shape))
    assert blocks[25].scores[0] > d.threshold
    assert blocks[25].contributions[0, 1] > 0.9  # the shape drove it


def test_bigeminy_flags_every_ventricular_beat_and_no_sinus_one() -> None:
    rng = np.random.default_rng(4)
    n = 120
    rr = np.where(np.arange(n) % 2 == 0, 1.1, 0.5) * (1 + rng.normal(0, 0.01, n))
    shape = np.where(np.arange(n) % 2 == 0, NORMAL_SHAPE, WIDE_SHAPE)
    s = scores(make(), beats(rr, shape))[8:]
    ventricular = (np.arange(8, n) % 2) == 1
    assert (s[ventricular] > DEFAULT_THRESHOLD).all()
    assert (s[~ventricular] < DEFAULT_THRESHOLD).all()


def test_a_beat_without_a_shape_has_no_verdict_however_early() -> None:
    rng = np.random.default_rng(5)
    rr, shape = sinus(rng, 40)
    rr[20], shape[20] = 0.3, np.nan  # very early, but the stage had no template (or a hole) for it
    s = scores(make(), beats(rr, shape))
    assert np.isnan(s[20]) and np.isfinite(s[21])
    rr[30] = np.nan  # a quality-gated interval: that beat has no verdict, the next ones do
    s = scores(make(), beats(rr, shape))
    assert np.isnan(s[30]) and np.isfinite(s[31:]).all()


def test_nan_rows_between_beats_are_skipped_not_waited_out() -> None:
    """A pause longer than 2.5 nominal beats makes the pipeline fill NaN rows into a beat stream (MIT-BIH
    108's 2.8 s pause); the beats after it are judged against the 8 valid intervals before them."""
    rng = np.random.default_rng(10)
    rr, shape = sinus(rng, 40)
    rr[25], rr[30], shape[30] = 2.8, 0.45, WIDE_SHAPE  # a pause, then a PVC within 8 beats of it
    plain = scores(make(), beats(rr, shape))
    filled = beats(rr, shape)
    filled = np.concatenate([filled[:, :25], np.full((1, 2, 2), np.nan), filled[:, 25:]], axis=1)
    s = scores(make(), filled)
    np.testing.assert_allclose(np.delete(s, [25, 26]), plain, rtol=1e-12)
    assert s[32] > DEFAULT_THRESHOLD  # the PVC, 5 beats after the pause
    assert run(make(), filled)[32].baseline[0, 0] == pytest.approx(np.mean(rr[22:30]))  # pause included


def test_a_burst_of_beats_in_one_call_is_judged_beat_by_beat_and_reported_by_its_worst() -> None:
    rng = np.random.default_rng(6)
    rr, shape = sinus(rng, 40)
    rr[33], shape[33] = 0.5, WIDE_SHAPE
    one_by_one = scores(make(), beats(rr, shape))
    burst = scores_of(run(make(), beats(rr, shape), frame=5))[:, 0]  # beats 30-34 arrive together
    assert burst[6] == pytest.approx(one_by_one[33])
    assert burst[6] == pytest.approx(np.nanmax(one_by_one[30:35]))


def test_restored_state_keeps_each_streams_rr_history() -> None:
    rng = np.random.default_rng(7)
    streams = [sinus(rng, 50) for _ in range(3)]
    values = np.stack([beats(rr, shape)[0] for rr, shape in streams])
    values[1, 42, 0], values[1, 42, 1] = 0.45, WIDE_SHAPE
    original = make()
    slide(original, values, range(0, 40))
    saved = json.loads(json.dumps(original.state(), allow_nan=False))
    restored = make()
    restored.load_state(saved)
    after = slide(restored, values, range(40, 50))
    np.testing.assert_array_equal(after, slide(original, values, range(40, 50)))
    assert np.isfinite(after).all()  # judged from the first beat after the restart
    assert after[2, 1] > DEFAULT_THRESHOLD
    fresh = slide(make(), values, range(40, 50))
    assert np.isnan(fresh[:8]).all()  # without the history: 8 beats of warm-up


def test_a_history_of_another_length_warms_up_again_and_an_unreadable_one_is_named() -> None:
    rng = np.random.default_rng(8)
    rr, shape = sinus(rng, 30)
    longer = make(rr_history=12)
    slide(longer, beats(rr, shape), range(0, 20))
    restored = make()
    restored.load_state(json.loads(json.dumps(longer.state(), allow_nan=False)))
    assert np.isnan(slide(restored, beats(rr, shape), range(20, 28))).all()
    saved = make().state()
    saved["streams"] = {"history": [["not a number"] * 8]}
    with pytest.raises(ConfigError) as err:
        make().load_state(saved)
    assert err.value.path == "state.detectors.pvc.streams.history"


def slide(detector: PvcDetector, values: np.ndarray, beats_: range) -> np.ndarray:
    """(beats, streams) scores of feeding `values` (S, n, 2) one beat per call over `beats_`."""
    n = values.shape[0]
    out = []
    for k in beats_:
        block = WindowBlock(values[:, k : k + 1], np.arange(n), np.full(n, T0 + k), 1)
        out.append(detector.score(block).scores)
    return np.array(out)


@pytest.mark.parametrize(
    ("channels", "params", "key"),
    [
        (("rr",), {}, "detectors.pvc.channels"),
        (("rr", "qrs_shape"), {"rr_history": 1}, "detectors.pvc.params.rr_history"),
        (("rr", "qrs_shape"), {"weight": -1.0}, "detectors.pvc.params.weight"),
        (("rr", "qrs_shape"), {"wieght": 2.0}, "detectors.pvc.params.wieght"),
    ],
)
def test_bad_config_names_its_key(channels: tuple[str, ...], params: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        PvcDetector.from_config(DetectorConfig("pvc", "pvc", "rr", channels, params=params), 1.0)
    assert err.value.path == key


def test_through_the_pipeline_a_pvc_raises_an_alarm_that_says_what_drove_it(tmp_path: Path) -> None:
    config = parse_config(
        {
            "gateway": {"id": "gw", "site": "s"},
            "mqtt": {"url": "mqtt://127.0.0.1:1883"},
            "outbox": {"path": "outbox.sqlite"},
            # An ECG patch whose beats the gateway finds: its rr stream carries rr, hr and qrs_shape.
            "devices": [
                {
                    "id": "dev",
                    "kind": "wearable",
                    "transport": "simulator",
                    "simulator": {"ecg": True},
                    "beats": {},
                }
            ],
            "detectors": [
                {"id": "pvc", "type": "pvc", "stream": "rr", "channels": ["rr", "qrs_shape"], "rate_hz": 1.0}
            ],
            "alarms": [
                {
                    "condition": "ventricular_ectopy",
                    "detector": "pvc",
                    "priority": "low",
                    "min_duration_s": 0,
                    "confirm_n": 1,
                    "confirm_m": 1,
                    "clear_after_s": 2,
                }
            ],
        },
        base_dir=tmp_path,
    )
    assert check_wiring(config) == []  # the stage's RR stream has both channels pvc reads
    p = Pipeline(config, lambda device: device)
    seen: list[ScoreBlock] = []
    (detector,) = p.detectors
    original = detector.score

    def tapped(block: WindowBlock) -> ScoreBlock:
        out = original(block)
        seen.append(out)
        return out

    object.__setattr__(detector, "score", tapped)
    rng = np.random.default_rng(9)
    rr, shape = sinus(rng, 40)
    rr[30], rr[31], shape[30] = 0.5, 1.1, WIDE_SHAPE
    times = T0 + np.cumsum(rr)
    readings = [
        Reading.single("dev/rr", {"rr": float(r), "hr": 75.0, "qrs_shape": float(q)}, float(t), float(t - T0))
        for r, q, t in zip(rr, shape, times, strict=True)
    ]
    started = [e for e in p.ingest(readings) if e.phase is Phase.START]
    assert len(seen) == 40  # one call per beat
    assert [b.exceeded[0] for b in seen].index(True) == 30
    assert len(started) == 1 and started[0].onset_time == pytest.approx(times[30])
    assert started[0].explanation.text.startswith("PVC score ")
    assert "possible PVC" in started[0].explanation.text


def test_the_defaults_are_the_evaluation_configs() -> None:
    path = Path(__file__).resolve().parents[2] / "tools" / "evaluate" / "configs" / "pvc.toml"
    (shipped,) = [d for d in tomllib.loads(path.read_text())["detectors"] if d["type"] == "pvc"]
    default = make()
    params = shipped["params"]
    assert (default.threshold, default.weight, default.rr_history) == (
        params["threshold"],
        params["weight"],
        params["rr_history"],
    )


# -- the optional third channel, qrs_core ---------------------------------------------------------------

NARROW_CORE, WIDE_CORE = 0.25, 1.4  # qrs_core of a narrow beat of fast AF, of a PVC (CPSC-2021, MIT-BIH)


def make_core(**params: Any) -> PvcDetector:
    config = DetectorConfig("pvc", "pvc", "rr", ("rr", "qrs_shape", "qrs_core"), params=params)
    return PvcDetector.from_config(config, 1.0)


def beats_core(rr: np.ndarray, shape: np.ndarray, core: np.ndarray) -> np.ndarray:
    """(1, n, 3) one stream of beats: interval, QRS shape (0.65 s window) and QRS core."""
    return np.stack([rr, shape, core], axis=1)[None]


def early_odd_beat(core_at_30: float) -> np.ndarray:
    """Sinus with beat 30 early and its 0.65 s window unlike the template; its QRS core `core_at_30`."""
    rng = np.random.default_rng(1)
    rr, shape = sinus(rng, 60)
    rr[30], rr[31] = 0.5, 1.1
    shape[30] = WIDE_SHAPE
    core = np.full(60, 0.16)
    core[30] = core_at_30
    return beats_core(rr, shape, core)


def test_with_the_core_channel_an_early_beat_with_a_narrow_qrs_is_no_pvc() -> None:
    # As at a fast AF onset: the window takes in the neighbours' waves, the QRS alone is like the template.
    d = make_core()
    s = scores(d, early_odd_beat(NARROW_CORE))
    assert s[30] < d.threshold
    # Without the core channel the same beat is a PVC.
    assert scores(make(), early_odd_beat(NARROW_CORE)[:, :, :2])[30] > DEFAULT_THRESHOLD


def test_with_the_core_channel_an_early_wide_beat_is_still_a_pvc() -> None:
    d = make_core()
    values = early_odd_beat(WIDE_CORE)
    s = scores(d, values)
    assert s[30] > d.threshold + 1.0
    assert np.nanmax(np.delete(s, 30)) < d.threshold
    assert s[30] == scores(make(), values[:, :, :2])[30]  # its shape (2.0) below 1.5 x its core: as read
    block = run(make_core(), values)[30]
    assert block.contributions.shape == (1, 3) and block.baseline.shape == (1, 3)
    assert block.contributions[0, 2] > 0  # the core's excess over a normal beat's


def test_with_the_core_channel_the_shape_counts_at_most_a_multiple_of_the_core() -> None:
    # A beat whose window is far more unlike the template than its QRS: its shape is read as 1.5 x core.
    values = early_odd_beat(0.4)
    values[0, 30, 1] = 5.0
    capped = values.copy()
    capped[0, 30, 1] = 1.5 * 0.4
    assert scores(make_core(), values)[30] == pytest.approx(scores(make(), capped[:, :, :2])[30])


def test_with_the_core_channel_a_beat_without_a_core_has_no_verdict() -> None:
    values = early_odd_beat(np.nan)
    s = scores(make_core(), values)
    assert np.isnan(s[30]) and np.isfinite(s[29])


def test_the_core_floor_is_a_param() -> None:
    assert scores(make_core(min_qrs_core=0.2), early_odd_beat(NARROW_CORE))[30] > DEFAULT_THRESHOLD


@pytest.mark.parametrize(
    ("channels", "params", "key"),
    [
        (("rr", "qrs_shape", "hr"), {}, "detectors.pvc.channels[2]"),
        (("rr", "qrs_shape", "qrs_core", "p_wave"), {}, "detectors.pvc.channels"),
        (("rr", "qrs_shape"), {"min_qrs_core": 0.35}, "detectors.pvc.params.min_qrs_core"),
        (("rr", "qrs_shape", "qrs_core"), {"min_qrs_core": -1}, "detectors.pvc.params.min_qrs_core"),
    ],
)
def test_bad_core_channels_and_params_name_their_key(
    channels: tuple[str, ...], params: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as err:
        PvcDetector.from_config(DetectorConfig("pvc", "pvc", "rr", channels, params=params), 1.0)
    assert err.value.path == key
