"""`check-config` warns (on stderr, still "ok", exit 0) when `outbox.max_bytes` is more than the outbox's
disk has free, less the reserve kept for alarms: before, 64 MiB on a 2 MiB card was "ok" without a word,
and an outage's heartbeats then filled the card (audit audoff, finding 3)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_check_config import GOOD, write

from agent.cli import main

HUGE = 1 << 60  # more than any disk has free


def test_a_max_bytes_the_disk_cannot_hold_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = GOOD.replace('path = "state/outbox.sqlite"', f'path = "state/outbox.sqlite"\nmax_bytes = {HUGE}')
    assert main(["check-config", str(write(tmp_path, text))]) == 0
    captured = capsys.readouterr()
    assert ": ok" in captured.out
    [warning] = [line for line in captured.err.splitlines() if line]
    assert "warning: outbox.max_bytes" in warning and f"the disk of {tmp_path}" in warning
    assert "kept for alarm events" in warning


def test_a_max_bytes_within_the_free_space_is_not(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = GOOD.replace('path = "state/outbox.sqlite"', 'path = "state/outbox.sqlite"\nmax_bytes = 65536')
    assert main(["check-config", str(write(tmp_path, text))]) == 0
    assert capsys.readouterr().err == ""
