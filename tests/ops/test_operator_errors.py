"""A technician's mistakes, seen as they see them: `edge-agent run` as its own process, its log lines,
`edge-agent status` and exit codes. Each mistake gets one line naming what to fix, the agent keeps
going where it can (the other devices, alarms waiting on disk) and recovers once the fix is made.
Real mosquitto, real pseudo-terminals; the uplink's and the serial source's messages in detail are in
tests/uplink/test_operator_uplink_errors.py and tests/sources/test_operator_serial_errors.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from waiting import wait_until

from agent.cli import main
from agent.localbroker import LocalBroker

BrokerFactory = Callable[..., LocalBroker]
TOPIC = "edge/lab/gw-op"

BASE = """
[gateway]
id = "gw-op"
site = "lab"
heartbeat_interval_s = 1
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:{port}"
{mqtt_extra}

[outbox]
path = "state/outbox.sqlite"

[[devices]]
id = "monitor-bed-3"
kind = "wearable"
transport = "simulator"
[devices.simulator]
seed = 3
speed = 20.0
episodes = [{{ condition = "tachycardia", start_s = 5, duration_s = 600 }}]
{devices_extra}

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
"""


def write_config(tmp_path: Path, port: int, *, mqtt_extra: str = "", devices_extra: str = "") -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(BASE.format(port=port, mqtt_extra=mqtt_extra, devices_extra=devices_extra))
    return path


class AgentRun:
    """`edge-agent run` as a child process; its log lines are collected as they come."""

    def __init__(self, config: Path, prefix: tuple[str, ...] = ()) -> None:
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=config.parent,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def having(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]

    def wait_for(self, text: str, timeout_s: float = 30.0) -> str:
        """The first log line holding `text`; fails with the whole log if none comes in time."""
        deadline = time.monotonic() + timeout_s
        while not self.having(text) and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.having(text), f"no {text!r} in the log:\n" + "\n".join(self.lines)
        return self.having(text)[0]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self._reader.join(5)
        return code


def status(config: Path, *, as_json: bool = False) -> str:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "status",
            "--config",
            str(config),
            *(["--json"] if as_json else []),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def status_json(config: Path) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(status(config, as_json=True))
    return parsed


def without_file_permission_override() -> tuple[str, ...]:
    """A prefix that makes root feel file modes, as the agent's service user does (no-op otherwise)."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    assert setpriv is not None, "setpriv (util-linux) is needed to test permission errors as root"
    return (setpriv, "--bounding-set=-dac_override,-dac_read_search")


def test_a_serial_port_the_agent_may_not_open_is_named_the_others_run_and_it_opens_once_allowed(
    tmp_path: Path,
) -> None:
    link = tmp_path / "usb-Acme_Monitor-if00"
    master, slave = os.openpty()
    tty.setraw(slave)
    device_file = Path(os.ttyname(slave))
    link.symlink_to(device_file)
    mode = device_file.stat().st_mode & 0o777
    serial = '\n[[devices]]\nid = "monitor-bed-4"\nkind = "wearable"\ntransport = "serial"\n' + (
        f'[devices.serial]\nport = "{link}"\nprotocol = "csv"\nchannels = ["hr", "spo2"]\n'
    )
    config = write_config(tmp_path, 1, devices_extra=serial)  # no broker: alarms wait on disk
    device_file.chmod(0)
    agent = AgentRun(config, without_file_permission_override())
    try:
        warning = agent.wait_for("cannot open serial port")
        assert "(serial.port): permission denied: the agent's user needs read and write access" in warning
        assert "'dialout'" in warning and "the other devices are not affected" in warning
        assert "monitor-bed-4" not in warning and str(link) not in warning  # pseudonyms only in logs
        time.sleep(4.0)  # three more attempts (backoff 0.5, 1, 2 s): still one line
        assert len(agent.having("cannot open serial port")) == 1
        shown = status(config)
        assert "device monitor-bed-3 (d-" in shown  # the configured id next to the pseudonym
        assert "device monitor-bed-4 (d-" in shown and "not connected" in shown.split("monitor-bed-4")[1]
        assert "connected, " in shown.split("monitor-bed-3")[1].splitlines()[0]

        device_file.chmod(mode)  # the fix: the port is readable again
        opened = agent.wait_for("open (after ", timeout_s=40)  # backoff reaches 30 s at most
        assert "failed attempt(s) over " in opened
        os.write(master, b"72,97\n" * 5)
        wait_until(
            lambda: "connected, " in status(config).split("monitor-bed-4")[1].splitlines()[0],
            20,
            "the serial device shown connected",
        )
    finally:
        code = agent.stop()
        os.close(master)
        os.close(slave)
    assert code == 0


