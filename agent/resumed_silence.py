"""How long a silence a restored `device_lost` or `profile_silent` episode stands for.

Both alarms measure a silence the session counts itself (`agent.health`), from the last reading (or
BLE notification) it saw, or from its own start. A reload or a restart makes a new session whose count
began at 0: the restored episode's next check read "no silence" and ended it, "cleared: data again
after a silence of 31 s", though nothing had arrived, and a new START followed a `lost_after_s` later
(new-user review, S2). The session now goes on counting from the silence the saved row stands for: it
began a limit's worth before the episode's onset (the check that found it at its limit), so at `now` it
is `now - onset + limit`, or the longest silence the row measured if that is more (a check that came
late). After a stop this counts the downtime too: no agent heard the device then either.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from agent.alarms import StreamRef


def open_silences(book: Any, now: float) -> Iterator[tuple[StreamRef, float]]:
    """(stream, seconds of silence at `now`) of each row of saved book `book` (`ThresholdAlarm.state()`)
    with an open episode; rows it cannot read are left out (the book's own load_state names them)."""
    if not isinstance(book, Mapping) or not isinstance(book.get("streams"), list):
        return
    for row in book["streams"]:
        if not isinstance(row, Mapping) or not isinstance(row.get("episode"), Mapping):
            continue
        onset, limit = _number(row.get("onset")), _number(row.get("peak_limit"))
        if onset is None or limit is None:
            continue
        silent = max(now - onset + limit, _number(row.get("peak_observed")) or 0.0)
        try:
            yield StreamRef(str(row["device"]), str(row["stream"])), max(0.0, silent)
        except KeyError:
            continue


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)
