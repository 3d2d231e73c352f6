"""`edge-agent status` text: each device line carries the source's counters and the ODI when scored,
and a device with error counters a line of them."""

from __future__ import annotations

from typing import Any

from agent.status import render


def device(**extra: Any) -> dict[str, Any]:
    base = {
        "device": "dev-3f9a",
        "connected": True,
        "rate_hz": 1.0,
        "last_seen": None,
        "gaps": 2,
        "bad_frames": 5,
    }
    return base | extra


def device_lines(*devices: dict[str, Any]) -> list[str]:
    heartbeat = {"gateway": "gw1", "session": 3, "uptime_s": 10, "devices": list(devices)}
    return [line for line in render("last heartbeat", heartbeat).splitlines() if "device " in line]


def test_device_line_shows_reconnects_and_the_desaturation_index_only_where_scored() -> None:
    scored, unscored = device_lines(
        device(reconnects=4, desaturation_index_per_h=7.25), device(device="pump-1")
    )
    assert scored.endswith("gaps 2, bad frames 5, reconnects 4, ODI 7.2/h")
    assert unscored.endswith("bad frames 5, reconnects 0")  # a heartbeat from before the field existed


def test_device_line_shows_the_beats_found_in_an_ecg_where_they_are_looked_for() -> None:
    patch, strap = device_lines(device(beats_per_min=71.6), device(device="strap"))
    assert patch.endswith("reconnects 0, beats 72/min")
    assert "beats" not in strap


def test_a_device_with_errors_gets_a_line_of_them_and_data_without_hello_is_named() -> None:
    heartbeat = {
        "devices": [
            device(device="quiet", errors={}),
            device(
                device="pump", errors={"bad_crc": 3, "seq_backwards": 1}, last_seen="2026-11-30T03:00:00Z"
            ),
            device(device="mute", errors={"waiting_hello": 44}),
            device(device="old"),  # a heartbeat from before errors were reported
        ]
    }
    lines = render("last heartbeat", heartbeat).splitlines()
    errors = [line for line in lines if "errors" in line]
    assert errors == [
        "    errors since start: bad_crc 3, seq_backwards 1",
        "    errors since start: waiting_hello 44",
    ]
    assert lines[lines.index(errors[0]) - 1].startswith("  device pump:")
    assert lines[lines.index(errors[1]) + 1].startswith("    DATA arrives but no HELLO")


def test_remote_command_counters_get_a_line_only_when_something_was_dropped_or_refused() -> None:
    beat = {"gateway": "gw1", "session": 3, "uptime_s": 10, "devices": []}
    quiet = {"dropped": 0, "unanswered": 0, "answers_dropped": 0, "answers_refused": 0}
    assert "remote commands" not in render("live", {"heartbeat": beat, "commands": quiet})
    flooded = quiet | {"dropped": 598614, "unanswered": 1171, "answers_refused": 2}
    lines = render("live", {"heartbeat": beat, "commands": flooded}).splitlines()
    assert (
        "  remote commands: 598614 dropped on arrival, 1171 refusals unanswered, 0 answers dropped, "
        "2 answers refused by the broker"
    ) in lines


def test_the_outbox_line_names_heartbeats_dropped_for_room_only_when_some_were() -> None:
    beat = {"gateway": "gw1", "session": 3, "uptime_s": 10, "devices": [], "outbox_depth": 108}
    assert "dropped" not in render("live", {"heartbeat": beat | {"outbox_heartbeats_dropped": 0}})
    lines = render("live", {"heartbeat": beat | {"outbox_heartbeats_dropped": 367}}).splitlines()
    assert "  outbox: 108 waiting, 367 heartbeat(s) dropped for room so far" in lines


def test_the_outbox_line_names_heartbeats_expired_undelivered_only_when_some_were() -> None:
    beat = {"gateway": "gw1", "session": 3, "uptime_s": 10, "devices": [], "outbox_depth": 4}
    assert "expired" not in render("live", {"heartbeat": beat | {"outbox_heartbeats_expired": 0}})
    lines = render("live", {"heartbeat": beat | {"outbox_heartbeats_expired": 8636}}).splitlines()
    assert "  outbox: 4 waiting, 8636 heartbeat(s) expired undelivered so far" in lines


def test_a_gated_machine_gets_a_line_of_its_operating_state() -> None:
    """`running_when` (docs/detectors.md, "Operating state"): a stopped pump's rules give no verdict, and
    status says so rather than leaving an operator to wonder why a pump is not judged."""
    beat = {"gateway": "gw1", "session": 3, "uptime_s": 10, "devices": []}
    running = {
        "p-1/machine": {"state": "off", "since": "2026-11-30T22:00:00.000Z"},
        "p-2/machine": {"state": "running", "since": None},
    }
    lines = render("live", {"heartbeat": beat, "running": running}).splitlines()
    assert "  machine p-1/machine: off since 2026-11-30T22:00:00.000Z (no verdict, nothing learnt)" in lines
    assert "  machine p-2/machine: running (judged)" in lines
    assert not [line for line in render("live", {"heartbeat": beat}).splitlines() if "machine " in line]


def test_learning_and_settling_lines_name_the_device_and_say_when_learning_waits_for_the_machine() -> None:
    beat = {"gateway": "gw1", "session": 3, "uptime_s": 10, "devices": []}
    status = beat | {  # a heartbeat file: its own `running` and `learning`
        "running": {
            "p-1/machine": {"state": "off", "since": "2026-11-30T22:00:00.000Z"},
            "p-2/machine": {"state": "settling", "since": "2026-11-30T22:05:00.000Z", "settle_left_s": 41.6},
        },
        "learning": {"wear": {"of_s": 3600, "learnt_s": {"p-1/machine": 0, "p-3/machine": 1240}}},
    }
    lines = render("last heartbeat", status, names={"p-1": "pump-1"}).splitlines()
    assert (
        "  machine p-1/machine (pump-1): off since 2026-11-30T22:00:00.000Z (no verdict, nothing learnt)"
        in lines
    )
    assert (
        "  machine p-2/machine: settling since 2026-11-30T22:05:00.000Z: started, judged again in 42 s"
        " (no verdict, nothing learnt meanwhile)"
    ) in lines
    assert (
        "  learning wear on p-1/machine (pump-1): 0 of 3600 s, no verdict from it until then"
        " (paused: it learns from the running machine only)"
    ) in lines
    assert "  learning wear on p-3/machine: 1240 of 3600 s, no verdict from it until then" in lines
