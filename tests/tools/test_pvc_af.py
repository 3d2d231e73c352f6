"""tools.evaluate.pvc_af and the CPSC-shaped beats it reads (`cpsc_beats_from_ecg`), on the MIT-BIH 200
excerpt (tests/fixtures/mitdb, ODC-By, attributed there) written as a WFDB record in CPSC's layout with a
rhythm annotation of our own: the labels (V, AF, AF onset) come from the annotations, the beats from the
raw ECG, and the report counts the flagged beats by kind. A pause in the ECG (a flat stretch, which the
stage says with readings of hr alone) leaves no row in the beat series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tools.evaluate.beats_from_ecg import AF_ONSET_BEATS, cpsc_beats_from_ecg, detected_rr
from tools.evaluate.datasets import MITDB_FS, T0
from tools.evaluate.pvc_af import Flagged, evaluate, report

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "mitdb"
CONFIG = ROOT / "tools" / "evaluate" / "configs" / "pvc.toml"
AF_FROM_S, AF_TO_S = 30.0, 50.0  # the excerpt's rhythm annotation (ours: 200 has no AF there)


def excerpt() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ecg = np.loadtxt(FIXTURE / "200_mlii_0-60s.csv", delimiter=",", skiprows=1)
    table = np.genfromtxt(FIXTURE / "200_beats_0-60s.csv", delimiter=",", names=True)
    return ecg, table["sample"].astype(np.int64), table["is_pvc"] > 0


def write_record(folder: Path, name: str, rhythm: list[tuple[float, str]]) -> None:
    """The excerpt as CPSC-2021 lays a record out: one signal, beat symbols N / V, rhythm changes '+'."""
    import wfdb  # the dev extra installs it (tools-side: CPSC-2021 ships as WFDB records)

    ecg, peaks, is_pvc = excerpt()
    wfdb.wrsamp(
        name, fs=MITDB_FS, units=["mV"], sig_name=["ECG"], p_signal=ecg[:, None], write_dir=str(folder)
    )
    marks = [(round(t * MITDB_FS), "+", note) for t, note in rhythm]
    marks += [(int(p), "V" if v else "N", "") for p, v in zip(peaks, is_pvc, strict=True)]
    marks.sort(key=lambda m: (m[0], m[1] != "+"))
    wfdb.wrann(
        name,
        "atr",
        np.array([m[0] for m in marks]),
        symbol=[m[1] for m in marks],
        aux_note=[m[2] for m in marks],
        fs=MITDB_FS,
        write_dir=str(folder),
    )


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cpsc")
    write_record(folder, "data_1_1", [(0.0, "(N"), (AF_FROM_S, "(AFIB"), (AF_TO_S, "(N")])
    write_record(folder, "data_1_2", [(0.0, "(AFIB"), (AF_TO_S, "(N")])  # AF from the first sample
    return folder


def test_beats_carry_every_channel_and_the_labels_of_the_annotations(records: Path) -> None:
    onset_then_sinus, af_from_start = cpsc_beats_from_ecg(records)
    _, _, is_pvc = excerpt()
    for s in (onset_then_sinus, af_from_start):
        assert s.channels == ("rr", "hr", "qrs_shape", "qrs_core", "p_wave", "qrs_width")
        # A beat found is a PVC when an annotated V lies within 150 ms; the excerpt's first beat (a PVC)
        # has no interval, and the last PVC's window runs past the end of the excerpt.
        assert int(is_pvc.sum()) - 2 <= int(s.labels.sum()) <= int(is_pvc.sum())
    t = onset_then_sinus.times - T0
    af = onset_then_sinus.extra["af"] > 0
    assert np.array_equal(af, (t >= AF_FROM_S) & (t < AF_TO_S))
    onset = onset_then_sinus.extra["af_onset"] > 0
    assert onset.sum() == min(AF_ONSET_BEATS, af.sum()) and (af | ~onset).all()
    assert t[onset].min() == t[af].min()  # the first beats of the episode
    # An episode from the record's first sample has no onset: no sinus template to differ from.
    assert not (af_from_start.extra["af_onset"] > 0).any()
    assert (af_from_start.extra["af"] > 0).sum() > 0


def test_the_report_counts_flagged_beats_by_kind(records: Path) -> None:
    series = cpsc_beats_from_ecg(records)
    flags = evaluate(CONFIG, series)
    for f, s in zip(flags, series, strict=True):
        assert f.non_v_af.total + f.non_v_sinus.total + f.v.total == len(s.times)
        # The excerpt's bigeminy and couplets: nearly every PVC judged is flagged, few other beats.
        assert f.v.flagged >= f.v.total - 10 and f.v.total >= 25
        assert f.non_v_af.flagged + f.non_v_sinus.flagged <= 3
    text = report(CONFIG, flags)
    assert "| data_1_1 |" in text and "| data_1_2 |" in text
    assert f"| V beats (annotated PVCs) | {sum((f.v for f in flags), Flagged(0, 0))} |" in text


def test_a_pause_in_the_ecg_leaves_no_row_without_an_interval() -> None:
    ecg, _, _ = excerpt()
    paused = ecg.copy()
    paused[round(20 * MITDB_FS) : round(26 * MITDB_FS)] = paused[round(20 * MITDB_FS)]  # 6 s flat
    times, values = detected_rr(paused, MITDB_FS)
    assert values.shape == (len(times), 6)
    assert np.isfinite(values[:, :2]).all()
    assert not ((times > 21.0) & (times < 26.0)).any()
