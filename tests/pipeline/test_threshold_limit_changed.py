"""A gateway alarm whose limit comes from the configuration (`ThresholdAlarm(configured_limit=True)`):
an episode restored under another limit that ends before the new limit finds the condition ends as
`rule_changed`, with no cooldown before the next episode; an unchanged limit ends it as ever."""

from __future__ import annotations

import json
from typing import Any

from agent.alarms import StreamRef
from agent.events import EndCause, Phase, Priority
from agent.pipeline.technical import ThresholdAlarm

REF = StreamRef("gw-pseudonym", "outbox")


def restored(state: dict[str, Any], configured_limit: bool = True) -> ThresholdAlarm:
    alarm = ThresholdAlarm("outbox_filling", Priority.HIGH, "gw", "cfg", configured_limit=configured_limit)
    alarm.load_state(json.loads(json.dumps(state)))
    return alarm


def filling_at(limit: float) -> dict[str, Any]:
    first = ThresholdAlarm("outbox_filling", Priority.HIGH, "gw", "cfg", configured_limit=True)
    (start,) = first.check([REF], [0.85], [limit], 1_000.0)
    assert start.phase is Phase.START
    return first.state()


def test_a_raised_warn_level_ends_the_episode_as_a_rule_change_and_a_new_one_starts_at_once() -> None:
    alarm = restored(filling_at(0.8))
    (end,) = alarm.check([REF], [0.85], [0.9], 1_010.0)
    assert (end.phase, end.end_cause) == (Phase.END, EndCause.RULE_CHANGED)
    assert end.explanation.text.startswith(
        "ended without a recovery: alarm events waiting fill 85% of the outbox (warning level 90%)"
    )
    (again,) = alarm.check([REF], [0.95], [0.9], 1_012.0)  # within 30 s: no cooldown after such an END
    assert again.phase is Phase.START and again.id != end.id and again.recurrence_of is None


def test_an_unchanged_limit_ends_the_episode_as_cleared_with_its_cooldown() -> None:
    alarm = restored(filling_at(0.8))
    (end,) = alarm.check([REF], [0.5], [0.8], 1_010.0)
    assert (end.end_cause, end.explanation.text[:8]) == (EndCause.CLEARED, "cleared:")
    (again,) = alarm.check([REF], [0.95], [0.8], 1_012.0)  # a recurrence within the cooldown: alarmed
    assert again.phase is Phase.START and again.recurrence_of == end.id != again.id


def test_a_limit_not_from_the_configuration_is_not_compared() -> None:
    alarm = restored(filling_at(0.8), configured_limit=False)
    (end,) = alarm.check([REF], [0.85], [0.9], 1_010.0)
    assert end.end_cause is EndCause.CLEARED
