"""The alarm hierarchy (`superseded_by`): a rule starts nothing on a stream while one above it is under way.

Two limit rules on one hr stream: `extreme` (hr above 150 for 10 s) supersedes `elevated` (hr above 100
for 5 s). Without the key, hr 160 raises `elevated` at 5 s, before `extreme` at 10 s: the lower, confusing
alarm first, as frequent_pvcs before atrial_fibrillation at an AF onset (examples/cardiac-monitoring.toml).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from alarm_drive import STREAM, T0, block, new_book, rule

from agent.alarms import AlarmState, StreamRef
from agent.config import AgentConfig, parse_config
from agent.events import AlarmEvent, Phase
from agent.pipeline import Pipeline
from agent.readings import Reading


def hierarchy(
    tmp_path: Path, *, superseded: bool = True, lower_first: bool = False, lower_min_s: float = 5.0
) -> AgentConfig:
    extreme = {
        "id": "hr-extreme",
        "type": "limit",
        "stream": "vitals",
        "channels": ["hr"],
        "params": {"above": 150},
    }
    elevated = {
        "id": "hr-elevated",
        "type": "limit",
        "stream": "vitals",
        "channels": ["hr"],
        "params": {"above": 100},
    }
    above = {"condition": "extreme", "detector": "hr-extreme", "min_duration_s": 10, "clear_after_s": 5}
    below: dict[str, Any] = {
        "condition": "elevated",
        "detector": "hr-elevated",
        "min_duration_s": lower_min_s,
        "clear_after_s": 5,
    }
    if superseded:
        below["superseded_by"] = ["extreme"]
    detectors = [elevated, extreme] if lower_first else [extreme, elevated]
    alarms = [below, above] if lower_first else [above, below]
    raw = {
        "gateway": {"id": "gw", "site": "s"},
        "mqtt": {"url": "mqtt://127.0.0.1:1883"},
        "outbox": {"path": "outbox.sqlite"},
        "devices": [{"id": d, "kind": "wearable", "transport": "simulator"} for d in ("a", "b")],
        "detectors": detectors,
        "alarms": alarms,
    }
    return parse_config(raw, base_dir=tmp_path)


def hr(device: str, values: Sequence[float], start: float = 0.0) -> list[Reading]:
    """One hr reading a second from `start` s."""
    return [
        Reading(f"{device}/vitals", ("hr",), np.array([[v]]), T0 + start + k, start + k, 1.0)
        for k, v in enumerate(values)
    ]


def feed(pipeline: Pipeline, *devices: list[Reading]) -> list[AlarmEvent]:
    """The devices' readings interleaved second by second, as a gateway receives them."""
    readings = sorted((r for rs in devices for r in rs), key=lambda r: r.wall_time)
    return [e for r in readings for e in pipeline.ingest([r])]


def starts(events: list[AlarmEvent]) -> list[tuple[str, str, float]]:
    return [(e.device, e.condition, e.detection_time - T0) for e in events if e.phase is Phase.START]


def test_without_the_key_the_lower_alarm_starts_first(tmp_path: Path) -> None:
    events = feed(Pipeline(hierarchy(tmp_path, superseded=False), str), hr("a", [160] * 20))
    assert starts(events) == [("a", "elevated", 5.0), ("a", "extreme", 10.0)]


def test_the_lower_rule_starts_nothing_while_the_higher_is_pending_or_active(tmp_path: Path) -> None:
    pipeline = Pipeline(hierarchy(tmp_path), str)
    book = pipeline._books["hr-elevated/elevated"]
    events = feed(pipeline, hr("a", [160] * 8))
    assert events == []  # 8 s: extreme is pending, elevated would have started at 5 s
    assert book.state_of(StreamRef("a", "vitals")) is AlarmState.NORMAL
    events = feed(pipeline, hr("a", [160] * 30 + [70] * 20, start=8.0))
    assert starts(events) == [("a", "extreme", 10.0)]


