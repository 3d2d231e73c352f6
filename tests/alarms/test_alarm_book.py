"""AlarmBook: the transition table driven by score series, one feature per test."""

from __future__ import annotations

import json

import numpy as np
import pytest
from alarm_drive import STREAM, T0, block, drive, new_book, rule

from agent.alarms import AlarmBook, AlarmState, StreamRef
from agent.alarms.machine import TABLE, Action, table_markdown
from agent.errors import ConfigError
from agent.events import AlarmKind, Phase, Priority
from agent.ids import uuid7_time_ms

HI, LO = 5.0, 0.0


@pytest.mark.parametrize(
    ("series", "states"),
    [
        # min_duration 2 s, clear_after 2 s: NORMAL -> PENDING -> ACTIVE -> CLEARING -> NORMAL
        (
            [LO, HI, HI, HI, LO, LO, LO],
            ["NORMAL", "PENDING", "PENDING", "ACTIVE", "CLEARING", "CLEARING", "NORMAL"],
        ),
        # a short burst never confirms: PENDING falls back to NORMAL
        ([HI, HI, LO, LO], ["PENDING", "PENDING", "NORMAL", "NORMAL"]),
        # a dip while clearing goes back to ACTIVE
        (
            [HI, HI, HI, LO, HI, LO, LO, LO],
            ["PENDING", "PENDING", "ACTIVE", "CLEARING", "ACTIVE", "CLEARING", "CLEARING", "NORMAL"],
        ),
    ],
)
def test_transitions_follow_the_table(series: list[float], states: list[str]) -> None:
    book = new_book(rule(min_duration_s=2.0, clear_after_s=2.0))
    seen = []
    for k, value in enumerate(series):
        drive(book, [value], start=T0 + k)
        seen.append(book.state_of(STREAM).name)
    assert seen == states


def test_one_clean_episode_gives_one_start_and_one_end_with_the_same_id() -> None:
    book = new_book(rule(min_duration_s=3.0, clear_after_s=2.0))
    events = drive(book, [LO] * 5 + [HI] * 10 + [LO] * 10)
    phases = [e.phase for _, e in events]
    assert phases == [Phase.START, Phase.END]
    (k0, start), (k1, end) = events
    assert start.id == end.id and [start.seq, end.seq] == [0, 1]
    assert uuid7_time_ms(__import__("uuid").UUID(start.id)) > 0
    assert start.onset_time == T0 + 5 and start.detection_time == T0 + 8 and k0 == 8
    assert end.end_time == T0 + 15 and k1 == 17  # condition ended at the first clear hop, confirmed 2 s later
    assert end.onset_time == start.onset_time
    assert "for 3 s" in start.explanation.text and "ended after 10 s" in end.explanation.text
    json.loads(start.to_json())
    assert book.active_count() == 0


def test_an_episode_never_ends_before_its_onset_when_data_times_go_back() -> None:
    # A reload restarts a simulator's timeline; a device may reset its clock: the carried episode's
    # clearing readings then carry times before its onset.
    book = new_book(rule())
    (_, start), *_ = drive(book, [HI] * 3, start=T0 + 600)
    (_, end), *_ = drive(book, [LO] * 3, start=T0)
    assert end.phase is Phase.END and end.id == start.id
    assert end.end_time is not None and end.end_time >= end.onset_time == T0 + 600
    assert "ended after -" not in end.explanation.text


def test_a_start_on_its_first_hop_does_not_say_for_0_s() -> None:
    (_, start), *_ = drive(new_book(rule()), [HI])
    assert start.phase is Phase.START and " for 0 s" not in start.explanation.text


def test_min_duration_delays_start_by_that_long() -> None:
    for min_duration in (0.0, 4.0, 9.0):
        book = new_book(rule(min_duration_s=min_duration))
        events = drive(book, [HI] * 20)
        assert [k for k, _ in events] == [int(min_duration)]


def test_n_of_m_confirms_on_the_nth_hit_and_tolerates_gaps() -> None:
    book = new_book(rule(confirm_n=3, confirm_m=5))
    events = drive(book, [HI, LO, HI, LO, HI, HI])
    assert [(k, e.phase) for k, e in events] == [(4, Phase.START)]
    book = new_book(rule(confirm_n=3, confirm_m=5))
    assert drive(book, [HI, LO, LO, LO, HI, LO, LO, LO, HI, LO]) == []  # never 3 within 5


