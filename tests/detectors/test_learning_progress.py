"""`StreamingDetector.learning`: what `edge-agent status` and the heartbeat show as "learning N of M s".
It must say learning exactly while the stream gets no verdict for want of its own baseline, or an
engineer is told "still learning" about a detector that finds nothing (or the reverse)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from detector_drive import T0, make

from agent.detectors import WindowBlock


@pytest.mark.parametrize(
    ("type_", "channels", "params", "need"),
    [
        ("new_extreme", ("x",), {"warmup_s": 30.0}, 30),
        ("context", ("x",), {"warmup_s": 30.0, "rest_s": 0.0}, 30),
        ("window_pca", ("x", "y"), {"window_s": 5, "adapt_rows": 60, "smooth_rows": 5}, 60),
        ("limit", ("x",), {"above": 10.0}, 0),  # judges from its first window: never learning
    ],
)
def test_learning_lasts_exactly_as_long_as_the_stream_gets_no_verdict(
    type_: str, channels: tuple[str, ...], params: dict[str, Any], need: int
) -> None:
    detector = make(type_, channels, **params)
    values = np.random.default_rng(3).normal(size=(2, 120, len(channels)))
    slots = np.array([0, 5])  # slot 5 is fed; slots 1-4 never are
    learning = []
    for end in range(detector.window, values.shape[1] + 1):
        have, needed = detector.learning(slots)
        assert needed == need
        block = WindowBlock(values[:, end - detector.window : end], slots, np.full(2, T0 + end), 1)
        scores = detector.score(block).scores
        learning.append(have[1])
        assert (have < needed).tolist() == np.isnan(scores).tolist(), (end, have, scores)
    if need:
        assert learning[0] == 0 and learning[-1] == need and np.all(np.diff(learning) >= 0)
    unfed, _ = detector.learning(np.array([3, 400]))
    assert unfed.tolist() == [0, 0]
