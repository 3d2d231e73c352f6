"""`edge-agent status`: the running agent's health, from its local socket or its last heartbeat.

The daemon serves one JSON document per connection on a unix socket in its state folder (0600,
so only the service user and root can read it), and also writes each heartbeat to
`last-heartbeat.json` there; `status` prefers the live socket and falls back to that file when the
agent does not answer, saying why (`FoundStatus.not_live`: no socket, refused, or no answer in time: hung)
and how old that heartbeat is, so a stopped or hung agent is never shown as if it ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.config.schema import AgentConfig

log = logging.getLogger(__name__)
SOCKET_NAME = "agent.sock"
LAST_HEARTBEAT = "last-heartbeat.json"


class StatusServer:
    """Answers every connection on `<state_dir>/agent.sock` with `snapshot()` as JSON."""

    def __init__(self, state_dir: Path, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.path = state_dir / SOCKET_NAME
        self._snapshot = snapshot
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        """Listen on the socket; a folder that takes no new file (a read-only file system, a full
        disk) leaves `edge-agent status` without an answer, said once, and the agent runs on."""
        try:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # left by a killed predecessor
            self._server = await asyncio.start_unix_server(self._answer, path=str(self.path))
        except OSError as exc:
            log.error(
                "cannot make the status socket %s (%s): `edge-agent status` shows the last heartbeat "
                "saved before, if any; the agent runs on",
                self.path,
                exc.strerror or exc,
            )
            return
        self.path.chmod(0o600)

    async def close(self) -> None:
        if self._server is None:
            return  # never listened: a socket file there is not this agent's to remove
        self._server.close()
        await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(json.dumps(self._snapshot(), default=str).encode() + b"\n")
            await writer.drain()
        except (ConnectionResetError, BrokenPipeError):
            # The client hung up first (`status` gave up on a busy agent, a probe): nothing is wrong
            # here, and a traceback per hang-up would flood the log.
            log.debug("a status client hung up before its answer was written")
        finally:
            writer.close()


@dataclass(frozen=True, slots=True)
class FoundStatus:
    """What `read_status` found: the live status, or the last heartbeat and why the agent gave none."""

    source: str  # "live" or "last heartbeat"
    status: dict[str, Any]
    not_live: str | None = None  # "no socket", "refused", "timeout" or "bad answer" (with the heartbeat)
    age_s: float | None = None  # the heartbeat's age, from its time (else the file's), when known


def read_status(state_dir: Path, timeout_s: float = 2.0) -> FoundStatus | None:
    """The live status from the socket; else the last heartbeat from the file, with why the socket gave
    nothing; None when neither is there (the caller says why: `access_problem`)."""
    try:
        return FoundStatus("live", _ask(state_dir / SOCKET_NAME, timeout_s))
    except FileNotFoundError:
        not_live = "no socket"  # not running, or between two sessions of a reload
    except ConnectionRefusedError:
        not_live = "refused"  # the socket file of a killed agent: nobody listens
    except TimeoutError:
        not_live = "timeout"  # connected (the kernel's backlog) but no answer: hung, or far too busy
    except (OSError, ValueError):
        not_live = "bad answer"
    path = state_dir / LAST_HEARTBEAT
    try:
        beat = json.loads(path.read_text())
        written = path.stat().st_mtime
    except (OSError, ValueError):
        return None
    return FoundStatus("last heartbeat", beat, not_live, _age_s(beat, written))


def _ask(path: Path, timeout_s: float) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(str(path))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = json.loads(data)
    if not isinstance(status, dict):
        raise ValueError("not a JSON object")
    return status


def _age_s(beat: dict[str, Any], written: float) -> float:
    """Seconds since the heartbeat was made: its `time`, or the file's modification time."""
    try:
        made = datetime.fromisoformat(str(beat.get("time"))).timestamp()
    except ValueError:
        made = written
    return max(0.0, time.time() - made)


NOT_LIVE = {  # FoundStatus.not_live -> what it means, for the operator
    "no socket": "is not running (no socket {path}; or between two sessions of a reload: look again)",
    "refused": "is not running (nobody listens on {path}: stopped or killed)",
    "timeout": "did not answer on {path} within {timeout:.0f} s: it is hung or far too busy",
    "bad answer": "gave no readable answer on {path}",
}


def not_live_text(found: FoundStatus, state_dir: Path, timeout_s: float = 2.0) -> str:
    """One line: the agent did not answer, why, and what is shown instead."""
    why = NOT_LIVE[found.not_live or "bad answer"].format(path=state_dir / SOCKET_NAME, timeout=timeout_s)
    age = "" if found.age_s is None else f", {found.age_s:.0f} s old"
    shown = f"showing its last heartbeat{age}: the state at that time, not now"
    return f"edge-agent status: the agent {why}; {shown}"


