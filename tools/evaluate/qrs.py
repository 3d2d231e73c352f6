"""Beat-by-beat evaluation of agent/ecg/qrs.py on MIT-BIH (12 records) and CPSC-2021 (18 records).

    python -m tools.evaluate.qrs --out eval/qrs

The comparison is ANSI/AAMI EC57's: a detection matches a reference beat within 150 ms, one to one
(pairs taken nearest first); TP = matched beats, FN = unmatched beats, FP = unmatched detections;
Se = TP / (TP + FN), +P = TP / (TP + FP); the timing error is detection minus reference, over matched
pairs. Every annotated beat counts and nothing is excluded: EC57 excludes ventricular flutter and
fibrillation, which none of these records has, and leaves the first 5 minutes out as a learning period,
which is NOT done here (the detector learns in 2 s), so the figures include each record's start.

- MIT-BIH: the tpcp conversion (lead MLII, 360 Hz, `tools.evaluate.datasets.load_mitdb`); its beat list
  is every beat annotation of the record (checked against the original 100.atr: identical).
- CPSC-2021: the WFDB records, lead 0, 200 Hz, read with wfdb; reference = the .atr's beat symbols.

Each record is fed in 73-sample blocks (a Polar H10 frame), three times for the cost (µs per sample, the
median of the 3 runs; one process), and once in 1000-sample blocks, which must give the same peaks (the
tool exits 1 if not). Writes `<out>/qrs.json` and `<out>/qrs.md`; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from agent.ecg.qrs import QrsDetector
from tools.evaluate.datasets import MITDB_FS, SHARED, dataset_folder, load_mitdb

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

MATCH_WINDOW_S = 0.15
POLAR_FRAME = 73
CHECK_BLOCK = 1000
COST_RUNS = 3
BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")  # EC57 / WFDB beat annotation codes


@dataclass(frozen=True, slots=True)
class Record:
    dataset: str
    name: str
    rate_hz: float
    ecg: FloatArray
    beats: IntArray


@dataclass(frozen=True, slots=True)
class Score:
    record: str
    beats: int
    tp: int
    fn: int
    fp: int
    se: float
    ppv: float
    median_error_ms: float
    p95_error_ms: float
    us_per_sample: float
    same_peaks_block_1000: bool


def mitdb_records(root: Path | None) -> list[Record]:
    out = []
    for series in load_mitdb(root):
        r_peak = series.extra["r_peak"]
        first = round(r_peak[0] - series.values[0, 0] * MITDB_FS)  # load_mitdb keeps beats with an RR
        beats = np.concatenate([[first], np.rint(r_peak).astype(np.int64)])
        out.append(Record("mitdb", series.name, MITDB_FS, series.extra["ecg"], beats))
    return out


def cpsc_records(root: Path | None) -> list[Record]:
    import wfdb  # tools-only dependency (evaluate extra)

    folder = dataset_folder(root, "ECG/cpsc2021_sample", "*.hea", "CPSC-2021")
    out = []
    for header in sorted(folder.glob("*.hea")):
        record = wfdb.rdrecord(str(folder / header.stem), channels=[0])
        ann = wfdb.rdann(str(folder / header.stem), "atr")
        is_beat = np.array([s in BEAT_SYMBOLS for s in ann.symbol], dtype=bool)
        ecg = np.asarray(record.p_signal[:, 0], dtype=np.float64)
        beats = np.asarray(ann.sample, dtype=np.int64)[is_beat]
        out.append(Record("cpsc", header.stem, float(record.fs), ecg, beats))
    return out


def detect(record: Record, block: int) -> tuple[IntArray, float]:
    """(R peaks, seconds spent in feed) for the record fed in blocks of `block` samples."""
    detector = QrsDetector(record.rate_hz)
    parts = []
    start = time.perf_counter()
    for i in range(0, len(record.ecg), block):
        parts.append(detector.feed(record.ecg[i : i + block]))
    elapsed = time.perf_counter() - start
    return np.concatenate(parts).astype(np.int64), elapsed


def match(reference: IntArray, detected: IntArray, window: int) -> tuple[IntArray, IntArray]:
    """One-to-one pairs (reference indices, detection indices) within `window` samples, nearest first."""
    lo = np.searchsorted(detected, reference - window, side="left")
    hi = np.searchsorted(detected, reference + window, side="right")
    pairs = sorted(
        (abs(int(detected[d]) - int(reference[r])), r, d)
        for r, (a, b) in enumerate(zip(lo.tolist(), hi.tolist(), strict=True))
        for d in range(a, b)
    )
    chosen: dict[int, int] = {}
    taken: set[int] = set()
    for _, r, d in pairs:
        if r not in chosen and d not in taken:
            chosen[r] = d
            taken.add(d)
    refs = sorted(chosen)
    return np.array(refs, dtype=np.int64), np.array([chosen[r] for r in refs], dtype=np.int64)


def score(name: str, beats: int, detections: int, errors_ms: FloatArray, cost_us: float, same: bool) -> Score:
    tp = len(errors_ms)
    return Score(
        record=name,
        beats=beats,
        tp=tp,
        fn=beats - tp,
        fp=detections - tp,
        se=tp / beats if beats else float("nan"),
        ppv=tp / detections if detections else float("nan"),
        median_error_ms=float(np.median(errors_ms)) if tp else float("nan"),
        p95_error_ms=float(np.percentile(errors_ms, 95)) if tp else float("nan"),
        us_per_sample=cost_us,
        same_peaks_block_1000=same,
    )


def evaluate(records: list[Record]) -> list[Score]:
    """One score per record, then the pooled one (counts and errors pooled; cost = total time / samples)."""
    scores: list[Score] = []
    all_errors: list[FloatArray] = []
    seconds = samples = beats = detections = 0.0
    for record in records:
        runs = [detect(record, POLAR_FRAME) for _ in range(COST_RUNS)]
        peaks = runs[0][0]
        elapsed = float(np.median([t for _, t in runs]))
        same = all(np.array_equal(p, peaks) for p, _ in runs) and np.array_equal(
            detect(record, CHECK_BLOCK)[0], peaks
        )
        refs, dets = match(record.beats, peaks, round(MATCH_WINDOW_S * record.rate_hz))
        errors = np.abs(peaks[dets] - record.beats[refs]) / record.rate_hz * 1000.0
        s = score(record.name, len(record.beats), len(peaks), errors, elapsed / len(record.ecg) * 1e6, same)
        scores.append(s)
        all_errors.append(errors)
        seconds, samples = seconds + elapsed, samples + len(record.ecg)
        beats, detections = beats + s.beats, detections + s.tp + s.fp
        print(
            f"{record.dataset} {record.name}: Se {s.se:.4f} +P {s.ppv:.4f} (FN {s.fn}, FP {s.fp}), "
            f"{s.us_per_sample:.2f} us/sample{'' if same else ', BLOCK 1000 DIFFERS'}",
            file=sys.stderr,
            flush=True,
        )
    pooled = score(
        "pooled",
        int(beats),
        int(detections),
        np.concatenate(all_errors),
        seconds / samples * 1e6,
        all(s.same_peaks_block_1000 for s in scores),
    )
    return [*scores, pooled]


COLUMNS = (
    "record",
    "beats",
    "TP",
    "FN",
    "FP",
    "Se %",
    "+P %",
    "median |err| ms",
    "p95 |err| ms",
    "µs/sample",
)


def table(scores: list[Score]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for s in scores:
        bold = "**" if s.record == "pooled" else ""
        cells = [
            f"{bold}{s.record}{bold}",
            str(s.beats),
            str(s.tp),
            str(s.fn),
            str(s.fp),
            f"{bold}{100 * s.se:.2f}{bold}",
            f"{bold}{100 * s.ppv:.2f}{bold}",
            f"{s.median_error_ms:.1f}",
            f"{s.p95_error_ms:.1f}",
            f"{s.us_per_sample:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.evaluate.qrs", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, default=Path("eval/qrs"), help="report folder")
    parser.add_argument("--data", type=Path, default=None, help=f"datasets root (default {SHARED})")
    args = parser.parse_args(argv)
    results = {
        "mitdb": evaluate(mitdb_records(args.data)),
        "cpsc": evaluate(cpsc_records(args.data)),
    }
    titles = {
        "mitdb": "MIT-BIH Arrhythmia, 12-record subset (lead MLII, 360 Hz)",
        "cpsc": "CPSC-2021 sample, 18 records (lead 0, 200 Hz), held out",
    }
    text = [
        "# QRS detection (agent/ecg/qrs.py), EC57 beat by beat",
        "",
        f"`python -m tools.evaluate.qrs --out {args.out}`: match window {MATCH_WINDOW_S * 1000:.0f} ms, "
        f"{POLAR_FRAME}-sample blocks, every annotated beat scored (no 5-minute learning period left out); "
        f"µs/sample = median of {COST_RUNS} runs, one process.",
    ]
    for key, scores in results.items():
        text += ["", f"## {titles[key]}", "", table(scores)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "qrs.md").write_text("\n".join(text) + "\n")
    payload = {
        "match_window_s": MATCH_WINDOW_S,
        "block": POLAR_FRAME,
        "cost_runs": COST_RUNS,
        "datasets": {key: [asdict(s) for s in scores] for key, scores in results.items()},
    }
    (args.out / "qrs.json").write_text(json.dumps(payload, indent=2) + "\n")
    print("\n".join(text))
    same = all(s.same_peaks_block_1000 for scores in results.values() for s in scores)
    if not same:
        print("block size 1000 gave different peaks on some record (see above)", file=sys.stderr)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