def test_the_order_of_the_configuration_does_not_matter(tmp_path: Path) -> None:
    # The lower rule configured first is still stepped after the higher one, so with no minimum
    # duration it does not start on the very hop the higher rule goes pending.
    pipeline = Pipeline(hierarchy(tmp_path, lower_first=True, lower_min_s=0.0), str)
    assert starts(feed(pipeline, hr("a", [160] * 12))) == [("a", "extreme", 10.0)]


def test_it_does_on_another_stream(tmp_path: Path) -> None:
    # Device b's hr 120 is elevated only; device a's extreme does not hold it back.
    events = feed(Pipeline(hierarchy(tmp_path), str), hr("a", [160] * 20), hr("b", [120] * 20))
    assert sorted(starts(events)) == [("a", "extreme", 10.0), ("b", "elevated", 5.0)]


def test_it_starts_again_once_the_higher_episode_has_ended(tmp_path: Path) -> None:
    # extreme ends 5 s after hr falls below 150 (at 30 s: end at 35 s); elevated starts 5 s after that
    # end, its hits under the higher episode having counted for nothing.
    events = feed(Pipeline(hierarchy(tmp_path), str), hr("a", [160] * 30 + [120] * 30))
    assert starts(events) == [("a", "extreme", 10.0), ("a", "elevated", 40.0)]


def test_an_episode_already_started_goes_on_and_ends_by_its_own_rules(tmp_path: Path) -> None:
    events = feed(Pipeline(hierarchy(tmp_path), str), hr("a", [120] * 10 + [160] * 20 + [70] * 20))
    got = [(e.condition, e.phase, e.detection_time - T0) for e in events]
    assert got[:2] == [("elevated", Phase.START, 5.0), ("extreme", Phase.START, 20.0)]
    ends = {e.condition: e.end_time for e in events if e.phase is Phase.END}
    assert ends == {"elevated": T0 + 30.0, "extreme": T0 + 30.0}  # both at the first normal hop


def test_a_restored_higher_episode_still_supersedes(tmp_path: Path) -> None:
    # Restored active, extreme clears from 15 s (hr 120) and ends at 20 s; only then can elevated go
    # pending (20 s) and start (25 s). Not restored, elevated would start at 20 s.
    config = hierarchy(tmp_path)
    before = Pipeline(config, str)
    assert starts(feed(before, hr("a", [160] * 15))) == [("a", "extreme", 10.0)]
    after = Pipeline(config, str)
    after.load_state(before.detector_state(), before.alarm_state())
    events = feed(after, hr("a", [120] * 15, start=15.0))
    assert [(e.condition, e.phase) for e in events] == [("extreme", Phase.END), ("elevated", Phase.START)]
    assert starts(events) == [("a", "elevated", 25.0)]


def test_a_superseded_pending_episode_is_abandoned_per_stream_in_one_update() -> None:
    # Two streams pending with two of three hits; only the first is superseded: it is abandoned and its
    # hit counts as a miss, the other confirms.
    book = new_book(rule(confirm_n=3, confirm_m=3, min_duration_s=0.0))
    other = StreamRef("dev-b", "vitals")
    for k in range(2):
        book.update([STREAM, other], block([5.0, 5.0]), np.full(2, T0 + k), np.ones(2, bool), ["ok", "ok"])
    assert book.state_of(STREAM) is book.state_of(other) is AlarmState.PENDING
    events = book.update(
        [STREAM, other],
        block([5.0, 5.0]),
        np.full(2, T0 + 2),
        np.ones(2, bool),
        ["ok", "ok"],
        superseded=np.array([True, False]),
    )
    assert [(e.device, e.phase) for e in events] == [("dev-b", Phase.START)]
    assert book.state_of(STREAM) is AlarmState.NORMAL
    # The next hits start over: a new pending episode, two more hits needed after this one.
    book.update([STREAM], block([5.0]), np.array([T0 + 3]), np.ones(1, bool), ["ok"])
    assert book.state_of(STREAM) is AlarmState.PENDING
