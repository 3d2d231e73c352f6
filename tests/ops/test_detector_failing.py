"""A detector that raises is isolated: the other detectors keep alarming, and the gateway raises a
technical alarm (detector_failing) instead of crashing the pipeline turn (which would restart the
gateway, and the same data would crash it again)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from daemon_session import CONFIG, session

from agent.detectors.base import ScoreBlock, WindowBlock
from agent.readings import Reading

WATCHED: dict[str, Any] = {
    **CONFIG,
    "detectors": [
        {"id": "hr-high", "type": "limit", "stream": "vitals", "channels": ["hr"], "params": {"above": 120}},
        {"id": "hr-z", "type": "robust_z", "stream": "vitals", "channels": ["hr"], "params": {"window_s": 9}},
    ],
    "alarms": [{"condition": "tachycardia", "detector": "hr-high", "min_duration_s": 0}],
}


def broken(block: WindowBlock) -> ScoreBlock:
    raise FloatingPointError("a bug in a detector")


def vitals(hr: float, t: float) -> Reading:
    return Reading("bed-4/vitals", ("hr",), np.array([[hr]]), t, t)


def alarms(run: Any) -> list[dict[str, Any]]:
    return [json.loads(item.payload) for item in run.outbox.take(100)]


def test_a_failing_detector_leaves_the_others_working_and_raises_a_technical_alarm(tmp_path: Path) -> None:
    run = session(tmp_path, WATCHED)
    (z,) = [d for d in run.pipeline.detectors if d.id == "hr-z"]
    z.score_hop = broken  # type: ignore[method-assign]
    for t in range(30):
        run._commit([vitals(80.0 if t < 20 else 150.0, 1_000.0 + t)])  # must not raise
    assert run.pipeline.detector_failures() == {"hr-high": 0, "hr-z": 22}  # from its 9th sample on
    run.check_gateway(1_030.0, 0.0)
    raised = {a["condition"]: a for a in alarms(run)}
    assert {c: a["phase"] for c, a in raised.items()} == {
        "tachycardia": "start",  # the limit detector kept working
        "detector_failing": "start",
    }
    failing = raised["detector_failing"]
    assert failing["priority"] == "high" and failing["stream"] == "detector:hr-z"
    assert "raised an error 22 time(s)" in failing["explanation"]["text"]

    run.check_gateway(1_060.0, 0.0)  # the first check without a failure
    run.check_gateway(1_119.0, 0.0)  # not yet a minute clear
    assert alarms(run) == []
    run.check_gateway(1_121.0, 0.0)
    assert [(a["condition"], a["phase"]) for a in alarms(run)] == [("detector_failing", "end")]
