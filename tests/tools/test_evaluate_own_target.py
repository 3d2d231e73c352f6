"""tools.evaluate.replay: a detector's own `calibration` target replaces the run's target."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.config.loader import load_config
from tools.evaluate.datasets import T0, Series
from tools.evaluate.replay import replay

CONFIG = """
[gateway]
id = "eval"
site = "evaluation"
state_dir = "{dir}"
[[devices]]
id = "eval-device"
kind = "equipment"
transport = "simulator"
[mqtt]
url = "mqtt://127.0.0.1:1883"
[outbox]
path = "{dir}/outbox.sqlite"
[[detectors]]
id = "z"
type = "robust_z"
stream = "metric"
channels = ["value"]
params = {{ window_s = 30, threshold = 6 }}
{calibration}
[[detectors]]
id = "e"
type = "ewma"
stream = "metric"
channels = ["value"]
params = {{ window_s = 30, alpha = 0.2 }}
[[alarms]]
condition = "spike"
detector = "z"
min_duration_s = 0
clear_after_s = 5
cooldown_s = 0
"""


def series() -> Series:
    values = np.random.default_rng(5).normal(10.0, 1.0, 600)
    times = T0 + np.arange(600, dtype=np.float64)
    return Series("s", "g", ("value",), times, values[:, None], np.zeros(600, bool), [])


def thresholds(tmp_path: Path, calibration: str, target: float) -> dict[str, float]:
    path = tmp_path / "agent.toml"
    path.write_text(CONFIG.format(dir=tmp_path, calibration=calibration))
    return replay(load_config(path), series(), calibrate_rows=400, target_per_hour=target).thresholds


def test_a_detector_s_own_target_replaces_the_run_s_and_the_others_keep_it(tmp_path: Path) -> None:
    own = "calibration = { baseline_s = 100, target_false_alarms_per_hour = 0.001 }"
    mixed = thresholds(tmp_path, own, target=100.0)
    at_run_target = thresholds(tmp_path, "", target=100.0)
    at_own_target = thresholds(tmp_path, "", target=0.001)
    # calibrated at its own target on the 400 calibration rows, not again live on baseline_s = 100
    assert mixed["z"] == at_own_target["z"] != at_run_target["z"]
    assert mixed["e"] == at_run_target["e"] != at_own_target["e"]  # the other at the run's
