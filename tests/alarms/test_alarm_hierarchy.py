"""The alarm hierarchy (`superseded_by`): a rule starts nothing on a stream while one above it is under way.

While the rule above is PENDING the lower one is held (it keeps its pending episode but cannot start);
once the rule above has started, the lower one's pending episode is abandoned and its hits are misses.

Two limit rules on one hr stream: `extreme` (hr above 150 for 10 s) supersedes `elevated` (hr above 100
for 5 s). Without the key, hr 160 raises `elevated` at 5 s, before `extreme` at 10 s: the lower, confusing
alarm first, as frequent_pvcs before atrial_fibrillation at an AF onset (examples/cardiac-monitoring.toml).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from alarm_drive import STREAM, T0, block, new_book, rule

from agent import state_journal
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
    assert book.state_of(StreamRef("a", "vitals")) is AlarmState.PENDING  # held, not abandoned
    events = feed(pipeline, hr("a", [160] * 3, start=8.0))
    assert starts(events) == [("a", "extreme", 10.0)]
    assert book.state_of(StreamRef("a", "vitals")) is AlarmState.NORMAL  # abandoned when extreme started
    events = feed(pipeline, hr("a", [160] * 27 + [70] * 20, start=11.0))
    assert starts(events) == []


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


# -- the review's findings (scripts of an outside review, 2026-11-30) ----------------------------------


def limit_rules(
    tmp_path: Path, detectors: list[tuple[str, float, float]], alarms: list[dict[str, Any]]
) -> AgentConfig:
    """One device `a`; `detectors` as (id, hr limit above, hop in s) on its vitals stream."""
    raw = {
        "gateway": {"id": "gw", "site": "s"},
        "mqtt": {"url": "mqtt://127.0.0.1:1883"},
        "outbox": {"path": "outbox.sqlite"},
        "devices": [{"id": "a", "kind": "wearable", "transport": "simulator"}],
        "detectors": [
            {
                "id": name,
                "type": "limit",
                "stream": "vitals",
                "channels": ["hr"],
                "params": {"above": above, "hop_s": hop_s},
            }
            for name, above, hop_s in detectors
        ],
        "alarms": alarms,
    }
    return parse_config(raw, base_dir=tmp_path)


def test_a_higher_rule_flickering_pending_does_not_restart_the_lowers_onset(tmp_path: Path) -> None:
    # hr 145 with a 1 s spike to 155 every 8 s (at 7, 15, ... s): extreme is PENDING on each spike and
    # NORMAL again at the next hop. elevated (10 s) keeps its onset through the spikes and starts at 10 s
    # (it never started before: each spike abandoned it and restarted its onset).
    values = [155 if k % 8 == 7 else 145 for k in range(180)]
    events = feed(Pipeline(hierarchy(tmp_path, lower_min_s=10.0), str), hr("a", values))
    assert starts(events) == [("a", "elevated", 10.0)]


def test_a_start_held_by_a_pending_higher_rule_comes_when_it_falls_back(tmp_path: Path) -> None:
    # elevated (7 s) would start at 7 s, when extreme is pending on a spike: held there, it starts at the
    # next hop, extreme NORMAL again, with its onset of 0 s.
    values = [155 if k == 7 else 145 for k in range(30)]
    events = feed(Pipeline(hierarchy(tmp_path, lower_min_s=7.0), str), hr("a", values))
    assert starts(events) == [("a", "elevated", 8.0)]
    (start,) = [e for e in events if e.phase is Phase.START]
    assert start.onset_time == T0


def test_a_higher_rule_without_verdicts_does_not_silence_the_lower(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # extreme goes pending, then its detector fails on every hop (no verdict): it stays PENDING. After its
    # own clear_after_s (5 s) without a verdict it no longer holds elevated back, which starts at 8 s
    # (last verdict at 2 s; 7 s is within 5 s of it).
    pipeline = Pipeline(hierarchy(tmp_path), str)
    events = feed(pipeline, hr("a", [160] * 3))

    def failing(block: object) -> object:
        raise RuntimeError("model file gone")

    (extreme,) = [d for d in pipeline.detectors if d.id == "hr-extreme"]
    monkeypatch.setattr(extreme, "score", failing)
    events += feed(pipeline, hr("a", [160] * 30, start=3.0))
    assert starts(events) == [("a", "elevated", 8.0)]


def test_a_chain_of_rules_is_transitive(tmp_path: Path) -> None:
    # elevated < extreme < critical, hr 200: critical's pending episode holds extreme back, and through
    # it elevated too; when critical starts both are abandoned. Only critical starts.
    alarms: list[dict[str, Any]] = [
        {"condition": "critical", "detector": "c", "min_duration_s": 10, "clear_after_s": 5},
        {
            "condition": "extreme",
            "detector": "e",
            "min_duration_s": 5,
            "clear_after_s": 5,
            "superseded_by": ["critical"],
        },
        {
            "condition": "elevated",
            "detector": "l",
            "min_duration_s": 3,
            "clear_after_s": 5,
            "superseded_by": ["extreme"],
        },
    ]
    config = limit_rules(tmp_path, [("c", 180, 1), ("e", 150, 1), ("l", 100, 1)], alarms)
    events = feed(Pipeline(config, str), hr("a", [200] * 30 + [120] * 20))
    assert starts(events)[0] == ("a", "critical", 10.0)
    # critical ends at 35 s, telling the hits held back of both rules below it; elevated starts at 38 s
    assert starts(events)[1:] == [("a", "elevated", 38.0)]
    (end,) = [e for e in events if e.phase is Phase.END and e.condition == "critical"]
    assert end.explanation.text.endswith(
        "; 30 extreme hop(s) during it not alarmed; 35 elevated hop(s) during it not alarmed"
    )


def test_the_hits_held_back_are_told_in_the_higher_rules_end(tmp_path: Path) -> None:
    # extreme pending 0-9 s, active 10-19 s, clearing 20-24 s, ends at 25 s (hr 120 from 20 s). elevated's
    # pending episode of 0-9 s (10 hits) is abandoned at 10 s, its hits of 10-24 s (15) count as misses:
    # 25 hops, told when extreme ends (once: not again when elevated starts at 30 s).
    events = feed(Pipeline(hierarchy(tmp_path), str), hr("a", [160] * 20 + [120] * 30))
    assert starts(events) == [("a", "extreme", 10.0), ("a", "elevated", 30.0)]
    (end,) = [e for e in events if e.phase is Phase.END and e.condition == "extreme"]
    assert end.explanation.text.endswith("; 25 elevated hop(s) during it not alarmed")
    (start,) = [e for e in events if e.phase is Phase.START and e.condition == "elevated"]
    assert "not alarmed" not in start.explanation.text


def test_hits_held_back_by_a_higher_rule_gone_stale_are_told_in_the_lower_rules_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # extreme starts at 10 s, then its detector fails from 15 s on: it stays ACTIVE without verdicts and
    # stops superseding after its clear_after_s (5 s; last verdict at 14 s): elevated's hits of 10-19 s
    # (10) and of its pending episode of 0-9 s (10) are told when it starts, at 25 s (pending from 20 s).
    pipeline = Pipeline(hierarchy(tmp_path), str)
    events = feed(pipeline, hr("a", [160] * 15))

    def failing(block: object) -> object:
        raise RuntimeError("model file gone")

    (extreme,) = [d for d in pipeline.detectors if d.id == "hr-extreme"]
    monkeypatch.setattr(extreme, "score", failing)
    events += feed(pipeline, hr("a", [160] * 15, start=15.0))
    assert starts(events) == [("a", "extreme", 10.0), ("a", "elevated", 25.0)]
    (start,) = [e for e in events if e.phase is Phase.START and e.condition == "elevated"]
    assert start.explanation.text.endswith("; 20 abnormal hop(s) during extreme not alarmed")


def test_hop_groups_are_stepped_higher_rules_first(tmp_path: Path) -> None:
    # extreme's detector hops every 2 s (at 1, 3, ... s), elevated's (no minimum duration) every 1 s, in
    # the group of an unrelated detector configured first. At 11 s both judge hr 160: extreme's group is
    # stepped first, so elevated is held back on that hop.
    alarms: list[dict[str, Any]] = [
        {"condition": "x", "detector": "x"},
        {"condition": "extreme", "detector": "e", "min_duration_s": 10, "clear_after_s": 5},
        {
            "condition": "elevated",
            "detector": "l",
            "min_duration_s": 0,
            "clear_after_s": 5,
            "superseded_by": ["extreme"],
        },
    ]
    config = limit_rules(tmp_path, [("x", 300, 1), ("e", 150, 2), ("l", 100, 1)], alarms)
    events = feed(Pipeline(config, str), hr("a", [70] * 11 + [160] * 19))
    assert starts(events) == [("a", "extreme", 21.0)]


def test_a_held_start_stays_pending_per_stream_in_one_update() -> None:
    # Two streams would start on their second hit; the first is held: it stays PENDING with its onset and
    # history, and starts at its next hit once no longer held.
    book = new_book(rule(confirm_n=2, confirm_m=2, min_duration_s=0.0))
    other = StreamRef("dev-b", "vitals")
    ok = np.ones(2, bool)
    book.update([STREAM, other], block([5.0, 5.0]), np.full(2, T0), ok, ["ok", "ok"])
    held = np.array([True, False])
    events = book.update([STREAM, other], block([5.0, 5.0]), np.full(2, T0 + 1), ok, ["ok", "ok"], held=held)
    assert [(e.device, e.phase) for e in events] == [("dev-b", Phase.START)]
    assert book.state_of(STREAM) is AlarmState.PENDING
    (start,) = book.update([STREAM], block([5.0]), np.array([T0 + 2]), np.ones(1, bool), ["ok"])
    assert (start.phase, start.onset_time, start.detection_time) == (Phase.START, T0, T0 + 2)


def test_a_condition_that_came_and_went_while_held_is_alarmed_when_the_higher_falls_back(
    tmp_path: Path,
) -> None:
    # extreme (1 of 20 hops, 10 s) goes pending on one hop at 155 and stays pending until 20 s, when its
    # hit has aged out; it never starts. elevated (5 s) met its conditions at 5 s (hr 120 until 8 s),
    # held; its own rule would have abandoned it at 9 s (hr 90). It starts, late, when extreme falls back
    # to NORMAL at 20 s, worded by its peak, and ends by its own rule (clear from 21 s on).
    alarms: list[dict[str, Any]] = [
        {"condition": "extreme", "detector": "e", "min_duration_s": 10, "confirm_m": 20},
        {
            "condition": "elevated",
            "detector": "l",
            "min_duration_s": 5,
            "clear_after_s": 5,
            "superseded_by": ["extreme"],
        },
    ]
    config = limit_rules(tmp_path, [("e", 150, 1), ("l", 100, 1)], alarms)
    events = feed(Pipeline(config, str), hr("a", [155] + [120] * 8 + [90] * 30))
    got = [(e.condition, e.phase, e.detection_time - T0) for e in events]
    assert got == [("elevated", Phase.START, 20.0), ("elevated", Phase.END, 20.0)]
    start = events[0]
    assert start.onset_time == T0
    assert (
        start.explanation.text
        == "peak hr 155 above limit 100, onset 20 s ago; held while extreme was pending"
    )
    assert events[1].end_time == T0 + 21.0


# -- across a restart ---------------------------------------------------------------------------------


def restarted(config: AgentConfig, before: Pipeline) -> Pipeline:
    """A new pipeline with `before`'s saved state, through JSON as the daemon writes it."""
    after = Pipeline(config, str)
    after.load_state(before.detector_state(), json.loads(json.dumps(before.alarm_state())))
    return after


