"""`edge-agent status` between a start and the session's first heartbeat (30 s by default) shows the
gateway's figures looked at now, not "None"; the heartbeat counts the alarms the broker refused."""

from __future__ import annotations

import time
from pathlib import Path

from daemon_session import session

from agent.status import render
from tools.bench.disk import alarm_event


def test_status_before_the_first_heartbeat_shows_live_figures(tmp_path: Path) -> None:
    run = session(tmp_path)
    assert not run.last_heartbeat
    text = render("live", run.snapshot())
    assert "None" not in text, text
    assert "outbox: 0 waiting" in text and "alarms active: 0" in text
    assert "device d-" in text  # the configured wearable, by its pseudonym
    assert "at 20" in text  # the time of the look, ISO 8601


def test_a_look_between_heartbeats_leaves_the_next_heartbeats_rates_whole(tmp_path: Path) -> None:
    run = session(tmp_path)
    stats = next(iter(run.health.devices.values()))
    stats.readings_since_beat = 40
    run.snapshot()
    assert stats.readings_since_beat == 40  # the heartbeat's rate still counts them
    (device,) = run._heartbeat().devices
    assert device.rate_hz > 0 and stats.readings_since_beat == 0


def test_the_heartbeat_counts_the_events_the_broker_refused(tmp_path: Path) -> None:
    run = session(tmp_path)
    run.outbox.put_alarm(alarm_event(0, time.time()), "edge/s/gw/alarm")
    (item,) = run.outbox.take(10)
    run.outbox.refused(item.id, 0x87)  # Not authorized: an ACL
    beat = run._heartbeat().to_payload()
    assert (beat["outbox_depth"], beat["outbox_refused"]) == (0, 1)
    assert "0 waiting, 1 refused by the broker" in render("file", beat)


def test_status_names_a_detector_whose_channel_never_arrives() -> None:
    text = render("live", {"heartbeat": {"gateway": "gw"}, "missing_channels": {"hr-high": ["hrr"]}})
    assert "detector hr-high: no reading of its stream has had hrr so far: check its `channels`" in text
    assert "detector" not in render("live", {"heartbeat": {"gateway": "gw"}, "missing_channels": {}})


def test_status_names_a_device_stream_a_detector_is_blind_on() -> None:
    said = 'detector vib reads channel "acc_w", which the device does not send (it sends acc_x, acc_y, acc_z)'
    text = render("live", {"heartbeat": {"gateway": "gw"}, "blind_streams": {"d-p/acc": [said]}})
    assert f"stream d-p/acc: {said} (technical alarm channel_missing)" in text
