"""LinkTrouble: when a source's failed attempts are worth a log line (first, changed cause, reminder)."""

from __future__ import annotations

from agent.link_trouble import REMIND_S, LinkTrouble, Tell


def test_a_cause_is_told_when_new_changed_or_due_for_a_reminder_and_recovery_counts_the_attempts() -> None:
    now = [0.0]
    trouble = LinkTrouble(clock=lambda: now[0])
    assert trouble.failed("no such device file") is Tell.NEW
    now[0] = REMIND_S - 1
    assert [trouble.failed("no such device file") for _ in range(3)] == [Tell.QUIET] * 3
    now[0] = REMIND_S
    assert trouble.failed("no such device file") is Tell.REMINDER
    assert trouble.failed("permission denied") is Tell.NEW  # another cause: at once
    assert trouble.failed("permission denied") is Tell.QUIET
    now[0] = REMIND_S + 30
    assert trouble.cause == "permission denied"
    assert trouble.recovered() == " (after 7 failed attempt(s) over 630 s)"
    assert trouble.cause is None
    assert trouble.recovered() == ""
    assert trouble.failed("permission denied") is Tell.NEW  # a new outage is told again
