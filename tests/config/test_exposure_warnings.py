"""Settings that let data out unguarded are said, by check-config and at each start, not refused.

Found in a privacy review: `remote.allow_unsigned = true` with `privacy.raw_snippets = true` (and
`snippet_devices = []`, all devices) served 5075 raw ECG samples to an anonymous, unsigned
`mosquitto_rr`; `check-config` said "ok" and the start said nothing. Likewise `mqtt.insecure = true` to
a broker on another host (data in clear text) passed in silence. Both are valid settings (a lab, a VPN),
so a gateway upgraded with them still starts and monitors; but the one who reads its check or its log
is told what they let out. The real CLI and the real daemon (with a real broker) are run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from waiting import wait_until

from agent.cli import main
from agent.localbroker import LocalBroker

BASE = """
[gateway]
id = "gw-priv-01"
site = "site-01"
state_dir = "state"
[mqtt]
url = "{url}"
{mqtt}
[outbox]
path = "state/outbox.sqlite"
[[devices]]
id = "bed-3-john-smith"
kind = "wearable"
transport = "simulator"
[[detectors]]
id = "hr-high"
type = "limit"
stream = "vitals"
channels = ["hr"]
params = {{ above = 120 }}
[[alarms]]
condition = "tachycardia"
detector = "hr-high"
{rest}
"""
UNSIGNED_SNIPPETS = """
[remote]
enabled = true
allow_unsigned = true
[privacy]
raw_snippets = true
"""
SNIPPET_WARNING = (
    "remote.allow_unsigned = true with privacy.raw_snippets = true: whoever can write the command "
    "topics (cmd/#) gets raw samples of every device, without a signature"
)
PLAIN_WARNING = (
    "mqtt.insecure = true: alarms and heartbeats go to 192.0.2.1:1883 unencrypted, to a broker "
    "nothing authenticates"
)


def write(tmp_path: Path, rest: str = "", *, url: str = "mqtt://127.0.0.1:1883", mqtt: str = "") -> Path:
    config = tmp_path / "agent.toml"
    config.write_text(BASE.format(url=url, mqtt=mqtt, rest=rest))
    return config


def checked(config: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["check-config", str(config)]) == 0  # a warning: the config stays "ok"
    return capsys.readouterr().err


def test_check_config_warns_when_unsigned_commands_can_fetch_raw_snippets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = checked(write(tmp_path, UNSIGNED_SNIPPETS), capsys)
    assert SNIPPET_WARNING in err, err
    assert "bed-3-john-smith" not in err


def test_the_warning_counts_the_devices_snippet_devices_allows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listed = UNSIGNED_SNIPPETS.replace(
        "allow_unsigned = true", 'allow_unsigned = true\nsnippet_devices = ["bed-3-john-smith"]'
    )
    err = checked(write(tmp_path, listed), capsys)
    assert "gets raw samples of 1 device(s) (remote.snippet_devices), without a signature" in err, err
    assert "bed-3-john-smith" not in err


@pytest.mark.parametrize(
    "safe",
    [
        UNSIGNED_SNIPPETS.replace("raw_snippets = true", "raw_snippets = false"),
        UNSIGNED_SNIPPETS.replace(
            "allow_unsigned = true", 'allow_unsigned = true\nallowed_commands = ["status"]'
        ),
        UNSIGNED_SNIPPETS.replace("enabled = true", "enabled = false"),
    ],
    ids=["no-raw-snippets", "snippet-not-allowed", "remote-off"],
)
def test_no_warning_when_no_unsigned_command_can_fetch_a_snippet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], safe: str
) -> None:
    assert "allow_unsigned" not in checked(write(tmp_path, safe), capsys)


def daemon_log(config: Path) -> str:
    """The real daemon's log from its start until its first session is set up, then stopped."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=config.parent,
    )
    lines: list[str] = []
    out = proc.stdout
    assert out is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(out.readline, "")), daemon=True)
    reader.start()
    try:
        wait_until(
            lambda: any("session 1:" in line for line in lines) or proc.poll() is not None, 30, "a session"
        )
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        proc.wait(20)
        reader.join(10)
    return "".join(lines)


def test_the_daemon_warns_at_start_when_unsigned_commands_can_fetch_raw_snippets(
    tmp_path: Path, mosquitto: LocalBroker
) -> None:
    log = daemon_log(write(tmp_path, UNSIGNED_SNIPPETS, url=f"mqtt://127.0.0.1:{mosquitto.port}"))
    (line,) = [line for line in log.splitlines() if "allow_unsigned" in line]
    assert "WARNING" in line and SNIPPET_WARNING in line, log


def test_check_config_warns_when_insecure_sends_to_another_host_in_clear_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = checked(write(tmp_path, url="mqtt://192.0.2.1:1883", mqtt="insecure = true"), capsys)
    assert PLAIN_WARNING in err, err


def test_insecure_to_a_loopback_broker_is_not_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = checked(write(tmp_path, url="mqtt://127.0.0.1:1883", mqtt="insecure = true"), capsys)
    assert "insecure" not in err, err


def test_the_daemon_warns_at_start_when_insecure_sends_to_another_host(tmp_path: Path) -> None:
    log = daemon_log(write(tmp_path, url="mqtt://192.0.2.1:1883", mqtt="insecure = true"))
    (line,) = [line for line in log.splitlines() if "mqtt.insecure" in line]
    assert "WARNING" in line and PLAIN_WARNING in line, log
