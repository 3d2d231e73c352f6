"""The disk under the outbox fills up while the agent runs (an SD card full of logs): no alarm is lost.

The real agent runs with a simulated wearable whose tachycardia starts and ends while its files may
not grow: the process's file-size limit (RLIMIT_FSIZE, set with `prlimit` on the running process) is
lowered to 1 KiB once it is connected, so every outbox commit fails the way SQLite fails on a full
disk. The agent must keep running, hold the episode's START and END in memory and say so in its
log and status, and, the broker being connected, send them, its `outbox_unwritable` technical alarm
and its heartbeats directly meanwhile; once the limit is lifted the outbox commits and delivers its
own copies (duplicates by (id, seq), which receivers drop). Before, the first failed commit ended
the agent (with exit status 0, so systemd's Restart=on-failure did not even restart it) and the
events of that turn were gone; then, for a while, a full disk delayed every alarm until space was
back and stopped the heartbeats without a word while the gateway showed "online".
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Callable
from pathlib import Path

from daemon_session import session
from test_operator_errors import AgentRun, status_json
from uplink_probe import Subscriber
from waiting import wait_until

from agent.daemon import Agent
from agent.localbroker import LocalBroker

CONFIG = """
[gateway]
id = "gw-disk"
site = "lab"
heartbeat_interval_s = 1
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:{port}"

[outbox]
path = "state/outbox.sqlite"

[[devices]]
id = "monitor-bed-5"
kind = "wearable"
transport = "simulator"
[devices.simulator]
seed = 5
speed = 20.0
episodes = [{{ condition = "tachycardia", start_s = 200, duration_s = 120 }}]

[[detectors]]
id = "hr-high"
type = "limit"
stream = "vitals"
channels = ["hr"]
params = {{ above = 120 }}

[[alarms]]
condition = "tachycardia"
detector = "hr-high"
priority = "medium"
min_duration_s = 5
clear_after_s = 5
"""


def phases(central: Subscriber, condition: str) -> list[str]:
    """The phases of `condition`'s alarm events the central side has received, in order, duplicates
    dropped by (id, seq) as payloads.md tells receivers to."""
    seen: set[tuple[str, int]] = set()
    out = []
    for e in (m.json() for m in central.snapshot()):
        if e["condition"] == condition and (e["id"], e["seq"]) not in seen:
            seen.add((e["id"], e["seq"]))
            out.append(e["phase"])
    return out


def copies(central: Subscriber, condition: str) -> int:
    return sum(1 for m in central.snapshot() if m.json()["condition"] == condition)


def _file_size_limit(pid: int, soft: int) -> None:
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, resource.RLIM_INFINITY))


def _until(predicate: Callable[[], bool], agent: AgentRun, what: str, timeout_s: float = 30.0) -> None:
    wait_until(lambda: predicate() or agent.proc.poll() is not None, timeout_s, what)
    assert agent.proc.poll() is None, "the agent stopped:\n" + "\n".join(agent.lines[-30:])


def test_a_full_disk_holds_the_alarms_in_memory_and_loses_none_once_space_is_back(
    make_broker: Callable[..., LocalBroker], tmp_path: Path
) -> None:
    broker = make_broker()
    central = Subscriber(broker, "edge/lab/gw-disk/alarm")
    beats = Subscriber(broker, "edge/lab/gw-disk/heartbeat")
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG.format(port=broker.port))
    agent = AgentRun(config)
    try:
        agent.wait_for("connected to")
        _file_size_limit(agent.proc.pid, 1024)  # the disk is full from now on
        full_since = len(beats.snapshot())

        # The episode (10 s in at 20x speed) starts and ends while nothing can be written: held, and
        # sent directly meanwhile, with the technical alarm that says why; heartbeats go on.
        agent.wait_for("cannot write the outbox")
        _until(lambda: status_json(config)["outbox"]["held_in_memory"] >= 2, agent, "START and END held")
        _until(lambda: phases(central, "tachycardia") == ["start", "end"], agent, "the episode sent directly")
        _until(lambda: phases(central, "outbox_unwritable") == ["start"], agent, "outbox_unwritable sent")
        assert len(beats.snapshot()) > full_since + 2  # heartbeats while full, not a silent gateway
        told = "".join(agent.having("cannot write the outbox"))
        assert "alarm event(s) held in memory" in told and "heartbeats are sent directly" in told
        assert "disk" in told and "cannot rollback" not in told  # SQLite's own words, not a follow-on error
        assert status_json(config)["outbox"]["writable"] is False

        _file_size_limit(agent.proc.pid, resource.RLIM_INFINITY)  # space is back
        # The outbox commits and sends its own copies: the receiver drops them as duplicates.
        _until(lambda: copies(central, "tachycardia") == 4, agent, "the outbox's copies delivered")
        assert phases(central, "tachycardia") == ["start", "end"]
        _until(lambda: phases(central, "outbox_unwritable") == ["start", "end"], agent, "outbox_unwritable")
        assert agent.having("takes writes again")
        outbox = status_json(config)["outbox"]
        assert outbox["held_in_memory"] == 0 and outbox["writable"] is True
        assert agent.stop() == 0
    finally:
        central.close()
        beats.close()
        if agent.proc.poll() is None:
            agent.proc.kill()


def test_a_worker_that_ends_on_its_own_makes_the_agent_exit_with_a_failure(tmp_path: Path) -> None:
    """systemd's Restart=on-failure restarts only a failure: a worker that ends must not mean exit 0."""
    run = session(tmp_path)
    agent = Agent(run.cfg)

    async def worker_that_fails() -> None:
        raise RuntimeError("a bug")

    async def main() -> None:
        task = asyncio.create_task(worker_that_fails(), name="heartbeats")
        await run._until_stop_or_accepted_reload(agent, [task])

    asyncio.run(main())
    assert agent.stopping.is_set()
    assert agent.failed == "heartbeats"
