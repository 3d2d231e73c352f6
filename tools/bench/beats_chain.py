"""CPU time of the ECG -> RR stage (agent.ecg.rr_from_ecg: QRS detector and the channels asked for: beat
shape, QRS core, atrial activity) per ECG sample, on real records cut into 73-sample frames (a Polar H10
notification).

    python -m tools.bench.beats_chain --data ../shared/datasets --seconds 600 --repeat 3 \
        [--channels rr,hr,qrs_shape,qrs_core] [--p-wave]

The stage computes the channels of `--channels` (default: those of examples/cardiac-monitoring.toml, all
but ``p_wave``), as the daemon builds it when its detectors read those; `--p-wave` adds ``p_wave`` (an
`af` on ["rr", "p_wave"]: with the default, every channel); `--channels rr,hr` is an `af` with hr limits.

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
from agent.ecg.rr_from_ecg import CHANNELS, RrFromEcg
from agent.readings import Reading
from tools.evaluate.datasets import MITDB_FS, load_mitdb

FRAME = 73
RECORDS = ("100", "106", "200")


def stage_seconds(ecg: npt.NDArray[np.float64], fs: float, channels: frozenset[str]) -> tuple[float, int]:
    """(process seconds, beats) of one fresh stage computing `channels`, fed `ecg` frame by frame."""
    stage = RrFromEcg("bench", BeatsConfig(), channels=channels)
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
    parser.add_argument(
        "--channels",
        default="rr,hr,qrs_shape,qrs_core",
        help="comma-separated channels the stage computes (rr and hr always; default: all but p_wave)",
    )
    parser.add_argument("--p-wave", action="store_true", help="compute p_wave too (a detector reads it)")
    args = parser.parse_args(argv)
    channels = frozenset(args.channels.split(",")) | ({"p_wave"} if args.p_wave else set())
    unknown = channels - set(CHANNELS)
    if unknown:
        parser.error(f"--channels: no such channel {sorted(unknown)} (the stage has: {', '.join(CHANNELS)})")
    n = round(args.seconds * MITDB_FS)
    ecgs = {s.name: s.extra["ecg"][:n] for s in load_mitdb(args.data) if s.name in RECORDS}
    total_s, total_n = 0.0, 0
    for name, ecg in ecgs.items():
        runs = [stage_seconds(ecg, MITDB_FS, channels) for _ in range(args.repeat)]
        best = min(s for s, _ in runs)
        total_s, total_n = total_s + best, total_n + len(ecg)
        print(f"{name}: {len(ecg)} samples, {runs[0][1]} beats, {1e6 * best / len(ecg):.2f} us/sample")
    computed = ", ".join(c for c in CHANNELS if c in channels or c in ("rr", "hr"))
    print(f"all: {1e6 * total_s / total_n:.2f} us/sample (best of {args.repeat} per record; {computed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
