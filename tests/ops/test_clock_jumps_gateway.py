"""The gateway's wall clock steps while the agent runs: the gateway's own technical alarms, the outbox
and remote commands (the pipeline's part is tests/pipeline/test_clock_jumps.py).

The daemon's monitor reads the two clocks once a second and calls `follow_clock` then `check_gateway`
with them; these tests make the same calls with a wall clock that steps while the monotonic one runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from daemon_session import CONFIG, session

from agent.config.schema import OutboxConfig
from agent.detectors.base import ScoreBlock, StreamingDetector, WindowBlock
from agent.outbox import HEARTBEAT_RANK, Kind, Outbox, OutboxItem
from agent.readings import Reading
from agent.remote.envelope import CommandRefusedError, ReplayGuard
from agent.session import _Session

DAY_S = 86_400.0
NOW = 1_764_000_000.0


class Monitor:
    """The daemon's monitor over a session, with the gateway's clocks in the test's hands."""

    def __init__(self, run: _Session, wall: float) -> None:
        self.run = run
        self.mono = 1_000.0
        self.offset = wall - self.mono

    def wall(self) -> float:
        return self.mono + self.offset

    def tick(self, seconds: int, *, device_sends: bool = True) -> list[dict[str, Any]]:
        """`seconds` monitor turns; bed-4 sends one reading a second unless told otherwise. The alarm
        payloads the turns put in the outbox."""
        for _ in range(seconds):
            self.mono += 1.0
            if device_sends:
                hr = np.array([[75.0]])
                self.run._commit([Reading("bed-4/vitals", ("hr",), hr, self.wall(), self.mono)])
            self.run.follow_clock(self.wall(), self.mono)
            self.run.check_gateway(self.wall(), self.mono)
        return [json.loads(item.payload) for item in self.run.outbox.take(100)]


def lost(payloads: list[dict[str, Any]]) -> list[str]:
    return [p["phase"] for p in payloads if p["condition"] == "device_lost"]


def test_a_forward_step_is_no_silence_of_the_devices(tmp_path: Path) -> None:
    """Right before the fix too: silence is measured on the monotonic clock (agent.health)."""
    monitor = Monitor(session(tmp_path), NOW - 3 * DAY_S)
    assert monitor.tick(10) == []
    monitor.offset += 3 * DAY_S
    assert monitor.tick(60) == []


def test_a_backward_step_does_not_freeze_the_device_lost_cooldown(tmp_path: Path) -> None:
    monitor = Monitor(session(tmp_path), NOW)
    monitor.tick(5)
    assert lost(monitor.tick(31, device_sends=False)) == ["start"]  # lost_after_s is 30
    assert lost(monitor.tick(2)) == ["end"]
    monitor.offset -= 3_600.0
    # Lost again 31 s later: the 30 s cooldown after the end has run out in real seconds.
    assert lost(monitor.tick(31, device_sends=False)) == ["start"]


def test_a_forward_step_does_not_cut_the_clear_delay_of_detector_failing(tmp_path: Path) -> None:
    config = {
        **CONFIG,
        "detectors": [
            {
                "id": "hr-z",
                "type": "robust_z",
                "stream": "vitals",
                "channels": ["hr"],
                "params": {"window_s": 5},
            }
        ],
        "alarms": [{"condition": "hr_unusual", "detector": "hr-z"}],
    }
    run = session(tmp_path, config)
    (z,) = run.pipeline.detectors
    assert isinstance(z, StreamingDetector)
    score_hop = z.score_hop

    def broken(block: WindowBlock) -> ScoreBlock:
        raise FloatingPointError("a bug in a detector")

    monitor = Monitor(run, NOW - 3 * DAY_S)
    z.score_hop = broken  # type: ignore[method-assign]
    assert [(p["condition"], p["phase"]) for p in monitor.tick(10)] == [("detector_failing", "start")]
    z.score_hop = score_hop  # type: ignore[method-assign]
    assert monitor.tick(20) == []
    monitor.offset += 3 * DAY_S
    assert monitor.tick(30) == []  # 50 s without a failure: it needs 60
    ended = monitor.tick(15)
    assert [(p["condition"], p["phase"]) for p in ended] == [("detector_failing", "end")]
    assert "lasted 6" in ended[0]["explanation"]["text"]  # ~ 60 s or so, not three days