def device_names(config: AgentConfig) -> dict[str, str]:
    """Pseudonym -> configured device id, for a reader who may read the site key (else empty).

    Logs and heartbeats name devices by pseudonym only; the operator at the gateway, who has the
    config and the key anyway, needs to know which device a line is about. Never creates the key.
    """
    from agent.errors import ConfigError
    from agent.keyfile import read_private
    from agent.privacy import KEY_SETTING, Pseudonymizer

    key_file = config.privacy.key_file or config.gateway.state_dir / "pseudonym.key"
    try:
        pseudonym = Pseudonymizer(read_private(key_file, KEY_SETTING))
    except ConfigError:
        return {}
    return {pseudonym(device.id): device.id for device in config.devices}


def access_problem(state_dir: Path) -> str | None:
    """Why this user cannot see the agent's status in `state_dir` (the folder is 0700, the socket
    0600: only the service user and root), or None. Without it, "no running agent" would mislead."""
    import os

    for path in (state_dir, state_dir / SOCKET_NAME):
        needed = (os.R_OK | os.W_OK) if path.is_socket() else (os.R_OK | os.X_OK)
        if path.exists() and not os.access(path, needed):
            return (
                f"{path} is not accessible to this user: run `edge-agent status` as root or as the "
                "agent's service user (sudo -u edge-agent ...)"
            )
    if not state_dir.exists() and state_dir.parent.exists() and not os.access(state_dir.parent, os.X_OK):
        return f"{state_dir.parent} is not accessible to this user: run as root or as the agent's user"
    return None


def describe_calibration(progress: dict[str, Any]) -> str:
    """One detector's live calibration (agent.pipeline.calibration.LiveCalibration.status) as text."""
    if progress.get("state") == "learning":
        share = float(progress.get("progress", 0.0))
        baseline = progress.get("baseline_s")
        if baseline is None:  # a heartbeat from before the field
            return f"learning {100.0 * share:.0f} %"
        done = f"{share * float(baseline):.0f} of {float(baseline):.0f} s ({100.0 * share:.0f} %)"
        return f"learning {done}; its configured threshold judges meanwhile"
    return f"calibrated threshold {progress.get('threshold')} at {progress.get('at')}"


def describe_machine(state: dict[str, Any]) -> str:
    """A gated machine's state (agent.pipeline.running.RunningStates.status) as text."""
    word = state.get("state")
    since = f" since {state['since']}" if state.get("since") else ""
    if word == "running":
        return f"running{since} (judged)"
    if word == "settling":
        left = state.get("settle_left_s")
        after = "" if left is None else f" in {float(left):.0f} s"
        return f"settling{since}: started, judged again{after} (no verdict, nothing learnt meanwhile)"
    return f"{word}{since} (no verdict, nothing learnt)"


def _stream_label(key: str, names: dict[str, str] | None) -> str:
    """ "pseudonym/stream", with the device's configured id where the reader may know it."""
    known = (names or {}).get(key.split("/", 1)[0])
    return f"{key} ({known})" if known else key