@pytest.mark.parametrize("stop", [8, 15])
def test_the_hits_held_back_survive_a_restart(tmp_path: Path, stop: int) -> None:
    # As in test_the_hits_held_back_are_told_in_the_higher_rules_end, stopped at 8 s (both pending,
    # elevated's episode with 8 hits) or at 15 s (extreme active, 15 of elevated's hops held back): its
    # END still tells all 25. (Failed before the counts were saved: 17 or 10, those after the restart.)
    config = hierarchy(tmp_path)
    values = [160] * 20 + [120] * 30
    whole = feed(Pipeline(config, str), hr("a", values))
    before = Pipeline(config, str)
    events = feed(before, hr("a", values[:stop]))
    events += feed(restarted(config, before), hr("a", values[stop:], start=float(stop)))
    assert [(e.condition, e.phase, e.explanation.text) for e in events] == [
        (e.condition, e.phase, e.explanation.text) for e in whole
    ]
    (end,) = [e for e in events if e.phase is Phase.END and e.condition == "extreme"]
    assert end.explanation.text.endswith("; 25 elevated hop(s) during it not alarmed")


def test_a_start_held_by_the_hierarchy_survives_a_restart(tmp_path: Path) -> None:
    # As in test_a_condition_that_came_and_went_while_held_is_alarmed_when_the_higher_falls_back, stopped
    # at 12 s: elevated is due (held since 5 s, its own hops quiet from 9 s). It still starts when extreme
    # falls back at 20 s. (Failed before the due mark was saved: its quiet hops abandoned it, no event.)
    alarms: list[dict[str, Any]] = [
        {"condition": "extreme", "detector": "e", "min_duration_s": 10, "confirm_m": 20},
        {
            "condition": "elevated",
            "detector": "l",
            "min_duration_s": 5,
            "clear_after_s": 5,
            "superseded_by": ["extreme"],
        },
    ]
    config = limit_rules(tmp_path, [("e", 150, 1), ("l", 100, 1)], alarms)
    values = [155] + [120] * 8 + [90] * 30
    whole = feed(Pipeline(config, str), hr("a", values))
    before = Pipeline(config, str)
    events = feed(before, hr("a", values[:12]))
    events += feed(restarted(config, before), hr("a", values[12:], start=12.0))
    assert [(e.condition, e.phase, e.detection_time, e.explanation.text) for e in events] == [
        (e.condition, e.phase, e.detection_time, e.explanation.text) for e in whole
    ]
    assert [(e.condition, e.phase) for e in events] == [("elevated", Phase.START), ("elevated", Phase.END)]


