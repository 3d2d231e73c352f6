"""`python -m tools.evaluate`: run an agent config over a labelled dataset and write a report.

    python -m tools.evaluate --config tools/evaluate/configs/nab.toml --dataset nab --out eval/nab
    python -m tools.evaluate --config tools/evaluate/configs/cpsc.toml --dataset cpsc --out eval/cpsc
    python -m tools.evaluate --config tools/evaluate/configs/skab.toml --dataset skab --out eval/skab
    python -m tools.evaluate --dataset mitdb --out eval/mitdb
    python -m tools.evaluate --config tools/evaluate/configs/wearable.toml --dataset simulator --hours 24
    python -m tools.evaluate --config tools/evaluate/configs/wearable.toml --dataset simulator --episodes \
        --hours 6 --devices 10

Every dataset except mitdb goes through `agent.pipeline.Pipeline` (see `tools.evaluate.replay`); mitdb's
PVC score works on ECG beats the pipeline has no detector for (see `tools.evaluate.pvc`). The report is
`<out>/report.md` with PNG plots beside it; the same tables are printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tools.evaluate import runs
from tools.evaluate.datasets import DatasetNotFoundError
from tools.evaluate.report import write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config", type=Path, help="agent TOML whose detectors and alarm rules are evaluated"
    )
    parser.add_argument("--dataset", required=True, choices=sorted(runs.DATASETS))
    parser.add_argument("--out", type=Path, default=Path("eval-report"), help="report folder")
    parser.add_argument(
        "--data", type=Path, default=None, help="dataset folder (default: ../shared/datasets/...)"
    )
    parser.add_argument("--jobs", type=int, default=2, help="worker processes for per-series replays")
    parser.add_argument(
        "--beats",
        choices=("annotated", "ecg"),
        default="annotated",
        help="cpsc: RR of the annotated beats, or of the beats the gateway finds in the raw ECG",
    )
    parser.add_argument("--limit", type=int, default=0, help="only the first N series (a quick look)")
    parser.add_argument(
        "--calibrate-rows",
        type=int,
        default=None,
        help="baseline rows per series (default: skab 400, nab its probation rows, others none)",
    )
    parser.add_argument(
        "--input-range",
        choices=("causal", "file"),
        default="causal",
        help="nab: 'file' gives each series' min and max as the device's configured span of the channel"
        " (NAB's inputMin/inputMax); default: none configured, detectors learn from the rows seen",
    )
    parser.add_argument("--target-fa-per-hour", type=float, default=1.0, help="calibration target")
    parser.add_argument("--hours", type=float, default=24.0, help="simulator: hours per device")
    parser.add_argument("--devices", type=int, default=4, help="simulator: devices (seeds)")
    parser.add_argument("--seed-base", type=int, default=1000, help="simulator: first seed")
    parser.add_argument(
        "--episodes",
        action="store_true",
        help="simulator: pumps only, with bearing_wear and temperature_drift episodes (detections, delays)",
    )
    parser.add_argument("--episode-s", type=float, default=1800.0, help="simulator --episodes: length")
    parser.add_argument(
        "--grace-s",
        type=float,
        default=60.0,
        help="simulator --episodes: an alarm start this long after an episode's end still detects it",
    )
    parser.add_argument(
        "--stops",
        action="store_true",
        help="simulator --episodes: each pump is also switched off, 15 min in its learning hour and 20 min"
        " in each hour between faults; its gate (running_when) is the config's equipment device's",
    )
    parser.add_argument("--plots", type=int, default=4, help="series to plot")
    args = parser.parse_args(argv)
    if args.dataset != "mitdb" and args.config is None:
        parser.error(f"--config is required for --dataset {args.dataset}")
    if args.input_range != "causal" and args.dataset != "nab":
        parser.error("--input-range is for --dataset nab")
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        results = runs.DATASETS[args.dataset](args)
    except DatasetNotFoundError as exc:
        parser.error(str(exc))
    write_report(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
