"""Where a simulated device's timeline starts in a session that restored alarm state (reload, restart).

The simulator stamps its readings `start_time` + simulated seconds, and a new session's simulator
starts its timeline again at the wall clock. At `speed` 60 a 50 s run stamps readings 50 min ahead of
its start, so after a restart the restored alarm rows of its streams held times up to 49 min ahead of
the new readings: a rule's cooldown, ending at a time still in the new stream's future, silenced every
replayed tachycardia and desaturation, with no log line (new-user review, M3). A real device's stream
does not go back across a restart: its readings carry the gateway clock, and a step of that clock while
no agent ran moves the saved timers (agent.restored_episodes.shift_timers). The simulator's own clock is
the one that starts over, so its new timeline starts at the newest instant its streams' restored rows
hold when that is ahead of the wall clock, and replays its episodes from there: the stream's time goes
on forward, as a real stream's does, and every timer keeps its meaning.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

# A saved row's instants in its stream's own time. Not `cooldown_until`: a bound set ahead of the
# stream, which the resumed timeline is to reach as the stream's time passes, not skip.
STREAM_INSTANTS = ("onset", "detection", "clear_since", "last_hop")


def newest_instants(alarms: Mapping[str, Any], skip: Collection[str] = ()) -> dict[str, float]:
    """Device pseudonym -> the newest stream instant of its rows in saved alarm state `alarms`
    (`Pipeline.alarm_state()` keys), leaving out the books of keys in `skip` (those kept in gateway time)."""
    newest: dict[str, float] = {}
    for key, book in alarms.items():
        if key in skip or not isinstance(book, Mapping) or not isinstance(book.get("streams"), list):
            continue
        for row in book["streams"]:
            if not isinstance(row, Mapping) or not isinstance(row.get("device"), str):
                continue
            for name in STREAM_INSTANTS:
                value = row.get(name)
                if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                    continue
                device = row["device"]
                newest[device] = max(newest.get(device, -math.inf), float(value))
    return newest
