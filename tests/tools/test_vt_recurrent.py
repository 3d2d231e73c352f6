"""tools.evaluate.vt_recurrent: two runs spliced with the record's own sinus beats between them, and how an
alarm's episodes are read against the second run."""

from __future__ import annotations

import numpy as np
import pytest

from agent.readings import Reading
from tools.evaluate import vt_recurrent, vt_runs
from tools.evaluate.datasets import MITDB_FS, T0
from tools.evaluate.replay import Episode

FS = MITDB_FS


def test_two_runs_with_the_records_own_sinus_beats_between_them(monkeypatch: pytest.MonkeyPatch) -> None:
    n = round(600 * FS)
    beats = np.arange(round(0.5 * FS), n - round(FS), round(0.8 * FS)).astype(np.int64)
    t = np.arange(n)
    ecg = np.zeros(n)
    for b in beats:
        ecg += np.exp(-0.5 * ((t - b) / 4.0) ** 2)
    is_pvc = np.zeros(len(beats), dtype=bool)
    is_pvc[-10] = True
    monkeypatch.setattr(vt_runs, "load_record", lambda root, record: (ecg, beats, is_pvc))
    host = int(beats[250])
    case = vt_recurrent.RecurrentCase("x", host, int(beats[-10]), 15, 5, 30)
    spliced = vt_recurrent.splice(None, case)
    assert spliced is not None
    start = host - round(vt_runs.PRE_S * FS)
    interval = round(0.4 * FS)
    run = spliced.beats[spliced.is_run]
    assert len(run) == 45
    np.testing.assert_array_equal(run[:15], host - start + interval * np.arange(1, 16))
    (a1, b1), (a2, b2) = spliced.runs
    assert (a1, b1, a2, b2) == (run[0], run[14], run[15], run[-1])
    between = spliced.beats[(spliced.beats > b1) & (spliced.beats < a2)]
    assert len(between) == 5 and not spliced.is_run[np.isin(spliced.beats, between)].any()
    assert set(between + start) <= set(beats.tolist())  # the record's own beats
    assert a2 - between[-1] == interval  # the second run follows the last sinus beat
    np.testing.assert_array_equal(spliced.second_beats, run[15:])
    assert spliced.ecg[run[20]] == pytest.approx(ecg[beats[-10]], abs=0.05)  # the donor's peak
    late = vt_recurrent.RecurrentCase("x", int(beats[-60]), int(beats[-10]), 100, 12, 100)
    assert vt_recurrent.splice(None, late) is None  # no room before the record's end


def test_the_second_run_is_alarmed_by_a_start_in_it_or_by_an_episode_covering_80_percent() -> None:
    runs = ((round(10 * FS), round(16 * FS)), (round(20 * FS), round(29 * FS)))
    second = np.round(np.arange(20.0, 29.01, 0.4) * FS).astype(np.int64)  # 23 beats
    # the first run's episode ends 10 s after it, partway into the second: 9 of 23 beats covered
    first, start, continued, coverage, on_at_end = vt_recurrent.judge(
        [Episode("vt", 12.0, 23.5)], runs, second, 60.0
    )
    assert first == pytest.approx(2.0) and start is None and continued and not on_at_end
    assert coverage == pytest.approx(9 / 23)
    missed = vt_recurrent.RecurrentResult(vt_recurrent.RecurrentCase("x", 0, 0, 15, 5, 30), True, 45, 2.0)
    assert not missed.second_alarmed
    # a new start at the second run's 5th beat
    _, start, continued, coverage, on_at_end = vt_recurrent.judge(
        [Episode("vt", 12.0, 19.0), Episode("vt", 21.8, None)], runs, second, 60.0
    )
    assert start == pytest.approx(1.8) and not continued and on_at_end
    assert coverage == pytest.approx(18 / 23)


def test_pvc_flags_judges_each_beat_as_the_pvc_detector_does() -> None:
    """The lead part's verdicts: pvc at its defaults, one beat per call; an early wide beat is flagged, the
    normal beats around it and a reading that is no beat (a pause's hr alone) are not."""
    channels = ("rr", "hr", "qrs_shape", "qrs_core")
    rows = [(0.8, 75.0, 0.2, 0.1)] * 12 + [(0.45, 80.0, 2.0, 1.4)] + [(1.15, 75.0, 0.2, 0.1)] * 3
    beats = []
    t = T0
    for values in rows:
        t += values[0]
        beats.append(vt_runs.Beat(Reading("eval/ecg_rr", channels, np.array([values]), t, 0.0), 0.0))
    pause = Reading("eval/ecg_rr", ("hr",), np.array([[15.0]]), t + 4.0, 0.0)
    beats.append(vt_runs.Beat(pause, 0.0))
    flags = vt_recurrent.pvc_flags(beats)
    assert len(flags) == len(rows)
    assert [i for i, (_, flagged) in enumerate(flags) if flagged] == [12]
    assert flags[12][0] == pytest.approx(t - T0 - 3 * 1.15)