def test_hysteresis_prevents_chattering_around_the_threshold() -> None:
    rng = np.random.default_rng(7)
    # the score hovers around the threshold 10 after one clear rise: +-0.5 noise
    series = list(np.r_[np.full(5, 2.0), 10.0 + rng.uniform(-0.5, 0.5, 200), np.full(5, 2.0)])

    def episodes(h: float) -> int:
        book = new_book(rule(hysteresis=h))
        return sum(e.phase is Phase.START for _, e in drive(book, series, threshold=10.0))

    assert episodes(0.0) > 20  # without hysteresis it chatters
    assert episodes(0.1) == 1  # clearing needs <= 9, never reached until the end


def test_hysteresis_with_threshold_zero_is_an_absolute_margin() -> None:
    series = [1.0, -0.5, 0.5, -0.5, 0.5, -3.0]
    book = new_book(rule(hysteresis=2.0))
    events = drive(book, series, threshold=0.0)
    assert [(k, e.phase) for k, e in events] == [(0, Phase.START), (5, Phase.END)]


def test_a_restart_within_the_cooldown_is_a_recurrence_that_clears_after_the_cooldown() -> None:
    series = [HI, LO, HI, HI, LO, LO, LO, LO, LO, LO, LO, LO, LO, LO, LO, HI]
    book = new_book(rule(cooldown_s=9.0))
    events = drive(book, series)
    # the hit at 2 is a recurrence: alarmed at once (min_duration 0), open until 9 s clear (hops 4..13)
    assert [(k, e.phase) for k, e in events] == [
        (0, Phase.START),
        (1, Phase.END),
        (2, Phase.START),
        (13, Phase.END),
        (15, Phase.START),
    ]
    first, end, again, again_end, later = (e for _, e in events)
    assert first.recurrence_of is None and end.recurrence_of is None
    assert again.recurrence_of == again_end.recurrence_of == first.id != again.id
    assert again.to_payload()["recurrence_of"] == first.id and first.to_payload()["recurrence_of"] is None
    assert "; recurred 1 s after the previous episode ended (within cooldown_s)" in again.explanation.text
    assert "; a recurrence: clear for 9 s (cooldown_s) before its end" in again_end.explanation.text
    # the recurrence ended at 4 (its first clear hop), told at 13: its own cooldown ran out meanwhile
    assert later.recurrence_of is None


def test_escalation_emits_one_update_with_a_higher_priority() -> None:
    book = new_book(rule(priority=Priority.LOW, escalate_after_s=5.0))
    events = drive(book, [HI] * 30 + [LO])
    assert [(k, e.phase, e.priority, e.seq) for k, e in events] == [
        (0, Phase.START, Priority.LOW, 0),
        (5, Phase.UPDATE, Priority.MEDIUM, 1),
        (30, Phase.END, Priority.MEDIUM, 2),
    ]
    assert len({e.id for _, e in events}) == 1
    book = new_book(rule(priority=Priority.HIGH, escalate_after_s=5.0))
    assert [e.phase for _, e in drive(book, [HI] * 30)] == [Phase.START]  # nothing above HIGH


def test_an_escalation_inside_the_hysteresis_band_quotes_the_episodes_peak() -> None:
    # 1.5 at the start, then 0.95: below the threshold 1 but above the clear level 0.9, still active
    book = new_book(rule(priority=Priority.LOW, escalate_after_s=5.0, hysteresis=0.1))
    _, (_, update) = drive(book, [1.5] + [0.95] * 6)
    assert update.phase is Phase.UPDATE and update.value == 1.5
    assert update.explanation.text.startswith("peak ") and "1.5" in update.explanation.text


def test_poor_quality_blocks_a_physiological_start_but_not_a_technical_one() -> None:
    quality = [False] * 10 + [True] * 5
    book = new_book(rule(min_duration_s=2.0))
    events = drive(book, [HI] * 15, quality=quality)
    assert [(k, e.phase) for k, e in events] == [(12, Phase.START)]
    assert events[0][1].onset_time == T0 + 10
    # a poor hop in PENDING neither counts towards confirmation nor abandons the episode
    book = new_book(rule(min_duration_s=2.0))
    events = drive(book, [HI] * 6, quality=[True, False, True, True, True, True])
    assert [k for k, _ in events] == [2] and events[0][1].onset_time == T0
    book = new_book(rule(min_duration_s=2.0, kind=AlarmKind.TECHNICAL))
    assert [k for k, _ in drive(book, [HI] * 15, quality=quality)] == [2]


