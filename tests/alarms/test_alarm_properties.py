"""Invariants of AlarmBook event streams for arbitrary score series and rules (hypothesis)."""

from __future__ import annotations

import math

from alarm_drive import T0, drive, new_book, rule
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.events import Phase, Priority

scores = st.lists(
    st.one_of(st.floats(-2.0, 4.0), st.just(math.nan)),
    min_size=1,
    max_size=120,
)
rules = st.builds(
    rule,
    min_duration_s=st.sampled_from([0.0, 2.0, 5.0]),
    clear_after_s=st.sampled_from([0.0, 3.0]),
    cooldown_s=st.sampled_from([0.0, 4.0, 20.0]),
    hysteresis=st.sampled_from([0.0, 0.2]),
    confirm_n=st.just(2),
    confirm_m=st.sampled_from([2, 4]),
    escalate_after_s=st.sampled_from([None, 6.0]),
    priority=st.sampled_from(list(Priority)),
)


@settings(max_examples=200, deadline=None)
@given(series=scores, r=rules, quality=st.lists(st.booleans(), min_size=120, max_size=120))
def test_episodes_are_well_formed(series: list[float], r: object, quality: list[bool]) -> None:
    book = new_book(r)  # type: ignore[arg-type]
    events = [e for _, e in drive(book, series, quality=quality)]
    open_id: str | None = None
    last_end = -math.inf
    seen_ids: set[str] = set()
    for e in events:
        if e.phase is Phase.START:
            assert open_id is None and e.id not in seen_ids and e.seq == 0
            assert e.onset_time <= e.detection_time
            assert e.detection_time - e.onset_time >= r.min_duration_s - 1e-6  # type: ignore[attr-defined]
            assert e.onset_time >= last_end + r.cooldown_s - 1e-6  # type: ignore[attr-defined]
            hop = round(e.detection_time - T0)
            assert quality[hop] and series[hop] > 1.0  # confirmed on a good-quality hit
            open_id, seq = e.id, 0
            seen_ids.add(e.id)
        else:
            assert e.id == open_id and e.seq == seq + 1
            seq = e.seq
            if e.phase is Phase.END:
                assert e.end_time is not None and e.detection_time <= e.end_time + 1e-6
                last_end, open_id = e.end_time, None
            else:
                assert e.priority.rank < r.priority.rank  # type: ignore[attr-defined]
    assert book.active_count() == (0 if open_id is None else 1)
    assert sum(e.phase is Phase.UPDATE for e in events) <= len(seen_ids)
