"""Cost of live calibration while a detector learns: the same readings through the Pipeline with and without
a `calibration` table (100 streams x 600 s of 1 Hz heart rate, robust_z, best of 3).

    python -m tools.bench_live_calibration
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.pipeline import test_live_calibration as live  # the test's data generator and config

STREAMS = 100


def main() -> None:
    live.STREAMS = STREAMS
    hr = live.normal_hr(1, 600)
    readings = list(live.readings(hr, live.T0))
    labels = {False: "no calibration", True: "learning (baseline_s = 3600)"}
    best = dict.fromkeys(labels, float("inf"))
    for _ in range(3):  # interleaved, so warm-up and machine noise hit both alike
        for calibrating in labels:
            raw = live.raw_config(baseline_s=3600)
            raw["detectors"] = raw["detectors"][:1]
            devices = [{"id": f"w{i}", "kind": "wearable", "transport": "simulator"} for i in range(STREAMS)]
            raw["devices"] = devices
            if not calibrating:
                del raw["detectors"][0]["calibration"]
            pipeline = live.Pipeline(live.config(Path(), raw), str)
            start = time.perf_counter()
            pipeline.ingest(readings)
            best[calibrating] = min(best[calibrating], time.perf_counter() - start)
    for calibrating, label in labels.items():
        print(f"{label}: {best[calibrating]:.2f} s for {len(readings)} readings (best of 3)")


if __name__ == "__main__":
    main()
