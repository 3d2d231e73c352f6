"""The `edge-agent` command line: `check-config` takes its file as an argument or with -c/--config,
global options go before or after the command (and each command's --help lists them), every
--config has a help text, and a reader that closes the pipe early ends the command quietly."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main

CONFIG = """
[gateway]
id = "gw-cli"
site = "lab"
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:1883"

[outbox]
path = "state/outbox.sqlite"

[[devices]]
id = "wearable-1"
kind = "wearable"
transport = "simulator"

# a rule: without one check-config warns (tests/ops/test_nothing_alarms.py)
[[detectors]]
id = "hr-high"
type = "limit"
stream = "vitals"
channels = ["hr"]
params = { above = 120 }

[[alarms]]
condition = "tachycardia"
detector = "hr-high"
"""

COMMANDS = ["run", "check-config", "status", "retry-refused", "record", "demo"]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(CONFIG)
    return path


@pytest.mark.parametrize("how", [[], ["-c"], ["--config"]])
def test_check_config_takes_the_file_as_an_argument_or_an_option(
    config: Path, capsys: pytest.CaptureFixture[str], how: list[str]
) -> None:
    assert main(["check-config", *how, str(config)]) == 0
    assert capsys.readouterr().out.startswith(f"{config}: ok")


def test_check_config_without_a_file_or_with_two_says_so(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["check-config"], ["check-config", str(config), "-c", str(tmp_path / "other.toml")]):
        with pytest.raises(SystemExit) as ended:
            main(argv)
        assert ended.value.code == 2
        assert "check-config: error:" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["before", "after"])
def test_global_options_go_before_or_after_the_command(
    config: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    options = ["--log-json", "--log-level", "WARNING"]
    command = ["check-config", str(config)]
    assert main(options + command if where == "before" else command + options) == 0
    assert "ok" in capsys.readouterr().out


def help_of(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as ended:
        main([command, "--help"])
    assert ended.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_lists_the_global_options_and_explains_its_config(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = help_of(command, capsys)
    assert "--log-json" in text and "--log-level" in text
    # The option (and check-config's argument) is followed by words, not by the next option.
    described = re.search(r"--config CONFIG(, -c CONFIG)?\s+[a-z(]", text)
    assert described, text
    if command == "check-config":
        assert re.search(r"\n  config\s+[a-z]", text), text


def closed_pipe_run(*args: str) -> subprocess.CompletedProcess[str]:
    """The command with its stdout a pipe nobody reads any more (`| head -0`, but deterministic)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "agent.cli", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)


def test_a_closed_pipe_ends_check_config_quietly(config: Path) -> None:
    result = closed_pipe_run("check-config", str(config))
    assert (result.returncode, result.stderr) == (1, "")


def test_a_closed_pipe_ends_status_quietly(tmp_path: Path) -> None:
    (tmp_path / "last-heartbeat.json").write_text(json.dumps({"gateway": "gw-cli", "session": 1}))
    result = closed_pipe_run("status", "--state-dir", str(tmp_path), "--json")
    # No agent answers: the one line saying so (on stderr, before the report), then no traceback.
    (line,) = result.stderr.splitlines()
    assert result.returncode == 1 and line.startswith("edge-agent status: the agent is not running")