def test_many_streams_step_independently_in_one_call() -> None:
    book = new_book(rule())
    streams = [StreamRef(f"dev-{i}", "vitals") for i in range(50)]
    ok = np.ones(50, dtype=bool)
    first = book.update(
        streams, block([HI if i % 2 else LO for i in range(50)]), np.full(50, T0), ok, ["ok"] * 50
    )
    assert sorted(e.device for e in first) == sorted(f"dev-{i}" for i in range(1, 50, 2))
    assert book.active_count() == 25
    # a call with only some streams leaves the others alone
    second = book.update(streams[:2], block([HI, LO]), np.full(2, T0 + 1), ok[:2], ["ok"] * 2)
    assert [(e.device, e.phase) for e in second] == [("dev-0", Phase.START), ("dev-1", Phase.END)]
    assert book.active_count() == 25
    ends = book.close_all(T0 + 2)
    assert len(ends) == 25 and all(e.phase is Phase.END and e.end_time == T0 + 2 for e in ends)
    assert book.active_count() == 0


def test_state_round_trip_keeps_the_episode_id_across_a_restart() -> None:
    r = rule(clear_after_s=3.0, escalate_after_s=10.0)
    book = new_book(r)
    ((_, start),) = drive(book, [HI] * 4)
    saved = json.loads(json.dumps(book.state()))
    restarted = new_book(r)
    restarted.load_state(saved)
    assert restarted.active_count() == 1
    events = drive(restarted, [HI] * 8 + [LO] * 4, start=T0 + 4)
    assert [(e.phase, e.seq, e.id) for _, e in events] == [
        (Phase.UPDATE, 1, start.id),
        (Phase.END, 2, start.id),
    ]
    assert events[0][0] == 6  # escalation due 10 s after the original detection at T0


def test_a_hop_without_a_verdict_neither_starts_nor_ends_an_episode() -> None:
    book = new_book(rule(clear_after_s=2.0))
    events = drive(book, [np.nan, HI, np.nan, np.nan, np.nan, np.nan, LO, LO, LO])
    assert [(k, e.phase) for k, e in events] == [(1, Phase.START), (8, Phase.END)]
    assert events[1][1].end_time == T0 + 6  # the first hop seen clear, not the first without a verdict


def test_lost_contact_holds_an_active_alarm_which_goes_on_under_its_id() -> None:
    # A tachycardia, 20 s of no contact (the gate blanks the values, quality not OK), contact back with
    # the rate still high: one episode, no END while nothing could be measured (clinical audit, 1).
    book = new_book(rule(min_duration_s=10.0, clear_after_s=10.0, cooldown_s=60.0))
    series = [HI] * 40 + [np.nan] * 20 + [HI] * 30
    quality = [True] * 40 + [False] * 20 + [True] * 30
    events = drive(book, series, quality=quality)
    assert [e.phase for _, e in events] == [Phase.START]
    assert book.state_of(STREAM) is AlarmState.ACTIVE


def test_lost_contact_while_clearing_ends_only_on_a_clear_verdict() -> None:
    book = new_book(rule(clear_after_s=5.0))
    events = drive(book, [HI] * 3 + [LO] * 2 + [np.nan] * 10 + [HI] * 2 + [LO] * 6)
    # clearing at hop 3, unmeasured 5..14 (past clear_after_s: no END without a verdict), abnormal
    # again at 15 (back to ACTIVE), clear from 17: END at 22, the same episode
    assert [(k, e.phase) for k, e in events] == [(0, Phase.START), (22, Phase.END)]
    assert events[0][1].id == events[1][1].id and events[1][1].end_time == T0 + 17


def test_bad_rules_are_config_errors_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"alarms\.high_score\.confirm_n"):
        new_book(rule(confirm_n=3, confirm_m=2))
    with pytest.raises(ConfigError, match=r"alarms\.high_score\.cooldown_s"):
        new_book(rule(cooldown_s=-1.0))
    with pytest.raises(ConfigError, match=r"state\.alarms\.high_score"):
        new_book(rule()).load_state({"condition": "high_score", "streams": [{"device": "d"}]})


def test_table_is_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "detectors.md").read_text()
    assert table_markdown() in doc
    assert {row.action for row in TABLE} == set(Action)
    assert {row.source for row in TABLE} == set(AlarmState)