def test_an_alarm_the_acl_refuses_waits_aside_and_is_delivered_after_the_fix_and_retry_refused(
    make_broker: BrokerFactory, tmp_path: Path
) -> None:
    acl_without_alarms = (
        f"user gw\ntopic readwrite {TOPIC}/status\ntopic readwrite {TOPIC}/heartbeat\n"
        "user central\ntopic read edge/#\n"
    )
    broker = make_broker(allow_anonymous=False, users={"gw": "pw", "central": "c"}, acl=acl_without_alarms)
    (tmp_path / "gw.password").write_text("pw\n")
    (tmp_path / "gw.password").chmod(0o600)  # a secret others can read is refused
    auth = '[mqtt.auth]\nusername = "gw"\npassword_file = "gw.password"'
    config = write_config(tmp_path, broker.port, mqtt_extra=auth)
    alarms: list[dict[str, Any]] = []
    central = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="central", protocol=mqtt.MQTTv5)
    central.username_pw_set("central", "c")
    central.on_message = lambda _c, _u, m: alarms.append(json.loads(m.payload))
    central.on_connect = lambda c, *_a: c.subscribe(f"{TOPIC}/alarm", qos=1)
    central.connect(broker.host, broker.port)
    central.loop_start()
    agent = AgentRun(config)
    try:
        refused = agent.wait_for("broker refused alarm")
        assert f"the broker's ACL must let client 'gw-op' (user 'gw') publish to {TOPIC}/alarm" in refused
        assert "edge-agent retry-refused" in refused
        wait_until(lambda: "refused messages stay aside" in status(config), 20, "the hint in status")
        agent.wait_for("alarm start high publish_refused")  # the gateway's technical alarm

        (broker.workdir / "acl").write_text(acl_without_alarms.replace("/heartbeat\n", "/#\n"))
        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGHUP)  # mosquitto reads its ACL file again
        time.sleep(0.5)
        assert main(["retry-refused", "--config", str(config)]) == 0
        wait_until(
            lambda: any(a["condition"] == "tachycardia" for a in alarms), 20, "the refused alarm delivered"
        )
        wait_until(lambda: status_json(config)["outbox"]["refused"] == 0, 20, "nothing refused left")
        assert "refused messages stay aside" not in status(config)
        agent.wait_for("alarm end high publish_refused")  # the technical alarm ends by itself
    finally:
        code = agent.stop()
        central.disconnect()
        central.loop_stop()
    assert code == 0


def test_a_model_that_does_not_load_is_a_config_error_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    detector = (
        '\n[[detectors]]\nid = "pump-ae"\ntype = "autoencoder"\nstream = "vitals"\nchannels = ["hr"]\n'
        f'params = {{ model = "{tmp_path / "no-such-model"}" }}\n'
    )
    config = write_config(tmp_path, 1)
    config.write_text(config.read_text() + detector)
    for command in ("check-config", "run"):
        argv = [command, str(config)] if command == "check-config" else [command, "--config", str(config)]
        assert main(argv) == 2  # a configuration problem, as for a bad key: not 1
        (line,) = capsys.readouterr().err.strip().splitlines()
        card = tmp_path / "no-such-model" / "card.json"
        assert line.startswith(f"{config}: ")
        assert line.endswith(f"model no-such-model: no model card at {card}")
    assert not (tmp_path / "state").exists()  # refused before anything started


def run_briefly(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_state_dir_that_cannot_be_created_stops_the_start_with_one_line_naming_the_key(
    tmp_path: Path,
) -> None:
    (tmp_path / "a-file").write_text("")
    config = write_config(tmp_path, 1)
    config.write_text(config.read_text().replace('state_dir = "state"', 'state_dir = "a-file/state"'))
    result = run_briefly(config)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if " INFO " not in line]
    assert errors == [
        f"{config}: gateway.state_dir: cannot create {tmp_path / 'a-file' / 'state'}: Not a directory"
    ]


def test_status_shows_why_the_uplink_is_down_and_what_to_do_with_refused_messages() -> None:
    from agent.status import render

    snapshot = {
        "heartbeat": {"gateway": "gw-op", "session": 3, "devices": []},
        "uplink": {
            "connected": False,
            "problem": "cannot resolve the broker host 'mqtt.example' (Name or service not known): check ...",
            "failed_attempts": 7,
            "down_for_s": 95.4,
        },
        "outbox": {"depth": 4, "refused": 2},
    }
    lines = render("live", snapshot).splitlines()
    assert lines[1].startswith("  uplink: DISCONNECTED")
    assert lines[2] == (
        "    for 95 s, 7 failed attempt(s): cannot resolve the broker host 'mqtt.example' "
        "(Name or service not known): check ..."
    )
    assert lines[3] == "    refused messages stay aside: fix the broker, then `edge-agent retry-refused`"


def test_status_run_by_a_user_who_may_not_read_the_state_dir_says_so_not_that_no_agent_runs(
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    (state_dir / "last-heartbeat.json").write_text('{"gateway": "gw-op"}')
    if os.geteuid() == 0:
        os.chown(state_dir, 65534, 65534)  # the service user's folder; root below drops its override
    else:
        state_dir.chmod(0)
    try:
        result = subprocess.run(
            [
                *without_file_permission_override(),
                sys.executable,
                "-m",
                "agent.cli",
                "status",
                "--state-dir",
                str(state_dir),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        state_dir.chmod(0o700)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"edge-agent status: {state_dir} is not accessible to this user: run `edge-agent status` as root "
        "or as the agent's service user (sudo -u edge-agent ...)"
    )
