"""SKAB through the daemon's pipeline, cross-fitted: each half of the experiments decided at the
operating point `tools.train.skab_head` chose on the other half.

    python -m tools.evaluate.skab_crossfit --config tools/evaluate/configs/skab-residual.toml \\
        --model models/pump-residual

`tools.train.skab_head` picks the operating point (smoothing, threshold quantile and margin) on one
half (valve1/, or other/ + valve2/) and reports the other half replayed row by row as consecutive rows.
Here the same points, read from the model's `evaluation.json`, are set on the config's autoencoder and
every experiment goes through `tools.evaluate.replay` as one device, with SKAB's own timestamps (a
silence longer than 2.5 rows becomes gap rows, as on a gateway); the rows from 400 on are pooled as SKAB
computes F1, FAR and MAR, for alarm episodes and for scores above their stream's threshold.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from agent.config.loader import load_config
from tools.evaluate.datasets import load_skab
from tools.evaluate.metrics import PointMetrics
from tools.evaluate.replay import replay
from tools.evaluate.runs import alarm_active
from tools.train.skab import CALIBRATION_ROWS

HALVES = ("valve1", "other+valve2")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, required=True, help="an agent config with one autoencoder")
    p.add_argument("--model", type=Path, required=True, help="the model folder (its evaluation.json)")
    p.add_argument("--data", type=Path, default=None, help="SKAB data folder (default ../shared/datasets)")
    args = p.parse_args(argv)
    chosen = json.loads((args.model / "evaluation.json").read_text(encoding="utf-8"))[
        "cross_fitted_onnx_int8"
    ]
    config = load_config(args.config)
    (detector,) = [d for d in config.detectors if d.type == "autoencoder"]
    alarms, rows = PointMetrics(0, 0, 0, 0), PointMetrics(0, 0, 0, 0)
    for half in HALVES:
        point = chosen[half]["params"]  # chosen on the other half
        tuned = dataclasses.replace(detector, params={**detector.params, **point})
        run_config = dataclasses.replace(config, detectors=(tuned,))
        experiments = [s for s in load_skab(args.data) if s.name.startswith("valve1/") == (half == "valve1")]
        print(f"{half}: {len(experiments)} experiments at {point}")
        for series in experiments:
            result = replay(run_config, series)
            keep = np.arange(len(series.times)) >= CALIBRATION_ROWS
            alarms += PointMetrics.of(alarm_active(result)[keep], series.labels[keep])
            rows += PointMetrics.of((np.nan_to_num(result.ensemble()) > 1.0)[keep], series.labels[keep])
    print("| decision, cross-fitted, pooled over rows >= 400 | F1 | FAR % | MAR % |\n|---|---:|---:|---:|")
    for name, m in (("alarm episode active", alarms), ("score above its stream's threshold", rows)):
        print(f"| {name} | {m.f1:.3f} | {100 * m.far:.1f} | {100 * m.mar:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