def test_a_state_saved_before_the_hierarchys_marks_loads_as_nothing_held(tmp_path: Path) -> None:
    # The same stop at 15 s, its rows without the keys (an older agent's pipeline.json): it loads, and
    # extreme's END tells only the hops held back after the restart.
    config = hierarchy(tmp_path)
    before = Pipeline(config, str)
    feed(before, hr("a", [160] * 15))
    saved = before.alarm_state()
    rows = [row for book in saved.values() for row in book["streams"]]
    assert any("superseded_hits" in row for row in rows)
    for row in rows:
        for key in ("superseded_hits", "pending_hits", "due"):
            row.pop(key, None)
    after = Pipeline(config, str)
    after.load_state(before.detector_state(), saved)
    events = feed(after, hr("a", [160] * 5 + [120] * 30, start=15.0))
    (end,) = [e for e in events if e.phase is Phase.END and e.condition == "extreme"]
    assert end.explanation.text.endswith("; 10 elevated hop(s) during it not alarmed")


def test_hits_told_by_a_higher_end_are_not_told_again_after_a_crash(tmp_path: Path) -> None:
    # The full save at 15 s holds elevated's 15 held-back hops; extreme's END at 25 s tells all 25 and
    # zeroes them, committed with its journal note; the agent dies at 27 s, before the next full save.
    # Restored from that save with the notes laid over it, elevated's START (at 32 s: its pending hops of
    # 25-26 s were in no note) tells nothing. (Failed before the note named the told rows: "; 15 abnormal
    # hop(s) during extreme not alarmed" a second time.)
    config = hierarchy(tmp_path)
    journal = state_journal.EpisodeJournal(config.alarms, config.detectors)
    values = [160] * 20 + [120] * 30
    before = Pipeline(config, str)
    feed(before, hr("a", values[:15]))
    saved = json.loads(json.dumps({"alarms": before.alarm_state(), state_journal.JOURNAL: 0}))
    detectors = before.detector_state()
    events = feed(before, hr("a", values[15:27], start=15.0))
    (end,) = [e for e in events if e.phase is Phase.END]
    assert end.explanation.text.endswith("; 25 elevated hop(s) during it not alarmed")
    notes = [(1, journal.note(events)[1])]
    after = Pipeline(config, str)
    after.load_state(detectors, state_journal.saved_alarms(saved, notes))
    events = feed(after, hr("a", values[27:], start=27.0))
    (start,) = [e for e in events if e.phase is Phase.START]
    assert (start.condition, start.detection_time - T0) == ("elevated", 32.0)
    assert "not alarmed" not in start.explanation.text
