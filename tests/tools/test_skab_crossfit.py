"""tools.evaluate.skab_crossfit: each half is replayed through the pipeline at the point chosen on the
other half (read from the model's evaluation.json). Synthetic pumps stand in for SKAB, which stays out
of the repository."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tools.evaluate import skab_crossfit
from tools.evaluate.datasets import T0, Series

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "tools" / "evaluate" / "configs" / "skab-residual.toml"
MODEL = ROOT / "models" / "pump-residual"


def _pumps() -> list[Series]:
    card = json.loads((MODEL / "card.json").read_text(encoding="utf-8"))
    mean, scale = np.asarray(card["normalisation"]["mean"]), np.asarray(card["normalisation"]["scale"])
    rng = np.random.default_rng(9)
    out = []
    for name in ("valve1/0", "valve2/0", "other/0"):
        values = mean + scale * (rng.normal(0, 1, (1, 8)) + 0.5 * rng.standard_normal((700, 8)))
        values[550:, 2] += 5 * scale[2]
        labels = np.zeros(700, bool)
        labels[550:] = True
        times = T0 + np.arange(700, dtype=np.float64)
        out.append(Series(name, name.split("/")[0], tuple(card["channels"]), times, values, labels, []))
    return out


def test_each_half_runs_at_the_other_halfs_point(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(skab_crossfit, "load_skab", lambda data: _pumps())
    assert skab_crossfit.main(["--config", str(CONFIG), "--model", str(MODEL)]) == 0
    out = capsys.readouterr().out
    chosen = json.loads((MODEL / "evaluation.json").read_text(encoding="utf-8"))["cross_fitted_onnx_int8"]
    assert f"valve1: 1 experiments at {chosen['valve1']['params']}" in out
    assert f"other+valve2: 2 experiments at {chosen['other+valve2']['params']}" in out
    f1 = {line.split("|")[1].strip(): float(line.split("|")[2]) for line in out.splitlines()[-2:]}
    assert f1["alarm episode active"] > 0.8  # the steps are found, the normal rows mostly not
