"""`tools.bench soak` on an agent it may not read: the agent clears its dumpable flag (no core dumps of
patient ids, agent.core_dumps), so /proc/<pid>/io and fd are root's only; the soak says so in one line
instead of a traceback (the diff review of 2026-12-01)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.bench import memory


def test_an_unreadable_agent_is_one_line_naming_the_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(pid: int) -> dict[str, int]:
        raise PermissionError(13, "Permission denied", f"/proc/{pid}/io")

    monkeypatch.setattr(memory, "_io", refused)
    with pytest.raises(SystemExit) as exit_:
        memory._sample(1)
    assert "not dumpable" in str(exit_.value) and "run the soak as root" in str(exit_.value)


def test_a_readable_process_is_sampled() -> None:
    sample = memory._sample(int(Path("/proc/self").resolve().name))
    assert sample["rss_mb"] > 0 and sample["threads"] >= 1 and sample["fds"] >= 3
