"""tools.evaluate.vt_runs: the real runs it counts in annotations and the runs it splices into a record."""

from __future__ import annotations

import numpy as np
import pytest

from tools.evaluate import vt_runs
from tools.evaluate.datasets import MITDB_FS

FS = MITDB_FS


def test_real_runs_are_three_or_more_pvcs_above_100_bpm() -> None:
    rr = np.array([0.8] * 5 + [0.4] * 2 + [0.8] * 3 + [0.5] * 3 + [0.8] * 3 + [0.7] * 3 + [0.8] * 3)
    beats = np.round(np.cumsum(rr) * FS).astype(np.int64)
    is_pvc = np.zeros(len(rr), dtype=bool)
    is_pvc[[5, 6]] = True  # a couplet
    is_pvc[[10, 11, 12]] = True  # a triplet at 120 bpm
    is_pvc[[16, 17, 18]] = True  # a triplet at 86 bpm: idioventricular, no VT
    runs = vt_runs.real_runs(beats, is_pvc)
    assert runs == [pytest.approx((beats[10] / FS, beats[12] / FS))]


def test_a_spliced_run_replaces_the_record_between_its_host_and_the_resumed_beat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    n = round(400 * FS)
    beats = np.arange(round(0.5 * FS), n - round(FS), round(0.8 * FS)).astype(np.int64)
    t = np.arange(n)
    ecg = np.zeros(n)
    for b in beats:
        ecg += np.exp(-0.5 * ((t - b) / 4.0) ** 2)  # narrow sinus QRS
    is_pvc = np.zeros(len(beats), dtype=bool)
    is_pvc[-10] = True
    ecg += 0.5 * np.exp(-0.5 * ((t - beats[-10]) / 15.0) ** 2)  # the donor: wider
    monkeypatch.setattr(vt_runs, "load_record", lambda root, record: (ecg, beats, is_pvc))
    host = int(beats[250])
    case = vt_runs.Case("x", host, int(beats[-10]), 5, 150)
    spliced = vt_runs.splice(None, case)
    start = host - round(vt_runs.PRE_S * FS)
    interval = round(0.4 * FS)
    run = spliced.beats[spliced.is_run]
    np.testing.assert_array_equal(run, host - start + interval * np.arange(1, 6))
    assert spliced.onset == run[0] and spliced.last == run[-1]
    resumed = spliced.beats[~spliced.is_run & (spliced.beats > run[-1])][0]
    assert resumed - run[-1] >= round(0.8 * FS)  # at least the host's own RR after the run
    np.testing.assert_array_equal(spliced.ecg[: host - start], ecg[start:host])  # untouched before
    assert spliced.ecg[run[2]] == pytest.approx(ecg[beats[-10]], abs=0.05)  # the donor's peak
    irregular = vt_runs.splice(None, case, jitter=0.3)
    gaps = np.diff(irregular.beats[irregular.is_run])
    assert gaps.min() >= 0.7 * interval - 1 and gaps.max() <= 1.3 * interval + 1 and len(set(gaps)) > 1


def test_the_runs_part_says_the_rules_figure_alone() -> None:
    """`--part runs` says the adoption rule's figure (runs of >= 5 beats at >= 150 bpm, their median
    delay) without the records, so a variant can be judged on the spliced runs alone."""

    def result(length: int, bpm: int, delay: float | None) -> vt_runs.CaseResult:
        starts = {vt_runs.VT: delay} if delay is not None else {}
        return vt_runs.CaseResult(vt_runs.Case("106", 0, 0, length, bpm), length, starts, (), 0)

    results = [result(3, 240, 0.5), result(5, 110, 2.8), result(5, 150, 2.0), result(8, 200, 1.0)]
    results += [result(40, 240, None)]
    line, alarmed, cases, median = vt_runs._fast_runs(results, vt_runs.VT)
    assert (alarmed, cases, median) == (2, 3, 1.5)
    assert (
        line
        == "Runs of >= 5 beats at >= 150 bpm alarmed by ventricular_tachycardia: 2 / 3, median delay 1.50 s"
    )
