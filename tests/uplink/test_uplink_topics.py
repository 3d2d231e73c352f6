"""Topic layout and validation of its components."""

from __future__ import annotations

import pytest

from agent.errors import ConfigError
from agent.uplink.topics import Topics


def test_layout() -> None:
    t = Topics("edge", "site-a", "gw1")
    assert t.alarm == "edge/site-a/gw1/alarm"
    assert t.heartbeat == "edge/site-a/gw1/heartbeat"
    assert t.status == "edge/site-a/gw1/status"
    assert t.command == "edge/site-a/gw1/cmd/#"
    assert t.response == "edge/site-a/gw1/cmd/response"


@pytest.mark.parametrize(
    ("prefix", "site", "gateway", "key"),
    [
        ("", "s", "g", "mqtt.topic_prefix"),
        ("edge", "a/b", "g", "gateway.site"),
        ("edge", "s", "g+", "gateway.id"),
        ("edge", "s", "#", "gateway.id"),
        ("e/x", "s", "g", "mqtt.topic_prefix"),
        ("$SYS", "s", "g", "mqtt.topic_prefix"),
        ("edge", "", "g", "gateway.site"),
    ],
)
def test_bad_components_are_config_errors_naming_the_key(
    prefix: str, site: str, gateway: str, key: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Topics(prefix, site, gateway)
    assert info.value.path == key
