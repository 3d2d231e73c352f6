"""`[outbox] encryption_key_file`: check-config names the key path for a wrong type, a key file
readable by others or one that holds no key (exit code 2, one line each); an absent file is fine
(the agent creates it), and `run` refuses a loose key file before starting anything."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import load_config

CONFIG = """
[gateway]
id = "gw-1"
site = "ward-3"
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:1883"

[outbox]
path = "state/outbox.sqlite"
{key_line}

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
params = {{ above = 120 }}

[[alarms]]
condition = "tachycardia"
detector = "hr-high"
"""


def write(tmp_path: Path, key_line: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(CONFIG.format(key_line=key_line))
    return path


def check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["check-config", str(path)])
    return code, [line for line in capsys.readouterr().err.splitlines() if line]


def key_file(tmp_path: Path, data: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "outbox.key"
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_key_file_path_is_resolved_from_the_config_folder(tmp_path: Path) -> None:
    key_file(tmp_path, base64.b64encode(os.urandom(32)) + b"\n")
    config = load_config(write(tmp_path, 'encryption_key_file = "outbox.key"'))
    assert config.outbox.encryption_key_file == (tmp_path / "outbox.key").resolve()
    assert load_config(write(tmp_path, "")).outbox.encryption_key_file is None


def test_absent_key_file_passes_because_the_agent_creates_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = check(write(tmp_path, 'encryption_key_file = "state/outbox.key"'), capsys)
    assert (code, lines) == (0, [])
    assert not (tmp_path / "state").exists()  # check-config creates nothing


@pytest.mark.parametrize(
    ("key_line", "make_key", "expected"),
    [
        pytest.param(
            "encryption_key_file = 5",
            None,
            "outbox.encryption_key_file: expected a string, got 5",
            id="wrong-type",
        ),
        pytest.param(
            'encryption_key_file = "outbox.key"',
            (os.urandom(32), 0o644),
            "outbox.encryption_key_file: {key} is readable by group or others (mode 644); chmod 600 it",
            id="loose-mode",
        ),
        pytest.param(
            'encryption_key_file = "outbox.key"',
            (b"0123456789abcdef\n", 0o600),
            "outbox.encryption_key_file: {key} holds no AES-256 key: expected 32 raw bytes, "
            "64 hex digits or 44 base64 characters, found 17 bytes",
            id="not-a-key",
        ),
        pytest.param(
            'encryption_key = "outbox.key"',
            None,
            "outbox.encryption_key: unknown key (did you mean 'encryption_key_file'?)",
            id="typo",
        ),
    ],
)
def test_bad_key_setting_is_one_line_naming_the_key_path(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    key_line: str,
    make_key: tuple[bytes, int] | None,
    expected: str,
) -> None:
    key = key_file(tmp_path, *make_key) if make_key is not None else tmp_path / "outbox.key"
    path = write(tmp_path, key_line)
    code, lines = check(path, capsys)
    assert code == 2
    assert lines == [f"{path}: {expected.format(key=key)}"]


def test_run_refuses_a_loose_key_file_before_starting_anything(tmp_path: Path) -> None:
    key = key_file(tmp_path, os.urandom(32), 0o640)
    path = write(tmp_path, 'encryption_key_file = "outbox.key"')
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"{path}: outbox.encryption_key_file: {key} is readable by group or others (mode 640); chmod 600 it"
    ]
    assert not (tmp_path / "state").exists()
