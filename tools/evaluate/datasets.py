"""Labelled datasets of ../shared/datasets as `Series`: one stream each, with per-sample truth.

Each loader returns time-ordered series (Unix seconds, values (T, C), per-sample labels, labelled
windows) so every evaluation path — the pipeline replay and the per-sample scoring — reads one shape.
Beat datasets (CPSC-2021, MIT-BIH) become one sample per beat whose value is the RR interval ending at
that beat (what a wearable's "rr" stream carries); the time is the beat's R peak.
"""

from __future__ import annotations

import csv
import gzip
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets"
T0 = 1_800_000_000.0  # beat datasets have no wall clock: records start here


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    group: str  # subject / record family: splits go by group, never by series
    channels: tuple[str, ...]
    times: FloatArray  # (T,) Unix seconds
    values: FloatArray  # (T, C)
    labels: BoolArray  # (T,) True inside a labelled anomaly / episode
    windows: list[tuple[float, float]] = field(default_factory=list)  # labelled [start, end] times
    extra: dict[str, FloatArray] = field(default_factory=dict)  # dataset-specific per-sample arrays

    @property
    def hours(self) -> float:
        return float(self.times[-1] - self.times[0]) / 3600.0 if len(self.times) > 1 else 0.0


class DatasetNotFoundError(FileNotFoundError):
    """The dataset folder given (or the default) does not hold the dataset; the message says where to look."""


def dataset_folder(root: Path | None, default: str, marker: str, name: str) -> Path:
    """The dataset's folder: `root` itself, or `default` (a path under ../shared/datasets, e.g.
    "SKAB/data") or one of its tails found below `root`, so the datasets root works too; the first that
    holds `marker` (a glob). Otherwise one `DatasetNotFoundError` naming what was looked for."""
    base = (root or SHARED).resolve()
    parts = Path(default).parts
    tails = [Path(*parts[i:]) for i in range(len(parts))]
    candidates = [base / tail for tail in tails] if root is None else [base, *(base / t for t in tails)]
    for folder in candidates:
        if next(folder.glob(marker), None) is not None:
            return folder
    raise DatasetNotFoundError(
        f"no {name} data in {base} (looked for {marker} there and in {', '.join(str(t) for t in tails)} below"
        f" it): give --data the {name} folder, e.g. ../shared/datasets/{default}"
    )


