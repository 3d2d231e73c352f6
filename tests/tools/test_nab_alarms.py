"""`tools.evaluate.nab_alarms`: the NAB configs' alarm rules re-played offline from cached per-row scores
must give the pipeline's alarm starts, and the candidate settings (a hold across members, context's
threshold from its probation rows) do what they say. Synthetic series only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.config.loader import load_config
from tools.evaluate import nab_alarms
from tools.evaluate.datasets import T0, Series

REPO = Path(__file__).resolve().parents[2]
NAB_SPAN = REPO / "tools" / "evaluate" / "configs" / "nab-span.toml"


def noisy_series(n: int = 3000, seed: int = 7) -> Series:
    """Noise with spikes, a level shift and a slow drift: every member of nab-span.toml alarms, some
    of them again within their cooldown."""
    rng = np.random.default_rng(seed)
    values = rng.normal(0.0, 1.0, n)
    for at in (900, 960, 1500, 1530, 2400):
        values[at] += 12.0
    values[1800:2000] += 4.0
    values[2600:] += np.linspace(0.0, 6.0, n - 2600)
    times = T0 + np.arange(n, dtype=np.float64)
    windows = [(T0 + 880.0, T0 + 1000.0), (T0 + 1780.0, T0 + 1900.0)]
    labels = np.zeros(n, bool)
    return Series("synthetic/s.csv", "synthetic", ("value",), times, values[:, None], labels, windows)


def test_the_emulated_rules_give_the_pipelines_starts_and_cooldowns_matter() -> None:
    cooldowns = nab_alarms.emulable(load_config(NAB_SPAN))
    run = nab_alarms._cache_job((NAB_SPAN, noisy_series(), True))
    assert sum(len(v) for v in run.starts.values()) >= 6  # enough starts to compare
    assert nab_alarms.check([run], cooldowns) == 0
    # the check can fail: with longer cooldowns (a recurrence stays open for them) other starts
    assert nab_alarms.check([run], dict.fromkeys(cooldowns, 1000.0)) > 0


def test_emulable_refuses_rules_it_does_not_copy(tmp_path: Path) -> None:
    text = NAB_SPAN.read_text().replace("min_duration_s = 0\n", "min_duration_s = 5\n", 1)
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match="not one the emulation copies"):
        nab_alarms.emulable(load_config(path))


def scores(n: int, at: dict[int, float]) -> np.ndarray:
    out = np.zeros(n)
    for row, value in at.items():
        out[row] = value
    return out


def test_a_hold_keeps_the_other_members_quiet_for_its_rows() -> None:
    s = {"a": scores(400, {10: 2.0, 300: 2.0}), "b": scores(400, {50: 2.0, 150: 2.0})}
    t = {m: np.ones(400) for m in s}
    cd = {"a": 100.0, "b": 0.0}
    assert nab_alarms.member_starts(s, t, cd) == {"a": [10, 300], "b": [50, 150]}
    assert nab_alarms.member_starts(s, t, cd, hold=100) == {"a": [10, 300], "b": [150]}
    # a member's cooldown counts from its first clear row (11): a start at 300 is a recurrence under a
    # cooldown of 290 (11 + 290 > 300), not of 289; a recurrence stays open for its cooldown's clear rows,
    # so a hit at 350 starts nothing, while after an ordinary episode (ended at 302) it starts one
    s["a"][350] = 2.0
    assert nab_alarms.member_starts(s, t, {"a": 289.0, "b": 0.0})["a"] == [10, 300, 350]
    assert nab_alarms.member_starts(s, t, {"a": 290.0, "b": 0.0})["a"] == [10, 300]


def test_contexts_probation_threshold_allows_at_most_k_starts() -> None:
    s = scores(1000, {100: 0.8, 300: 0.92, 700: 0.99})
    assert nab_alarms.probation_threshold(s, 500, 0, 100.0) == 0.95
    assert nab_alarms.probation_threshold(s, 500, 1, 100.0) == 0.8
    assert nab_alarms.probation_threshold(s, 500, 2, 100.0) == 0.75
    assert nab_alarms.probation_threshold(s, 150, 0, 100.0) == 0.8
    # a recurrence within the rule's cooldown starts (as in the pipeline): the 0.92 at 300 too
    assert nab_alarms.probation_threshold(s, 500, 1, 250.0) == 0.8