def test_book_rejects_mismatched_sizes() -> None:
    book: AlarmBook = new_book(rule())
    with pytest.raises(ValueError, match="sizes differ"):
        book.update([STREAM], block([1.0, 2.0]), np.array([T0]), np.array([True]), ["ok"])


def test_the_sentence_names_what_a_detector_measures() -> None:
    from agent.config.schema import DetectorConfig
    from agent.detectors import WindowBlock, build_detector

    detector = build_detector(
        DetectorConfig("stuck", "flatline", "vitals", ("hr",), params={"epsilon": 0.5}), 1.0
    )
    book = AlarmBook(
        rule(kind=AlarmKind.TECHNICAL, unit="bpm"), "gw", "cfg", ("hr",), quantity=detector.quantity
    )
    values = np.full((1, detector.window, 1), 72.0)
    scores = detector.score(WindowBlock(values, np.array([0]), np.array([T0]), 1))
    (event,) = book.update([STREAM], scores, np.array([T0]), np.array([False]), ["motion"])
    assert event.explanation.text == "hr range 0 bpm below limit 0.5 bpm"
    assert event.explanation.signal_quality == "motion"


# The ward example's timing (7 of 10, min_duration 10 s, clear_after 10 s, cooldown 60 s), at 1 Hz.
WARD_RULE = rule(
    priority=Priority.HIGH,
    min_duration_s=10.0,
    confirm_n=7,
    confirm_m=10,
    clear_after_s=10.0,
    cooldown_s=60.0,
)


def test_a_recurrence_within_the_cooldown_is_alarmed_after_its_min_duration() -> None:
    # Ward review 2026-12-01: SpO2 low for 25 s (START, END), then low again for 40 s from 5 s after the
    # END. The cooldown kept it NORMAL: nothing was sent for the 40 s.
    book = new_book(WARD_RULE)
    events = drive(book, [LO] * 15 + [HI] * 25 + [LO] * 15 + [HI] * 40 + [LO] * 120)
    assert [(k, e.phase) for k, e in events] == [
        (25, Phase.START),  # onset 15, 10 s
        (50, Phase.END),  # clear from 40, 10 s: END told at 50 (end_time 40)
        (65, Phase.START),  # the recurrence: onset 55, 5 s after the END, started after 10 s like the first
        (155, Phase.END),  # clear from 95, for the 60 s cooldown (told at 155, end_time 95)
    ]
    (_, first), _, (_, again), (_, again_end) = events
    assert again.onset_time == T0 + 55 and again.detection_time == T0 + 65 and again.recurrence_of == first.id
    assert again_end.end_time == T0 + 95 and again_end.id == again.id
    assert "recurred 15 s after the previous episode ended" in again.explanation.text


def test_a_signal_flapping_at_the_limit_gives_a_bounded_number_of_events() -> None:
    # The cooldown's purpose kept: a value hovering at a limit must not alarm on every swing. Every 3 s
    # for 10 min under the barest rule (no minimum duration, no clear delay, 1 of 1): START, END, then
    # one recurrence that stays open through the flapping and ends 60 s after it stops.
    book = new_book(rule(cooldown_s=60.0))
    events = drive(book, ([HI] * 3 + [LO] * 3) * 100 + [LO] * 100)
    assert [(k, e.phase) for k, e in events] == [
        (0, Phase.START),
        (3, Phase.END),
        (6, Phase.START),
        (597 + 60, Phase.END),
    ]
    # and 12 s over, 12 s under with the ward's timing: no more than that either
    book = new_book(WARD_RULE)
    events = drive(book, ([HI] * 12 + [LO] * 12) * 25 + [LO] * 100)
    assert [e.phase for _, e in events] == [Phase.START, Phase.END, Phase.START, Phase.END]
    # without a cooldown each swing is an episode of its own: 2 events per 6 s
    assert len(drive(new_book(rule()), ([HI] * 3 + [LO] * 3) * 100)) == 200


