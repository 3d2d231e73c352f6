"""`qrs_shape` of the beats found in a real ECG: MIT-BIH record 119's minute of ventricular bigeminy.

The excerpt (tests/data/README.md: ODC-By 1.0, attributed) has 64 annotated beats, 19 of them PVCs. The
stage (agent.ecg.rr_from_ecg with the real QRS detector) must give each beat the shape distance that the
evaluation-side reference (tools/evaluate/pvc.py) computes offline over the whole signal for the same
peaks, and the PVCs must stand out by it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from agent.config.schema import BeatsConfig
from agent.ecg.qrs import QrsDetector
from agent.ecg.rr_from_ecg import RrFromEcg
from agent.inference.beats import MIN_TEMPLATE_BEATS, TEMPLATE_BEATS, beat_windows, shape_distance
from agent.readings import Reading

EXCERPT = Path(__file__).resolve().parents[1] / "data" / "mitdb_119_mlii_180s_60s.npz"
FRAME = 73


@pytest.fixture(scope="module")
def record() -> tuple[npt.NDArray[np.float64], float, npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    d = np.load(EXCERPT)
    fs = float(d["fs_hz"])
    return d["ecg_adc"] / float(d["adc_per_mv"]), fs, d["beats"].astype(np.int64), d["is_pvc"] > 0


def stage_output(ecg: npt.NDArray[np.float64], fs: float) -> list[tuple[float, float]]:
    """(time since the start, qrs_shape) of each RR reading the stage makes."""
    stage = RrFromEcg("holter", BeatsConfig())
    out = []
    for start in range(0, len(ecg), FRAME):
        block = Reading("holter/ecg", ("ecg",), ecg[start : start + FRAME, None], start / fs, 0.0, 1.0 / fs)
        out += [
            (r.wall_time, float(r.values[0, 2]) if "qrs_shape" in r.channels else np.nan)
            for r in stage.take(block)
            if r.stream == "holter/rr"
        ]
    return out


def test_the_stage_gives_each_beat_the_offline_shape_of_the_same_beats(
    record: tuple[npt.NDArray[np.float64], float, npt.NDArray[np.int64], npt.NDArray[np.bool_]],
) -> None:
    ecg, fs, _, _ = record
    detector = QrsDetector(fs)
    peaks = np.concatenate([detector.feed(ecg[i : i + FRAME]) for i in range(0, len(ecg), FRAME)])
    windows, ok = beat_windows(ecg, peaks, fs)
    offline, history = {}, []
    for peak, window, whole in zip(peaks, windows[:, :, 0].astype(np.float64), ok, strict=True):
        if whole:
            if len(history) >= MIN_TEMPLATE_BEATS:
                offline[round(peak / fs, 6)] = shape_distance(window, np.array(history[-TEMPLATE_BEATS:]))
            history.append(window)
    got = {round(t, 6): shape for t, shape in stage_output(ecg, fs) if np.isfinite(shape)}
    assert len(got) >= 50
    assert got.keys() == offline.keys()
    assert [got[t] for t in sorted(got)] == pytest.approx([offline[t] for t in sorted(got)])


def test_pvcs_stand_out_by_their_shape(
    record: tuple[npt.NDArray[np.float64], float, npt.NDArray[np.int64], npt.NDArray[np.bool_]],
) -> None:
    ecg, fs, beats, is_pvc = record
    pvc, normal = [], []
    for t, shape in stage_output(ecg, fs):
        nearest = int(np.argmin(np.abs(beats / fs - t)))
        if abs(beats[nearest] / fs - t) <= 0.15 and np.isfinite(shape):
            (pvc if is_pvc[nearest] else normal).append(shape)
    assert len(pvc) >= 12 and len(normal) >= 30
    # every PVC is further from the patient's template than every normal beat
    assert min(pvc) > max(normal)
