"""A really full disk (a small tmpfs filled by another file: ENOSPC), under a running agent and at a start.

`test_full_disk` limits the process's file size; this fills a real file system, as journald or a
forgotten recording fills an SD card. Before: with heartbeats flowing there is always an acknowledged row
waiting for its batched delete, and that delete failed with "database or disk is full" and ended the
uplink task within 2 s (exit 1); the restart then failed in the session counter with a raw ENOSPC
traceback, and systemd restarted it into the same crash, so the gateway stayed down.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from small_disk import fill, mount_small_disk
from test_full_disk import CONFIG, copies, phases
from test_operator_errors import AgentRun, status_json
from uplink_probe import Subscriber
from waiting import wait_until

from agent.localbroker import LocalBroker


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    yield from mount_small_disk(tmp_path / "disk")


def _config(tmp_path: Path, disk: Path, port: int) -> Path:
    config = tmp_path / "agent.toml"
    text = CONFIG.format(port=port).replace('state_dir = "state"', f'state_dir = "{disk}/state"')
    config.write_text(text.replace('path = "state/outbox.sqlite"', f'path = "{disk}/state/outbox.sqlite"'))
    return config


def _alive(agent: AgentRun, predicate: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    wait_until(lambda: predicate() or agent.proc.poll() is not None, timeout_s, what)
    assert agent.proc.poll() is None, "the agent stopped:\n" + "\n".join(agent.lines[-30:])


def test_a_disk_filling_under_a_connected_agent_never_ends_the_uplink(
    make_broker: Callable[..., LocalBroker], tmp_path: Path, disk: Path
) -> None:
    broker = make_broker()
    central = Subscriber(broker, "edge/lab/gw-disk/alarm")
    beats = Subscriber(broker, "edge/lab/gw-disk/heartbeat")
    config = _config(tmp_path, disk, broker.port)
    agent = AgentRun(config)
    try:
        agent.wait_for("connected to")
        _alive(agent, lambda: len(beats.snapshot()) >= 2, "heartbeats delivered: an acknowledged row waits")
        filler = fill(disk)

        # The batched delete of acknowledged heartbeats fails now: it waits, and sending goes on.
        agent.wait_for("acknowledged row(s) stay in the file")
        full_since = len(beats.snapshot())
        _alive(agent, lambda: phases(central, "tachycardia") == ["start", "end"], "the episode sent directly")
        _alive(agent, lambda: phases(central, "outbox_unwritable") == ["start"], "outbox_unwritable sent")
        assert len(beats.snapshot()) > full_since + 2  # heartbeats sent directly
        assert not agent.having("ended unexpectedly") and not agent.having("Traceback")
        assert status_json(config)["outbox"]["writable"] is False

        filler.unlink()  # space is back: the held events are committed, the deletions written
        _alive(agent, lambda: copies(central, "tachycardia") == 4, "the outbox's copies delivered")
        _alive(agent, lambda: phases(central, "outbox_unwritable") == ["start", "end"], "outbox_unwritable end")
        _alive(agent, lambda: bool(agent.having("acknowledged rows are deleted")), "the deletions written")
        assert agent.stop() == 0
    finally:
        central.close()
        beats.close()
        if agent.proc.poll() is None:
            agent.proc.kill()