def render(
    source: str, status: dict[str, Any], names: dict[str, str] | None = None, age_s: float | None = None
) -> str:
    """A readable multi-line report of a status snapshot (live) or a heartbeat payload (file);
    `names` (pseudonym -> device id, see `device_names`) adds each device's configured id; `age_s`, a
    heartbeat's age, is told in the title, which marks everything below as the state at that time."""
    beat = status.get("heartbeat", status)
    outbox = status.get("outbox") or {}  # live figures; a heartbeat file has none
    if age_s is not None:
        source = f"{source}, {age_s:.0f} s old: the state then, not now"
    lines = [
        f"edge-agent status ({source}) — gateway {beat.get('gateway')}, session {beat.get('session')}, "
        f"up {beat.get('uptime_s', 0):.0f} s, at {beat.get('time')}"
    ]
    synced = status.get("clock_synced", beat.get("clock_synced"))  # live, else the heartbeat's
    if synced is False:
        lines.append(
            "  clock: NOT synchronised, the kernel says (no NTP sync since boot): the times sent now may be"
            " off by days; alarm events and heartbeats carry clock_synced false"
        )
    uplink = status.get("uplink")
    if uplink:
        lines.append(
            f"  uplink: {'connected' if uplink.get('connected') else 'DISCONNECTED'}, "
            f"{uplink.get('delivered', 0)} delivered, {uplink.get('refused', 0)} refused, "
            f"{uplink.get('reconnects', 0)} reconnects"
        )
        if not uplink.get("connected") and uplink.get("problem"):
            down = uplink.get("down_for_s")
            lines.append(
                f"    for {down or 0:.0f} s, {uplink.get('failed_attempts', 0)} failed attempt(s): "
                f"{uplink['problem']}"
            )
            if uplink.get("first_problem"):  # an earlier cause the latest would hide (a clock behind TLS)
                lines.append(f"    first cause in this outage: {uplink['first_problem']}")
        elif uplink.get("takeover"):  # connected now, but not for long: the connections keep dropping
            lines.append(f"    connections keep dropping: {uplink['takeover']}")
        if outbox.get("refused"):
            lines.append("    refused messages stay aside: fix the broker, then `edge-agent retry-refused`")
    commands = status.get("commands") or {}  # remote commands: what a flood or an ACL cost
    if any(commands.values()):
        lines.append(
            f"  remote commands: {commands.get('dropped', 0)} dropped on arrival, "
            f"{commands.get('unanswered', 0)} refusals unanswered, {commands.get('answers_dropped', 0)} "
            f"answers dropped, {commands.get('answers_refused', 0)} answers refused by the broker"
        )
    age = beat.get("oldest_undelivered_age_s")
    refused = beat.get("outbox_refused")
    dropped = beat.get("outbox_heartbeats_dropped")
    expired = beat.get("outbox_heartbeats_expired")
    lines.append(
        f"  outbox: {beat.get('outbox_depth')} waiting"
        + (f", oldest {age:.0f} s" if age else "")
        + (f", {refused} refused by the broker" if refused else "")
        + (f", {dropped} heartbeat(s) dropped for room so far" if dropped else "")
        + (f", {expired} heartbeat(s) expired undelivered so far" if expired else "")
    )
    torn = outbox.get("wal_lost_at_start")
    if torn:
        lines.append(
            f"    its WAL lost at least {torn} committed transaction(s) before this start (a power cut, or"
            " a card that loses written data: see the log); the back end reconciles open episodes by"
            " active_alarms"
        )
    held = outbox.get("held_in_memory")
    if held:
        lines.append(f"    {held} alarm event(s) held in memory: the outbox cannot be written (a full disk?)")
    elif outbox.get("writable") is False:
        lines.append("    the outbox cannot be written (a full disk?): heartbeats are sent directly")
    lines.append(f"  alarms active: {beat.get('active_alarms')}")
    board = beat.get("temperature_c")
    lines.append(
        f"  cpu {beat.get('cpu_percent')}%, rss {(beat.get('rss_bytes') or 0) / 2**20:.0f} MB"
        + (f", board {board} °C" if board is not None else "")
    )
    for detector, channels in (status.get("missing_channels") or {}).items():
        lines.append(
            f"  detector {detector}: no reading of its stream has had {', '.join(channels)} so far:"
            " check its `channels`"
        )
    for stream, texts in (status.get("blind_streams") or {}).items():  # agent.pipeline.blind
        lines += [f"  stream {stream}: {text} (technical alarm channel_missing)" for text in texts]
    for stream, where in (status.get("unwatched_streams") or {}).items():
        lines.append(
            f"  stream {stream}: no detector watches it, but it carries {', '.join(where['channels'])},"
            f" which detectors read on {', '.join(where['watched_on'])}: check the device's stream"
            " (a serial HELLO rate above 10 Hz) or the detectors' `stream`"
        )
    models = beat.get("models") or {}
    lines.append("  models: " + (", ".join(f"{k} {v}" for k, v in models.items()) or "none"))
    calibration = status.get("calibration") or beat.get("calibration") or {}
    for detector, progress in calibration.items():  # "learning 37 %" / "calibrated threshold X at <time>"
        lines.append(f"  calibration {detector}: {describe_calibration(progress)}")
    # running_when: machines that stop. Live, or the heartbeat's (a file's `status` is the heartbeat).
    running = status.get("running") or {}
    for stream, state in running.items():
        lines.append(f"  machine {_stream_label(stream, names)}: {describe_machine(state)}")
    for detector, progress in (status.get("learning") or {}).items():  # per-stream baselines, no verdict yet
        for stream, learnt in (progress.get("learnt_s") or {}).items():
            paused = running.get(stream, {}).get("state") not in (None, "running")
            lines.append(
                f"  learning {detector} on {_stream_label(stream, names)}: {learnt:.0f}"
                f" of {progress.get('of_s', 0):.0f} s, no verdict from it until then"
                + (" (paused: it learns from the running machine only)" if paused else "")
            )
    for device in beat.get("devices", []):
        seen = device.get("last_seen") or "never"
        known = (names or {}).get(device["device"])
        label = f"{known} ({device['device']})" if known else device["device"]
        lines.append(
            f"  device {label}: {'connected' if device['connected'] else 'not connected'}, "
            f"{device['rate_hz']:.1f} readings/s, last seen {seen}, gaps {device['gaps']}, "
            f"bad frames {device['bad_frames']}, reconnects {device.get('reconnects', 0)}"
            + (f", ODI {odi:.1f}/h" if (odi := device.get("desaturation_index_per_h")) is not None else "")
            + (f", beats {bpm:.0f}/min" if (bpm := device.get("beats_per_min")) is not None else "")
        )
        errors = device.get("errors") or {}  # a heartbeat written before errors were reported has none
        if errors:
            lines.append("    errors since start: " + ", ".join(f"{kind} {n}" for kind, n in errors.items()))
            if errors.get("waiting_hello") and not device.get("last_seen"):
                lines.append("    DATA arrives but no HELLO: every frame is dropped; reset the device")
    return "\n".join(lines)
