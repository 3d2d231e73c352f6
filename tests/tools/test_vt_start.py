"""tools.evaluate.vt_start on synthetic ECG (no dataset needed): a record's start judged from its first
sample on, and the rate it reads at a start."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.tools.test_vt_cases import synthetic_record
from tools.evaluate import vt_start
from tools.evaluate.datasets import MITDB_FS
from tools.evaluate.vt_runs import VT

CONFIG = Path(__file__).resolve().parents[2] / "tools/evaluate/configs/vt-only.toml"


def test_a_sinus_record_started_anywhere_raises_no_vt() -> None:
    ecg, beats, is_pvc = synthetic_record(200.0)
    for offset in vt_start.OFFSETS:
        started = vt_start.judge_start(CONFIG, "synthetic", ecg, MITDB_FS, beats, is_pvc, offset, VT)
        assert started.false_starts == [] and started.true_starts == []
        assert abs(started.rate_bpm - 75.0) < 0.5
        assert started.start_s + vt_start.STREAM_S <= len(ecg) / MITDB_FS + 1e-9  # the stream fits


def test_the_rate_at_a_start_is_that_of_the_seconds_before_it() -> None:
    beats = np.concatenate([np.arange(0, 20, 0.5), np.arange(20, 60, 1.0)]) * MITDB_FS
    assert vt_start.rate_at(beats.astype(np.int64), 10.0) == 120.0
    assert vt_start.rate_at(beats.astype(np.int64), 40.0) == 60.0


def test_every_case_starts_inside_its_run() -> None:
    assert all(k < min(vt_start.LENGTHS) for k in vt_start.START_BEATS)
