"""End to end through the real `limit` detector and an AlarmBook: one tachycardia episode, found on time."""

from __future__ import annotations

import numpy as np

from agent.alarms import AlarmBook, StreamRef
from agent.config.schema import AlarmRuleConfig, DetectorConfig
from agent.detectors import WindowBlock, build_detector
from agent.events import Phase, Priority

RATE = 1.0
T0 = 1_800_000_000.0


def test_hr_70_to_140_for_60_s_gives_exactly_one_episode_with_onset_near_truth() -> None:
    rng = np.random.default_rng(3)
    hr = 70.0 + rng.normal(0, 2.0, 400)
    truth_start, truth_end = 150, 210
    hr[truth_start:truth_end] = 140.0 + rng.normal(0, 2.0, truth_end - truth_start)
    hr[[20, 300]] = np.nan  # dropped samples never score
    detector = build_detector(
        DetectorConfig("hr_limits", "limit", "vitals", ("hr",), params={"above": 120, "below": 40}), RATE
    )
    rule = AlarmRuleConfig(
        condition="tachycardia",
        detector="hr_limits",
        priority=Priority.HIGH,
        min_duration_s=5.0,
        clear_after_s=5.0,
        hysteresis=5.0,
        cooldown_s=30.0,
        unit="bpm",
    )
    book = AlarmBook(rule, gateway="gw", config_hash="c0ffee", channels=("hr",))
    stream = [StreamRef("p-1", "vitals")]
    events = []
    for end in range(detector.window, hr.size + 1, detector.hop):
        window = hr[end - detector.window : end].reshape(1, -1, 1)
        t = np.array([T0 + (end - 1) / RATE])
        scores = detector.score(WindowBlock(window, np.array([0]), t, detector.hop))
        events += book.update(stream, scores, t, np.array([True]), ["ok"])

    assert [e.phase for e in events] == [Phase.START, Phase.END]
    start, end_event = events
    assert start.id == end_event.id
    assert abs(start.onset_time - (T0 + truth_start)) <= 3.0
    assert 0 <= start.detection_time - start.onset_time <= 10.0
    assert end_event.end_time is not None and abs(end_event.end_time - (T0 + truth_end)) <= 3.0
    assert start.value > 120 and start.threshold == 120 and start.unit == "bpm"
    assert start.explanation.text.startswith(f"hr {start.value:.0f} bpm above limit 120 bpm for 5 s")
    assert start.explanation.top_channels == (("hr", 1.0),)