def test_a_recurrence_keeps_its_mark_and_its_predecessor_across_a_restart() -> None:
    book = new_book(WARD_RULE)
    events = drive(book, [HI] * 25 + [LO] * 15)  # START, END (end_time 25, told at 34)
    first = events[0][1]
    saved = json.loads(json.dumps(book.state()))
    assert saved["streams"][0]["last_episode"] == first.id  # while its cooldown runs
    restarted = new_book(WARD_RULE)
    restarted.load_state(saved)
    events = drive(restarted, [HI] * 20 + [LO] * 5, start=T0 + 40)  # a recurrence, clearing from 60
    (_, again) = events[0]
    assert again.recurrence_of == first.id
    saved = json.loads(json.dumps(restarted.state()))
    assert saved["streams"][0]["episode"]["recurrence_of"] == first.id
    again_restarted = new_book(WARD_RULE)
    again_restarted.load_state(saved)
    ends = drive(again_restarted, [LO] * 80, start=T0 + 65)
    # clear since 60: 10 s would end it at 70; as a recurrence it needs the 60 s cooldown
    assert [(k, e.phase, e.id) for k, e in ends] == [(55, Phase.END, again.id)]  # at 120, not 70
    assert ends[0][1].end_time == T0 + 60


def _drive_at(book: AlarmBook, hops: list[tuple[float, float]]) -> list[tuple[float, Phase]]:
    """Feed one stream (time offset, score) hops; the events as (time offset, phase)."""
    out: list[tuple[float, Phase]] = []
    for offset, value in hops:
        events = book.update([STREAM], block([value]), np.array([T0 + offset]), np.array([True]), ["ok"])
        out += [(offset, e.phase) for e in events]
    return out


def test_a_link_gap_is_not_clear_time_so_the_faults_return_keeps_the_episode() -> None:
    # Review "equipment" F1: 12 s high (START), 2 s clear, the serial link unplugged for 35 s (no hops),
    # 2.5 s clear, then high for 45 s. The clear timer ran through the gap: END on the first hop after it
    # ("ended after 12 s" on ~3 s of data), and the 3600 s cooldown hid the fault's return.
    pump_room = rule(kind=AlarmKind.TECHNICAL, min_duration_s=10.0, clear_after_s=30.0, cooldown_s=3600.0)
    book = new_book(pump_room)
    hops = [(float(k), HI) for k in range(12)] + [(12.0, LO), (13.0, LO)]
    hops += [(48.5 + k, LO) for k in range(3)] + [(51.5 + k, HI) for k in range(45)]
    assert _drive_at(book, hops) == [(10.0, Phase.START)]
    assert book.state_of(STREAM) is AlarmState.ACTIVE


def test_an_episode_ends_after_clear_after_s_of_judged_data_across_a_gap() -> None:
    book = new_book(rule(kind=AlarmKind.TECHNICAL, clear_after_s=30.0))
    hops = [(float(k), HI) for k in range(12)] + [(12.0, LO), (13.0, LO)]
    hops += [(48.5 + k, LO) for k in range(40)]
    events = _drive_at(book, hops)
    # clear from 12: 1 s before the gap, the first hop after it counts at most two hop intervals (2 s),
    # then 1 s a hop: 30 s of judged data at 48.5 + 27, not at 48.5 (wall time 36.5 s since 12)
    assert events == [(0.0, Phase.START), (75.5, Phase.END)]


def test_hops_without_a_verdict_do_not_count_towards_clear_after_s() -> None:
    # A physiological rule clearing, 40 s of lost contact (no verdict), contact back and clear: the END
    # needs 30 s of clear verdicts, not the first verdict after 30 s of wall time.
    book = new_book(rule(clear_after_s=30.0))
    series = [HI] * 3 + [LO] * 2 + [np.nan] * 40 + [LO] * 40
    quality = [True] * 5 + [False] * 40 + [True] * 40
    events = drive(book, series, quality=quality)
    assert [(k, e.phase) for k, e in events] == [(0, Phase.START), (73, Phase.END)]
    assert events[1][1].end_time == T0 + 3  # still the first clear hop


def test_a_jittery_hop_interval_counts_in_full_towards_clear_after_s() -> None:
    # hops 0.5 and 1.5 s apart in turn (a source delivering in uneven batches): 20 s of clear data ends
    # the episode after 20 s, as wall time did.
    book = new_book(rule(kind=AlarmKind.TECHNICAL, clear_after_s=20.0))
    times = [0.0, 1.0, 2.0] + [2.0 + 2 * k + d for k in range(20) for d in (0.5, 2.0)]
    hops = [(times[0], HI), (times[1], HI)] + [(at, LO) for at in times[2:]]
    assert _drive_at(book, hops) == [(0.0, Phase.START), (22.0, Phase.END)]