# -- the outbox ----------------------------------------------------------------------------------------


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def message(item_id: str, created: float, kind: Kind = Kind.ALARM, expiry_s: int | None = None) -> OutboxItem:
    rank = HEARTBEAT_RANK if kind is Kind.HEARTBEAT else 1
    return OutboxItem(item_id, "t", b"{}", kind, rank, created, expiry_s)


def test_after_a_backward_step_the_outbox_still_sends_in_the_order_of_puts(tmp_path: Path) -> None:
    clock = Clock(NOW)
    with Outbox(OutboxConfig(tmp_path / "outbox.db", 1 << 20, 0.8), clock=clock) as box:
        box.put(message("episode:0", clock()))  # START
        clock.t -= 3_600.0
        box.put(message("episode:1", clock()))  # its END, put after the step
        assert [i.id for i in box.take(10)] == ["episode:0", "episode:1"]


def test_the_order_holds_across_a_restart_after_the_step(tmp_path: Path) -> None:
    clock = Clock(NOW)
    config = OutboxConfig(tmp_path / "outbox.db", 1 << 20, 0.8)
    with Outbox(config, clock=clock) as box:
        box.put(message("episode:0", clock()))
    clock.t -= 3_600.0
    with Outbox(config, clock=clock) as box:
        box.put(message("other:0", clock()))
        assert [i.id for i in box.take(10)] == ["episode:0", "other:0"]


def test_a_forward_step_expires_no_alarm_in_the_outbox(tmp_path: Path) -> None:
    """Right before the fix too: alarms never expire; only heartbeats do (a newer one follows)."""
    clock = Clock(NOW - 3 * DAY_S)
    with Outbox(OutboxConfig(tmp_path / "outbox.db", 1 << 20, 0.8), clock=clock) as box:
        box.put(message("a:0", clock()))
        box.put(message("hb", clock(), Kind.HEARTBEAT, 120))
        box.put(message("b:0", clock()))
        clock.t += 3 * DAY_S
        assert [i.id for i in box.take(10)] == ["a:0", "b:0"]
        assert box.stats().expired == 1


def test_after_a_backward_step_the_message_expiry_is_never_longer_than_configured() -> None:
    heartbeat = message("hb", NOW, Kind.HEARTBEAT, 120)
    assert heartbeat.remaining_expiry(NOW + 20) == 100
    assert heartbeat.remaining_expiry(NOW - 3_600.0) == 120  # not 3,720 s


# -- remote commands -----------------------------------------------------------------------------------


def test_remote_commands_wait_for_the_clock_and_a_step_opens_no_replay(tmp_path: Path) -> None:
    """Right before the fix too. Freshness is judged on the wall clock by design (docs/remote-management.md):
    a gateway still in 1970 refuses every command as stale until NTP sets its clock; a command seen
    before a step is refused after it, whichever way the clock went."""
    now = [1_000.0]
    guard = ReplayGuard(tmp_path, 60.0, clock=lambda: now[0])
    with pytest.raises(CommandRefusedError) as stale:
        guard.admit("n1", NOW)
    assert stale.value.code == "stale"
    now[0] = NOW + 5  # NTP's first sync
    guard.admit("n1", NOW)
    now[0] = NOW + 5 - 30.0  # an admin steps it back half a minute
    with pytest.raises(CommandRefusedError) as replayed:
        guard.admit("n1", NOW)
    assert replayed.value.code == "replayed"
    now[0] = NOW + 3 * DAY_S
    with pytest.raises(CommandRefusedError) as late:
        guard.admit("n1", NOW)
    assert late.value.code == "stale"
