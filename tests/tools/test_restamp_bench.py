"""tools.bench restamp: a step moves every queued alarm of the run (it raises otherwise), plain and sealed."""

from __future__ import annotations

from tools.bench.restamp import restamp_cost


def test_a_small_run_moves_every_alarm_and_reports_both_forms() -> None:
    result = restamp_cost(alarms=60, runs=1)
    assert result["alarms"] == 60
    for kind in ("plain", "sealed"):
        assert result[f"{kind}_step_ms"] > 0
        assert result[f"{kind}_call_without_step_us"] > 0
