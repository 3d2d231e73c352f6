"""The state folder and the outbox on a read-only file system: a failing SD card that the kernel has
remounted read-only (ext4's ``errors=remount-ro``), found so after a power cut.

Real EROFS, not an injected one: the folder is a bind mount remounted read-only (`read_only_disk`), so
every write under it fails as on such a card, with the files an earlier run left there. Before:
`check-config` (the unit's ExecStartPre) and `run` refused it as a permissions problem (`gateway.state_dir:
… is not writable`, exit 2), systemd restarted it every 5 s into the same refusal, and nothing was
monitored or sent, not even what waited in the outbox. Now it starts as on a full disk
(docs/robustness.md, "The disk fills up"): what is queued is read and sent, new alarms are held in
memory and sent directly, `outbox_unwritable` is raised, and the log says "read-only file system".
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from read_only_disk import bind_mount, set_read_only
from test_full_disk import CONFIG, phases
from test_operator_errors import AgentRun, without_file_permission_override
from uplink_probe import Subscriber
from waiting import wait_until

from agent.localbroker import LocalBroker


@pytest.fixture
def card(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    yield from bind_mount(request, tmp_path / "card-files", tmp_path / "card")


def _config(tmp_path: Path, card: Path, port: int) -> Path:
    config = tmp_path / "agent.toml"
    text = CONFIG.format(port=port).replace('state_dir = "state"', f'state_dir = "{card}/state"')
    config.write_text(text.replace('path = "state/outbox.sqlite"', f'path = "{card}/state/outbox.sqlite"'))
    return config


def _check_config(config: Path, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "agent.cli", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=config.parent,
    )


def _devices(beats: Subscriber) -> set[str]:
    return {d["device"] for m in beats.snapshot() for d in m.json()["devices"]}


def _alive(agent: AgentRun, predicate: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    wait_until(lambda: predicate() or agent.proc.poll() is not None, timeout_s, what)
    assert agent.proc.poll() is None, "the agent stopped:\n" + "\n".join(agent.lines[-30:])


@pytest.mark.parametrize("first_run", ["stopped", "killed"])
def test_an_agent_restarted_on_a_read_only_card_sends_what_is_queued_and_monitors(
    make_broker: Callable[..., LocalBroker], tmp_path: Path, card: Path, first_run: str
) -> None:
    """`stopped`: the outbox was closed cleanly (no WAL left: SQLite cannot open it read-write there);
    `killed`: a power cut left its WAL and WAL index, which SQLite reads read-only."""
    broker = make_broker()
    broker.stop()  # the first run's episode waits in the outbox
    config = _config(tmp_path, card, broker.port)
    first = AgentRun(config)
    try:
        first.wait_for("alarm end medium tachycardia", timeout_s=60)  # logged once committed
    finally:
        if first_run == "stopped":
            assert first.stop() == 0
        else:
            first.proc.kill()
            first.proc.wait(10)
    wal = card / "state" / "outbox.sqlite-wal"
    assert wal.exists() is (first_run == "killed")
    set_read_only(card)  # the card failed: the kernel remounted it read-only; then a power cut

    checked = _check_config(config)
    assert checked.returncode == 0, checked.stderr
    assert f"gateway.state_dir: {card}/state is on a read-only file system (EROFS)" in checked.stderr
    assert "not writable" not in checked.stderr

    broker.start()
    central = Subscriber(broker, "edge/lab/gw-disk/alarm")
    beats = Subscriber(broker, "edge/lab/gw-disk/heartbeat")
    agent = AgentRun(config)
    try:
        agent.wait_for("connected to")
        # The queued episode (read from the file), then this run's own (held, sent directly).
        _alive(agent, lambda: phases(central, "tachycardia") == ["start", "end"] * 2, "both episodes sent")
        episodes = {m.json()["id"] for m in central.snapshot() if m.json()["condition"] == "tachycardia"}
        assert len(episodes) == 2
        _alive(agent, lambda: phases(central, "outbox_unwritable") == ["start"], "outbox_unwritable sent")
        _alive(agent, lambda: len(beats.snapshot()) >= 3, "heartbeats sent directly")
        told = "\n".join(agent.lines)
        assert "read-only file system" in told and "free space" not in told
        assert "Traceback" not in told and "ended unexpectedly" not in told
        assert agent.stop() == 0
    finally:
        central.close()
        beats.close()
        if agent.proc.poll() is None:
            agent.proc.kill()


def test_a_start_on_a_read_only_card_with_an_empty_state_folder_monitors_one_agent_only(
    make_broker: Callable[..., LocalBroker], tmp_path: Path, card: Path
) -> None:
    """The folder was made (by the unit's StateDirectory=, an admin), then the card failed before a
    first run: no outbox, no keys, no lock file. The keys serve from memory, an empty outbox stand-in
    takes nothing, and the folder itself is the lock: a second agent is still refused. A reload keeps
    the pseudonym key kept in memory (before, each session made a new one: every pseudonym changed)."""
    (card / "state").mkdir(mode=0o700)
    set_read_only(card)
    broker = make_broker()
    config = _config(tmp_path, card, broker.port)
    central = Subscriber(broker, "edge/lab/gw-disk/alarm")
    beats = Subscriber(broker, "edge/lab/gw-disk/heartbeat")
    agent = AgentRun(config)
    try:
        agent.wait_for("connected to")
        second = subprocess.run(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=config.parent,
        )
        assert second.returncode == 2
        assert f"another edge-agent (pid ?) runs with {card}/state" in second.stderr
        _alive(agent, lambda: phases(central, "tachycardia") == ["start", "end"], "the episode sent directly")
        _alive(agent, lambda: phases(central, "outbox_unwritable") == ["start"], "outbox_unwritable sent")
        assert agent.having("privacy.key_file: cannot create") and agent.having("cannot set up the outbox")
        _alive(agent, lambda: len(beats.snapshot()) >= 1, "a heartbeat sent directly")
        before = _devices(beats)

        agent.proc.send_signal(signal.SIGHUP)
        agent.wait_for("reloading config")
        _alive(agent, lambda: len(agent.having("session 1: 1 device(s)")) == 2, "the reloaded session")
        reloaded = len(beats.snapshot())
        _alive(agent, lambda: len(beats.snapshot()) >= reloaded + 2, "heartbeats of the reloaded session")
        assert _devices(beats) == before  # the same pseudonyms: the same key
        assert "Traceback" not in "\n".join(agent.lines)
        assert agent.stop() == 0
        assert sorted(p.name for p in (card / "state").iterdir()) == []
    finally:
        central.close()
        beats.close()
        if agent.proc.poll() is None:
            agent.proc.kill()


def test_a_first_start_on_a_read_only_card_is_refused_naming_the_file_system(
    tmp_path: Path, card: Path
) -> None:
    """No state folder yet and none can be made: nothing to read, no lock to take; said as it is."""
    set_read_only(card)
    checked = _check_config(_config(tmp_path, card, 1))
    assert checked.returncode == 2
    assert f"gateway.state_dir: cannot create {card}/state: {card} is on a read-only file system" in (
        checked.stderr
    )


def test_a_state_folder_of_another_user_on_a_writable_card_is_still_refused(tmp_path: Path) -> None:
    """A permissions problem is the operator's to fix, not a fault to go past: refused as before."""
    card = tmp_path / "card"
    state = card / "state"
    state.mkdir(mode=0o700, parents=True)
    subprocess.run(["chown", "65534:65534", str(state)], check=True)  # nobody's
    checked = _check_config(_config(tmp_path, card, 1), without_file_permission_override())
    assert checked.returncode == 2
    assert f"gateway.state_dir: {state} is not writable" in checked.stderr
    assert "read-only" not in checked.stderr
