"""An episode restored under a changed judge (agent.alarms.book, `verdict_digest`): a reload that raised
a limit from 50 to 100 bpm while the rate stayed at 85 ended the tachycardia with an END that read as a
recovery ("peak hr 85 bpm above limit 50 bpm; ended after 113 s": crash/outage review, finding 3).
Now such an END says `end_cause` "rule_changed", until the changed rule finds the condition itself."""

from __future__ import annotations

import json
from typing import Any

from alarm_drive import T0, drive, new_book, rule

from agent.alarms import AlarmBook
from agent.events import EndCause, Phase
from agent.state_journal import EpisodeJournal, saved_alarms

RULE = rule(clear_after_s=2.0)


def open_episode() -> dict[str, Any]:
    """The saved state of a book whose episode is ACTIVE (score 2 against threshold 1), judge "old"."""
    book = AlarmBook(RULE, "gw", "cfg", ("x",), verdict_digest="old")
    (_, start), *_ = drive(book, [2.0, 2.0])
    assert start.phase is Phase.START
    return book.state()


def restored(digest: str, saved: dict[str, Any]) -> AlarmBook:
    book = AlarmBook(RULE, "gw", "cfg", ("x",), verdict_digest=digest)
    book.load_state(saved)
    return book


def test_an_end_at_the_changed_rules_first_verdicts_says_the_rule_changed() -> None:
    book = restored("new", open_episode())
    ((_, end),) = drive(book, [0.5] * 4, start=T0 + 10)
    assert end.phase is Phase.END and end.end_cause is EndCause.RULE_CHANGED
    assert end.to_payload()["end_cause"] == "rule_changed"
    assert "the rule changed (a reload or restart) and has not found the condition" in end.explanation.text


def test_the_same_rule_or_a_verdict_of_the_changed_one_ends_as_a_recovery() -> None:
    same = restored("old", open_episode())
    ((_, end),) = drive(same, [0.5] * 4, start=T0 + 10)
    assert end.end_cause is EndCause.CLEARED and end.to_payload()["end_cause"] == "cleared"
    assert "rule changed" not in end.explanation.text
    found = restored("new", open_episode())
    ((_, end),) = drive(found, [2.0, 0.5, 0.5, 0.5, 0.5], start=T0 + 10)  # found it, then cleared
    assert end.end_cause is EndCause.CLEARED


def test_the_mark_survives_a_save_and_a_restart_under_the_new_rule() -> None:
    book = restored("new", open_episode())
    drive(book, [0.5], start=T0 + 10)  # clearing, not ended
    saved = book.state()
    assert saved["verdict_digest"] == "new"
    assert saved["streams"][0]["episode"]["rule_changed"] is True
    again = restored("new", saved)
    ((_, end),) = drive(again, [0.5] * 4, start=T0 + 11)
    assert end.end_cause is EndCause.RULE_CHANGED


def test_a_state_saved_without_a_digest_marks_nothing() -> None:
    saved = open_episode()
    del saved["verdict_digest"]
    ((_, end),) = drive(restored("new", saved), [0.5] * 4, start=T0 + 10)
    assert end.end_cause is EndCause.CLEARED
    start_payload = drive(new_book(RULE), [2.0])[0][1].to_payload()
    assert start_payload["end_cause"] is None  # on an `end` only


def test_the_mark_survives_an_escalation_and_a_crash_before_the_next_save() -> None:
    """The escalation's journal row replaces the saved row after a crash: it must carry the mark too."""
    escalating = rule(clear_after_s=2.0, escalate_after_s=5.0)
    key = f"{escalating.detector}/{escalating.condition}"
    old = AlarmBook(escalating, "gw", "cfg", ("x",), verdict_digest="old")
    drive(old, [2.0, 2.0])
    book = AlarmBook(escalating, "gw", "cfg", ("x",), verdict_digest="new")
    book.load_state(old.state())
    saved = {"alarms": {key: book.state()}}  # the full save after the restart: marked
    # Hops the changed rule cannot judge (bad quality): neither found nor cleared, so it escalates.
    events = drive(book, [2.0] * 8, quality=[False] * 8, start=T0 + 10)
    ((_, update),) = events
    assert update.phase is Phase.UPDATE and update.rule_changed
    assert "rule_changed" not in update.to_payload()  # the back end learns it from the END's end_cause
    _, note = EpisodeJournal([escalating]).note([update])
    crashed = AlarmBook(escalating, "gw", "cfg", ("x",), verdict_digest="new")
    crashed.load_state(saved_alarms(saved, [(0, note)])[key])
    ((_, end),) = drive(crashed, [0.5] * 4, start=T0 + 20)
    assert end.phase is Phase.END and end.end_cause is EndCause.RULE_CHANGED


def test_an_end_by_a_changed_rule_starts_no_cooldown() -> None:
    """Ward review 2026-12-01: an END with end_cause rule_changed set the 60 s cooldown like a recovery,
    so a rule restored while the value was still bad started its HIGH alarm only after the cooldown."""
    cooling = rule(clear_after_s=2.0, cooldown_s=60.0, min_duration_s=3.0)
    old = AlarmBook(cooling, "gw", "cfg", ("x",), verdict_digest="old")
    drive(old, [2.0] * 4)
    book = AlarmBook(cooling, "gw", "cfg", ("x",), verdict_digest="new")
    book.load_state(old.state())
    ((_, end),) = drive(book, [0.5] * 3, start=T0 + 10)
    assert end.end_cause is EndCause.RULE_CHANGED and book.state()["streams"] == []  # no cooldown to keep
    key = f"{cooling.detector}/{cooling.condition}"
    (row,) = json.loads(EpisodeJournal([cooling]).note([end])[1])["rows"]
    assert row["key"] == key and row["cooldown_until"] is None and "last_episode" not in row
    # the condition found again 2 s later: a new episode after its min_duration, no recurrence, and it
    # ends after clear_after_s, not after a cooldown's worth of clear signal
    events = drive(book, [2.0] * 5 + [0.5] * 4, start=T0 + 13)
    assert [(k, e.phase) for k, e in events] == [(3, Phase.START), (7, Phase.END)]
    assert events[0][1].recurrence_of is None and events[0][1].id != end.id
