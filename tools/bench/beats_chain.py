"""CPU time of the ECG -> RR stage (agent.ecg.rr_from_ecg: QRS detector, beat shape, and with `--p-wave`
atrial activity) per ECG sample, on real records cut into 73-sample frames (a Polar H10 notification).

    python -m tools.bench.beats_chain --data ../shared/datasets --seconds 600 --repeat 3 [--p-wave]

Without `--p-wave` the stage is built as the daemon builds it when no detector reads ``p_wave`` (every
shipped config); with it, as for an `af` on ["rr", "p_wave"].

Run it from two checkouts to compare them (each imports its own `agent`); the best of `--repeat` runs of
process time is reported, which a machine shared with other work disturbs least.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from agent.config.schema import BeatsConfig
from agent.ecg.rr_from_ecg import RrFromEcg
from agent.readings import Reading
from tools.evaluate.datasets import MITDB_FS, load_mitdb

FRAME = 73
RECORDS = ("100", "106", "200")


def stage_seconds(ecg: npt.NDArray[np.float64], fs: float, p_wave: bool) -> tuple[float, int]:
    """(process seconds, beats) of one fresh stage fed `ecg` frame by frame."""
    stage = RrFromEcg("bench", BeatsConfig(), p_wave=p_wave)
    frames = [
        Reading("bench/ecg", ("ecg",), ecg[i : i + FRAME, None], i / fs, i / fs, 1.0 / fs)
        for i in range(0, len(ecg), FRAME)
    ]
    start = time.process_time()
    for frame in frames:
        stage.take(frame)
    return time.process_time() - start, stage.beats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.beats_chain", description=__doc__)
    parser.add_argument(
        "--data", type=Path, default=None, help="datasets folder (default: ../shared/datasets)"
    )
    parser.add_argument("--seconds", type=float, default=600.0, help="ECG per record")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--p-wave", action="store_true", help="compute p_wave (a detector reads it)")
    args = parser.parse_args(argv)
    n = round(args.seconds * MITDB_FS)
    ecgs = {s.name: s.extra["ecg"][:n] for s in load_mitdb(args.data) if s.name in RECORDS}
    total_s, total_n = 0.0, 0
    for name, ecg in ecgs.items():
        runs = [stage_seconds(ecg, MITDB_FS, args.p_wave) for _ in range(args.repeat)]
        best = min(s for s, _ in runs)
        total_s, total_n = total_s + best, total_n + len(ecg)
        print(f"{name}: {len(ecg)} samples, {runs[0][1]} beats, {1e6 * best / len(ecg):.2f} us/sample")
    p_wave = "with" if args.p_wave else "without"
    print(f"all: {1e6 * total_s / total_n:.2f} us/sample (best of {args.repeat} per record, {p_wave} p_wave)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
