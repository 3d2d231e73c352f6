"""`python -m tools.bench disk --offline`: the link down, heartbeats alone, nothing taken
(docs/durability.md, "Heartbeats in an outage"): the outbox keeps the last heartbeat_expiry_s of them, and
the bytes are counted."""

from __future__ import annotations

from tools.bench.disk import outbox_writes


def test_an_offline_run_keeps_the_unexpired_heartbeats_only_and_counts_its_bytes() -> None:
    report = outbox_writes(0, 40, 2, offline=True)  # 20 simulated minutes, a heartbeat every 30 s
    assert report["heartbeats"] == 40 and report["events"] == 0
    assert 4 <= report["rows_left"] <= 5  # 120 s of heartbeats, and at most the 30 s between looks
    assert report["written_kib_per_event"] > 0