def _windows_of(times: FloatArray, labels: BoolArray) -> list[tuple[float, float]]:
    edges = np.diff(np.concatenate([[0], labels.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return [(float(times[s]), float(times[e])) for s, e in zip(starts, ends, strict=True)]


# -- CPSC-2021 (AF episodes, beat annotations) ----------------------------------------------------------


def load_cpsc(root: Path | None = None) -> list[Series]:
    """Every record: RR per beat, label = the beat lies inside an "(AFIB" ... "(N" rhythm episode."""
    import wfdb  # tools-only dependency (evaluate extra)

    folder = dataset_folder(root, "ECG/cpsc2021_sample", "*.hea", "CPSC-2021")
    out: list[Series] = []
    for header in sorted(folder.glob("*.hea")):
        record = header.stem
        ann = wfdb.rdann(str(folder / record), "atr")
        fs = float(ann.fs)
        beat_mask = np.array([s in "NAaVFJjeEnSQ" for s in ann.symbol])
        samples = np.asarray(ann.sample)
        in_af = False
        rhythm_af = np.zeros(len(samples), dtype=bool)
        for i, (sym, note) in enumerate(zip(ann.symbol, ann.aux_note, strict=True)):
            if sym == "+" and note:
                in_af = note.strip().startswith("(AF")
            rhythm_af[i] = in_af
        beats = samples[beat_mask]
        af = rhythm_af[beat_mask]
        symbols = np.array(ann.symbol)[beat_mask]
        t = beats / fs
        rr = np.diff(t)
        times = T0 + t[1:]
        labels = af[1:] & af[:-1]  # an RR interval is AF when both of its beats are
        ectopic = np.isin(symbols[1:], ["V", "A", "a", "S", "J"])
        out.append(
            Series(
                name=record,
                group=record.split("_")[1],
                channels=("rr",),
                times=times,
                values=rr[:, None],
                labels=labels,
                windows=_windows_of(times, labels),
                extra={"ectopic": ectopic.astype(np.float64)},
            )
        )
    return out


# -- NAB v1.1 (58 univariate series, labelled windows) ---------------------------------------------------


def _nab_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()


def load_nab(root: Path | None = None) -> list[Series]:
    """Every NAB series, fed one row per second (NAB scores rows, not clock time): `times` are
    T0 + row index, and `extra["timestamp"]` keeps the original Unix times for the windows."""
    folder = dataset_folder(root, "NAB", "labels/combined_windows.json", "NAB")
    windows = json.loads((folder / "labels" / "combined_windows.json").read_text())
    out: list[Series] = []
    for path in sorted((folder / "data").glob("*/*.csv")):
        key = f"{path.parent.name}/{path.name}"
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        stamps = np.array([_nab_time(r["timestamp"]) for r in rows])
        values = np.array([float(r["value"]) for r in rows])
        labels = np.zeros(len(rows), dtype=bool)
        index_windows: list[tuple[float, float]] = []
        for start, end in windows.get(key, []):
            lo = int(np.searchsorted(stamps, _nab_time(start[:19])))
            hi = int(np.searchsorted(stamps, _nab_time(end[:19]), side="right")) - 1
            labels[lo : hi + 1] = True
            index_windows.append((T0 + lo, T0 + hi))
        out.append(
            Series(
                name=key,
                group=path.parent.name,
                channels=("value",),
                times=T0 + np.arange(len(rows), dtype=np.float64),
                values=values[:, None],
                labels=labels,
                windows=index_windows,
                extra={"timestamp": stamps},
            )
        )
    return out


# -- SKAB (pump testbed, 8 channels at 1 Hz) -------------------------------------------------------------

SKAB_CHANNELS = (
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
)


def load_skab(root: Path | None = None, *, anomaly_free: bool = False) -> list[Series]:
    """The 34 labelled experiments (or, with `anomaly_free`, the one run without anomalies)."""
    folder = dataset_folder(root, "SKAB/data", "anomaly-free/anomaly-free.csv", "SKAB")
    paths = (
        [folder / "anomaly-free" / "anomaly-free.csv"]
        if anomaly_free
        else sorted(p for p in folder.glob("*/*.csv") if p.parent.name != "anomaly-free")
    )
    out: list[Series] = []
    for path in paths:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f, delimiter=";"))
        stamps = np.array([_nab_time(r["datetime"]) for r in rows])
        values = np.array([[float(r[c]) for c in SKAB_CHANNELS] for r in rows])
        labels = np.array([float(r.get("anomaly") or 0.0) > 0 for r in rows])
        out.append(
            Series(
                name=f"{path.parent.name}/{path.stem}",
                group=path.parent.name,
                channels=SKAB_CHANNELS,
                times=stamps,
                values=values,
                labels=labels,
                windows=_windows_of(stamps, labels),
            )
        )
    return out


# -- MIT-BIH subset (ECG lead MLII + per-beat PVC labels) ------------------------------------------------

MITDB_FS = 360.0


def mitdb_folder(root: Path | None = None) -> Path:
    return dataset_folder(root, "ECG/mitdb_tpcp_subset", "*_beats.csv", "MIT-BIH")


def read_mitdb_record(
    folder: Path, record: str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """(MLII in mV at 360 Hz, every annotated beat's sample, whether it is a PVC) of one record."""
    table = np.genfromtxt(folder / f"{record}_beats.csv", delimiter=",", names=True)
    with gzip.open(folder / f"{record}_ecg_mlii_360hz.csv.gz", "rt") as f:
        ecg = np.loadtxt(f, delimiter=",", skiprows=1)
    return ecg, table["sample"].astype(np.int64), table["is_pvc"] > 0


def load_mitdb(root: Path | None = None) -> list[Series]:
    """One series per record: RR per beat, label = PVC; `extra["ecg"]` the MLII signal (mV, 360 Hz) and
    `extra["r_peak"]` each beat's sample index into it."""
    folder = mitdb_folder(root)
    out: list[Series] = []
    for path in sorted(folder.glob("*_beats.csv")):
        record = path.name.split("_")[0]
        ecg, peaks, is_pvc = read_mitdb_record(folder, record)
        rr = np.diff(peaks) / MITDB_FS
        out.append(
            Series(
                name=record,
                group=record,
                channels=("rr",),
                times=T0 + peaks[1:] / MITDB_FS,
                values=rr[:, None],
                labels=is_pvc[1:],
                extra={"ecg": ecg, "r_peak": peaks[1:].astype(np.float64)},
            )
        )
    return out
