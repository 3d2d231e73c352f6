"""`edge-agent status` text: each device line carries the source's counters and the ODI when scored."""

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
