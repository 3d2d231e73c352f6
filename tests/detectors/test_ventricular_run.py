"""Ventricular tachycardia from a beat stream: a fast run of `run_beats` ventricular beats alarms at its
5th beat, however many beats a hop holds, and stays on through a long run that stops reading as ventricular
beat by beat; couplets, bigeminy, a slow idioventricular run and an irregular run of false beats do not;
a run in progress survives a restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from detector_drive import T0, run, scores_of

from agent.alarms import explain
from agent.config import parse_config
from agent.config.schema import DetectorConfig
from agent.detectors.pvc import PvcDetector
from agent.detectors.ventricular_run import VentricularRunDetector
from agent.errors import ConfigError
from agent.events import Phase
from agent.pipeline import Pipeline
from agent.readings import Reading

NORMAL_SHAPE, WIDE_SHAPE = 0.2, 2.0  # as in test_pvc: MIT-BIH medians of a normal beat and of a PVC


def make(**params: Any) -> VentricularRunDetector:
    return VentricularRunDetector.from_config(
        DetectorConfig("vt", "ventricular_run", "rr", ("rr", "qrs_shape"), params=params), 1.0
    )


def beats(rr: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """(1, n, 2) one stream of beats: the interval ending at each and its QRS shape."""
    return np.stack([rr, shape], axis=1)[None]


def sinus(n: int, rr: float = 0.8, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rr * (1 + rng.normal(0, 0.01, n)), NORMAL_SHAPE * np.exp(rng.normal(0, 0.2, n))


def with_run(
    n_before: int, run_rr: list[float], shapes: list[float] | float = WIDE_SHAPE, n_after: int = 20
) -> np.ndarray:
    """Sinus at 75 bpm, the run (each beat's interval and shape), sinus again after a 1 s pause."""
    rr, shape = sinus(n_before + len(run_rr) + n_after)
    k = len(run_rr)
    rr[n_before : n_before + k] = run_rr
    shape[n_before : n_before + k] = shapes
    rr[n_before + k] = 1.0
    return beats(rr, shape)


def scores(detector: VentricularRunDetector, values: np.ndarray, frame: int | None = None) -> np.ndarray:
    return scores_of(run(detector, values, frame=frame))[:, 0]


def test_a_fast_run_alarms_at_its_fifth_beat_and_its_value_is_its_rate() -> None:
    values = with_run(30, [0.4] * 8)  # 8 wide beats at 150 bpm
    d = make()
    s = scores(d, values)
    exceeded = np.flatnonzero(s > d.threshold)
    # the run's 5th to 8th beats, and 2 beats after it: the median of the last 5 intervals says it is over
    assert exceeded.tolist() == list(range(34, 40))
    assert s[34] == 5 and s[37] == 8
    block = run(make(), values)[36]
    assert block.observed[0] == pytest.approx(150.0)  # the mean of the run's last 5 intervals
    assert block.limits[0] == 100.0
    assert (s[40:] == 0).all()  # back to sinus: over


def test_a_couplet_a_run_of_four_and_bigeminy_do_not_alarm() -> None:
    d = make()
    assert np.nanmax(scores(d, with_run(30, [0.4, 0.4]))) == 2  # a couplet: a run of 2
    assert np.nanmax(scores(make(), with_run(30, [0.4] * 4))) == 4  # non-sustained, below run_beats
    n = 120
    rr = np.where(np.arange(n) % 2 == 0, 1.1, 0.5)  # bigeminy: every other beat a PVC
    shape = np.where(np.arange(n) % 2 == 0, NORMAL_SHAPE, WIDE_SHAPE)
    assert np.nanmax(scores(make(), beats(rr, shape))) == 1


def test_a_slow_idioventricular_run_does_not_alarm() -> None:
    # 12 wide beats at 80 bpm after sinus at 75: each one judged ventricular by pvc, none fast.
    values = with_run(30, [0.75] * 12, shapes=3 * WIDE_SHAPE)
    pvc = scores_of(run(PvcDetector("pvc", ("rr", "qrs_shape"), 1, 0.69), values))[:, 0]
    assert (pvc[30:42] > 0.69).all()
    s = scores(make(), values)
    assert np.nanmax(s) == 0
    assert np.nanmax(scores(make(run_rate_bpm=75), values)) >= 12  # above a lower rate limit it would


def test_a_long_run_goes_on_after_pvc_stops_judging_its_beats_ventricular() -> None:
    # 40 beats at 150 bpm whose shape fades into the template (the stage's median of 32 beats adopts the
    # run) and whose prematurity tends to 1: pvc flags only the first beats, the run is told to its end.
    shapes = np.concatenate([np.full(12, WIDE_SHAPE), np.full(28, NORMAL_SHAPE)]).tolist()
    values = with_run(30, [0.4] * 40, shapes=shapes)
    pvc = scores_of(run(PvcDetector("pvc", ("rr", "qrs_shape"), 1, 0.69), values))[:, 0]
    assert (pvc[45:70] < 0.69).all()  # no longer ventricular beat by beat
    s = scores(make(), values)
    assert (s[34:70] > 4).all() and s[69] == 40
    assert (s[72:] == 0).all()  # over 2 beats after the run (the median of its last 5 intervals)


def test_an_irregular_run_of_false_beats_does_not_alarm_unless_regularity_is_off() -> None:
    # Noise read as beats (MIT-BIH 105): early, unlike the template, intervals from 0.2 to 0.8 s.
    values = with_run(30, [0.7, 0.84, 0.21, 0.31, 0.72, 0.3], shapes=4.0)
    assert np.nanmax(scores(make(), values)) == 0
    assert np.nanmax(scores(make(max_rr_ratio=0), values)) > 4


def test_several_beats_per_hop_are_judged_beat_by_beat() -> None:
    values = with_run(30, [0.4] * 8)
    one_by_one = scores(make(), values)
    for frame in (3, 4, 7):
        framed = scores(make(), values, frame=frame)
        expected = [np.fmax.reduce(one_by_one[i : i + frame]) for i in range(0, frame * len(framed), frame)]
        np.testing.assert_array_equal(framed, expected)
        assert (framed > 4).sum() >= 1  # the hop holding the 5th beat alarms, whatever the split


def adapted_run(n: int = 60) -> np.ndarray:
    """A sustained run at 150 bpm whose later beats no longer read as ventricular (the template adopted
    them, prematurity 1), between sinus stretches."""
    shapes = np.concatenate([np.full(12, WIDE_SHAPE), np.full(n - 12, NORMAL_SHAPE)]).tolist()
    return with_run(30, [0.4] * n, shapes=shapes)


def test_a_missed_beat_in_a_sustained_run_does_not_end_it() -> None:
    """A review found one beat the QRS detector missed (a doubled interval) ended the run for good in
    sustained VT: pvc no longer judges an adapted run's beats ventricular, so nothing started it again,
    and the alarm ended 10 s later while VT went on."""
    values = adapted_run()
    values[0, 60, 0] = 0.8  # the 31st beat of the run missed: its interval spans two
    s = scores(make(), values)
    assert (s[34:90] > 4).all() and s[89] == 60


def test_an_established_run_waits_over_a_row_without_a_beat() -> None:
    values = adapted_run()
    gapped = np.concatenate([values[:, :60], np.full((1, 3, 2), np.nan), values[:, 60:]], axis=1)
    s = scores(make(), gapped)
    assert np.isnan(s[60:63]).all()  # no verdict while no beat comes
    assert (s[34:60] > 4).all() and (s[63:93] > 4).all() and s[92] == 60


def test_a_nan_row_ends_a_run_not_yet_established() -> None:
    values = with_run(30, [0.4] * 8)
    gapped = np.concatenate([values[:, :33], np.full((1, 1, 2), np.nan), values[:, 33:]], axis=1)
    s = scores(make(), gapped)
    assert np.isnan(s[33]) and np.nanmax(s[:38]) == 4  # 3 beats, a gap, then 4 beats: no alarm yet
    assert s[38] == 5  # the 5th beat after the gap


def test_a_run_in_progress_survives_a_restart() -> None:
    values = with_run(30, [0.4] * 12)
    whole = scores(make(), values)
    first = make()
    run(first, values[:, :36])  # stopped at the run's 6th beat
    saved = json.loads(json.dumps(first.state(), allow_nan=False))
    assert set(saved["streams"]) == {"history", "run"}
    restored = make()
    restored.load_state(saved)
    rest = values[:, 36:]
    tail = scores_of(run(restored, rest))[:, 0]
    np.testing.assert_array_equal(tail, whole[36:])
    assert tail[0] == 7
    other = make(run_beats=6)  # another run length: the run is a warm-up cache, started again
    other.load_state(saved)
    assert other.threshold == 5.0
    assert scores_of(run(other, rest))[0, 0] == 1  # the run counted again from this beat


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"run_beats": 1}, "detectors.vt.params.run_beats"),
        ({"run_rate_bpm": 500}, "detectors.vt.params.run_rate_bpm"),
        ({"max_rr_ratio": 0.5}, "detectors.vt.params.max_rr_ratio"),
        ({"rr_history": 1}, "detectors.vt.params.rr_history"),
        ({"run_beat": 5}, "detectors.vt.params.run_beat"),
        ({"min_qrs_core": -1}, "detectors.vt.params.min_qrs_core"),
        # without the qrs_core channel the floor would configure nothing
        ({"min_qrs_core": 0.5}, "detectors.vt.params.min_qrs_core"),
    ],
)
def test_bad_config_names_its_key(params: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        make(**params)
    assert err.value.path == key


@pytest.mark.parametrize(
    ("channels", "key"),
    [
        (("rr", "qrs_shape", "hr"), "detectors.vt.channels[2]"),  # read by position: hr taken for the core
        (("rr",), "detectors.vt.channels"),
        (("rr", "qrs_shape", "qrs_core", "p_wave"), "detectors.vt.channels"),
    ],
)
def test_bad_channels_name_their_key(channels: tuple[str, ...], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        VentricularRunDetector.from_config(DetectorConfig("vt", "ventricular_run", "rr", channels), 1.0)
    assert err.value.path == key


NARROW_CORE, WIDE_CORE = 0.3, 1.4  # qrs_core of a narrow beat of fast AF, of a PVC (CPSC-2021, MIT-BIH)


def make_with_core(**params: Any) -> VentricularRunDetector:
    config = DetectorConfig("vt", "ventricular_run", "rr", ("rr", "qrs_shape", "qrs_core"), params=params)
    return VentricularRunDetector.from_config(config, 1.0)


def with_core(values: np.ndarray, core: np.ndarray) -> np.ndarray:
    return np.concatenate([values, core[None, :, None]], axis=2)


def test_a_fast_run_of_narrow_qrs_beats_does_not_alarm_with_the_core_channel() -> None:
    """Fast AF onset: beats ~50 % early whose 0.65 s window takes in the neighbours' waves (qrs_shape
    1.0, pvc judges them ventricular) while their QRS itself is the normal narrow one."""
    values = with_run(30, [0.35] * 12, shapes=1.0)
    narrow = np.full(values.shape[1], 0.15)
    narrow[30:42] = NARROW_CORE
    assert np.nanmax(scores(make(), values)) >= 12  # rr and qrs_shape alone: a false VT
    assert np.nanmax(scores(make_with_core(), with_core(values, narrow))) == 0


def test_a_fast_run_of_wide_qrs_beats_alarms_with_the_core_channel() -> None:
    values = with_run(30, [0.4] * 8)
    core = np.full(values.shape[1], 0.15)
    core[30:38] = WIDE_CORE
    s = scores(make_with_core(), with_core(values, core))
    np.testing.assert_array_equal(s, scores(make(), values))  # the same run, beat for beat
    assert s[34] == 5
    block = run(make_with_core(), with_core(values, core))[34]
    assert block.contributions.shape == (1, 3) and block.contributions[0, 2] > 0  # the core says why


def test_a_beat_without_a_core_does_not_count_toward_a_run() -> None:
    values = with_run(30, [0.4] * 8)
    core = np.full(values.shape[1], WIDE_CORE)
    core[32] = np.nan  # not known: not ventricular
    assert np.nanmax(scores(make_with_core(), with_core(values, core))[:36]) == 3


def test_through_the_pipeline_the_alarm_starts_at_once_and_says_the_run(tmp_path: Path) -> None:
    config = parse_config(
        {
            "gateway": {"id": "gw", "site": "s"},
            "mqtt": {"url": "mqtt://127.0.0.1:1883"},
            "outbox": {"path": "outbox.sqlite"},
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
                {
                    "id": "vt",
                    "type": "ventricular_run",
                    "stream": "rr",
                    "channels": ["rr", "qrs_shape"],
                    "rate_hz": 1.0,
                }
            ],
            "alarms": [
                {
                    "condition": "ventricular_tachycardia",
                    "detector": "vt",
                    "priority": "high",
                    "min_duration_s": 0,
                    "clear_after_s": 10,
                    "cooldown_s": 0,
                    "unit": "bpm",
                }
            ],
        },
        base_dir=tmp_path,
    )
    values = with_run(30, [0.4] * 8)[0]
    times = T0 + np.cumsum(values[:, 0])
    readings = [
        Reading.single("dev/rr", {"rr": float(r), "hr": 75.0, "qrs_shape": float(q)}, float(t), float(t - T0))
        for (r, q), t in zip(values, times, strict=True)
    ]
    events = Pipeline(config, lambda device: device).ingest(readings)
    (started,) = [e for e in events if e.phase is Phase.START]
    assert started.detection_time == pytest.approx(times[34])  # the run's 5th beat
    assert started.explanation.text.startswith("run of 5 ventricular beats at 150 bpm, above limit 100 bpm")
    assert "possible ventricular tachycardia" in started.explanation.text


def test_the_quantity_is_the_one_explain_words() -> None:
    assert VentricularRunDetector.quantity == explain.VENTRICULAR_RUN


# -- the fourth channel, qrs_width: a VT right after a break, judged without a template ------------------

WIDE_QRS_S, NARROW_QRS_S = 0.11, 0.06  # agent.ecg.qrs_width: a PVC's (MIT-BIH median 0.106), a normal beat's


def make_with_width(**params: Any) -> VentricularRunDetector:
    channels = ("rr", "qrs_shape", "qrs_core", "qrs_width")
    return VentricularRunDetector.from_config(
        DetectorConfig("vt", "ventricular_run", "rr", channels, params=params), 1.0
    )


def after_a_lead_off(rr_after: float, width: float, rr_before: float = 0.8, n: int = 40) -> np.ndarray:
    """(1, 30 + 3 + n, 4): sinus at `rr_before` with its shapes, 3 "no value" rows (a lead-off), then `n`
    beats at `rr_after` as the stage gives them after a break: no shape for 8 beats, then the shape and
    core of templates made of these very beats (normal), and their width for the first 32."""
    rows = 30 + 3 + n
    values = np.full((1, rows, 4), np.nan)
    values[0, :30, 0], values[0, :30, 1] = sinus(30, rr_before)
    values[0, :30, 2] = 0.15
    after = slice(33, rows)
    values[0, after, 0] = rr_after
    values[0, 41:, 1], values[0, 41:, 2] = NORMAL_SHAPE, 0.15  # the template is the run itself
    values[0, 33 : 33 + 32, 3] = width
    return values


def test_a_wide_fast_run_right_after_a_lead_off_alarms_with_the_width() -> None:
    # Failed before: four channels were refused, and without the width the run never alarms (below).
    values = after_a_lead_off(0.4, WIDE_QRS_S)
    s = scores(make_with_width(), values)
    assert s[33 + 4] == 5  # its fifth beat
    assert np.nanmax(scores(make_with_core(), values[:, :, :3])) == 0  # the run is the template
    block = run(make_with_width(), values)[33 + 4]
    assert block.contributions.shape == (1, 4) and block.contributions[0, 3] > 0  # the width says why


def test_a_narrow_fast_rhythm_after_a_lead_off_does_not_alarm() -> None:
    assert np.nanmax(scores(make_with_width(), after_a_lead_off(0.4, NARROW_QRS_S))) == 0


def test_a_wide_rhythm_after_a_lead_off_below_the_wide_rate_does_not_alarm() -> None:
    """A paced or bundle-branch-block rhythm at 110 bpm: wide, above VT's 100 bpm, below 120."""
    assert np.nanmax(scores(make_with_width(), after_a_lead_off(60 / 110, WIDE_QRS_S))) == 0
    assert np.nanmax(scores(make_with_width(wide_rate_bpm=100), after_a_lead_off(60 / 110, WIDE_QRS_S))) >= 5


def test_a_wide_rhythm_as_fast_as_before_the_lead_off_does_not_alarm() -> None:
    """Not early against the rhythm before the break (pvc's RR baseline keeps it over the NaN rows)."""
    assert np.nanmax(scores(make_with_width(), after_a_lead_off(0.44, WIDE_QRS_S, rr_before=0.45))) == 0
    assert np.nanmax(scores(make_with_width(), after_a_lead_off(0.44, WIDE_QRS_S, rr_before=0.6))) >= 5


@pytest.mark.parametrize(
    ("channels", "params", "key"),
    [
        (("rr", "qrs_shape", "qrs_width", "qrs_core"), {}, "detectors.vt.channels"),
        (("rr", "qrs_shape", "qrs_core", "hr"), {}, "detectors.vt.channels"),
        (("rr", "qrs_shape", "qrs_core"), {"min_qrs_width_s": 0.1}, "detectors.vt.params.min_qrs_width_s"),
        (("rr", "qrs_shape", "qrs_core"), {"wide_rate_bpm": 130}, "detectors.vt.params.wide_rate_bpm"),
        (
            ("rr", "qrs_shape", "qrs_core", "qrs_width"),
            {"min_qrs_width_s": 2},
            "detectors.vt.params.min_qrs_width_s",
        ),
    ],
)
def test_the_width_channel_and_its_params_are_checked(
    channels: tuple[str, ...], params: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as err:
        VentricularRunDetector.from_config(
            DetectorConfig("vt", "ventricular_run", "rr", channels, params=params), 1.0
        )
    assert err.value.path == key
