"""`--input-range file`: each NAB series' own minimum and maximum (NAB's inputMin/inputMax) become the
replayed device's configured span of the channel; the default configures none."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from agent.config.loader import load_config
from tools.evaluate.datasets import T0, Series
from tools.evaluate.replay import replay
from tools.evaluate.runs import _replay_all, file_spans

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
id = "ctx"
type = "context"
stream = "metric"
channels = ["value"]
params = {{ threshold = 0.7, rest_s = 0, warmup_s = 30 }}
[[alarms]]
condition = "context"
detector = "ctx"
min_duration_s = 0
clear_after_s = 1
cooldown_s = 0
"""


def series(values: np.ndarray) -> Series:
    times = T0 + np.arange(len(values), dtype=np.float64)
    return Series("s", "g", ("value",), times, values[:, None], np.zeros(len(values), bool), [])


def test_file_spans_are_the_series_min_and_max_and_a_flat_series_gets_a_unit_span() -> None:
    assert file_spans(series(np.array([3.0, -1.0, 7.5]))) == {"value": (-1.0, 7.5)}
    assert file_spans(series(np.full(5, 2.0))) == {"value": (2.0, 3.0)}


def test_a_span_replaces_the_warm_up_and_none_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(CONFIG.format(dir=tmp_path))
    s = series(np.tile([0.0, 2.0, 5.0, 7.0, 5.0, 2.0], 20))
    causal = replay(load_config(path), s).scores["ctx"]
    spanned = replay(load_config(path), s, ranges=file_spans(s)).scores["ctx"]
    assert np.isnan(causal[:30]).all() and np.isfinite(causal[30:]).all()  # learns its range first
    assert np.isfinite(spanned).all()  # NAB's protocol: the range is known from the first row


@pytest.mark.parametrize("choice", ["causal", "file"])
def test_the_option_reaches_every_series_replay(tmp_path: Path, choice: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(CONFIG.format(dir=tmp_path))
    s = series(np.tile([0.0, 2.0, 5.0, 7.0, 5.0, 2.0], 20))
    args = argparse.Namespace(config=path, target_fa_per_hour=1.0, jobs=1, input_range=choice)
    got = _replay_all(args, [s])[0].scores["ctx"]
    assert np.isnan(got[0]) == (choice == "causal")
