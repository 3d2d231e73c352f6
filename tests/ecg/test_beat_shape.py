"""`qrs_shape` and `qrs_core` of the beats found in a real ECG: MIT-BIH 119's minute of ventricular bigeminy;
then `qrs_core` on a synthetic ECG at 170 bpm.

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
from agent.detectors.ventricular_run import DEFAULT_MIN_QRS_CORE
from agent.ecg.beat_shape import BeatShapes
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
    offline: dict[float, float] = {}
    history: list[npt.NDArray[np.float64]] = []
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
    pvc: list[float] = []
    normal: list[float] = []
    for t, shape in stage_output(ecg, fs):
        nearest = int(np.argmin(np.abs(beats / fs - t)))
        if abs(beats[nearest] / fs - t) <= 0.15 and np.isfinite(shape):
            (pvc if is_pvc[nearest] else normal).append(shape)
    assert len(pvc) >= 12 and len(normal) >= 30
    # every PVC is further from the patient's template than every normal beat
    assert min(pvc) > max(normal)


# -- qrs_core: the QRS alone, which holds at fast rates -------------------------------------------------

SYNTH_FS = 130.0  # a Polar H10


def _gauss(t: npt.NDArray[np.float64], mu: float, sd: float, mv: float) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = mv * np.exp(-0.5 * ((t - mu) / sd) ** 2)
    return out


def synthetic_ecg(peaks_s: list[float], kinds: str) -> npt.NDArray[np.float64]:
    """Narrow beats ("N": P, a 25 ms QRS, a T wave whose QT shortens with the rate, Bazett) and wide ones
    ("V": a 100 ms negative complex, a discordant T) at the given R peaks."""
    t = np.arange(int((peaks_s[-1] + 1.5) * SYNTH_FS)) / SYNTH_FS
    x = np.zeros(len(t))
    for i, (r, kind) in enumerate(zip(peaks_s, kinds, strict=True)):
        qt = 0.4 * np.sqrt(min(r - peaks_s[i - 1] if i else 0.8, 1.0))
        if kind == "N":
            x += (
                _gauss(t, r - 0.16, 0.025, 0.15) + _gauss(t, r - 0.02, 0.008, -0.1) + _gauss(t, r, 0.012, 1.0)
            )
            x += _gauss(t, r + 0.025, 0.01, -0.2) + _gauss(t, r + qt - 0.06, 0.045, 0.3)
        else:
            x += _gauss(t, r, 0.045, -1.2) + _gauss(t, r + 0.06, 0.04, 0.5) + _gauss(t, r + qt, 0.06, 0.5)
    return x


def shapes_of(peaks_s: list[float], kinds: str) -> list[tuple[float, float]]:
    """(qrs_shape, qrs_core) of each beat, fed in 73-sample frames as the stage feeds them."""
    ecg = synthetic_ecg(peaks_s, kinds)
    shapes = BeatShapes(SYNTH_FS, 0.0)
    peaks = [round(p * SYNTH_FS) for p in peaks_s]
    out: list[tuple[float, float]] = []
    for start in range(0, len(ecg), FRAME):
        shapes.add(ecg[start : start + FRAME])
        while len(out) < len(peaks) and shapes.ready(peaks[len(out)]):
            out.append(shapes.shape(peaks[len(out)]))
    return out


def test_a_narrow_beat_at_170_bpm_reads_normal_by_its_core_though_not_by_its_window() -> None:
    sinus = [0.5 + 0.8 * i for i in range(40)]  # 75 bpm
    fast = [sinus[-1] + 0.35 * i for i in range(1, 13)]  # then 171 bpm, the same narrow QRS
    got = shapes_of(sinus + fast, "N" * 52)
    window, core = np.array(got[40:]).T
    assert (window > 0.8).all()  # the 0.65 s window takes in the previous T wave and the next QRS
    assert (core < DEFAULT_MIN_QRS_CORE).all()
    assert (core[1:] < 0.2).all()  # the first lands on the T wave of the last slow beat


def test_a_wide_pvc_reads_ventricular_by_its_core() -> None:
    beats = [0.5 + 0.8 * i for i in range(40)]
    got = shapes_of([*beats, beats[-1] + 0.5, beats[-1] + 1.6], "N" * 40 + "VN")
    assert got[40][1] > 1.5 and got[41][1] < 0.1


def test_pvcs_stand_out_by_their_qrs_core(
    record: tuple[npt.NDArray[np.float64], float, npt.NDArray[np.int64], npt.NDArray[np.bool_]],
) -> None:
    ecg, fs, beats, is_pvc = record
    stage = RrFromEcg("holter", BeatsConfig())
    pvc: list[float] = []
    normal: list[float] = []
    for start in range(0, len(ecg), FRAME):
        block = Reading("holter/ecg", ("ecg",), ecg[start : start + FRAME, None], start / fs, 0.0, 1.0 / fs)
        for r in stage.take(block):
            if r.stream == "holter/rr" and "qrs_core" in r.channels:
                nearest = int(np.argmin(np.abs(beats / fs - r.wall_time)))
                if abs(beats[nearest] / fs - r.wall_time) <= 0.15:
                    (pvc if is_pvc[nearest] else normal).append(
                        float(r.values[0, r.channels.index("qrs_core")])
                    )
    assert len(pvc) >= 12 and len(normal) >= 30
    assert min(pvc) > DEFAULT_MIN_QRS_CORE > max(normal)
