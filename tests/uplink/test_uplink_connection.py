"""Connection rules that need no broker: backoff, status payloads, transport checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.config.schema import MqttConfig, OutboxConfig, TlsConfig
from agent.errors import ConfigError
from agent.uplink.connection import backoff_delay, check_transport, is_loopback, status_payload


def test_backoff_doubles_to_the_cap_with_jitter_in_the_upper_half() -> None:
    low = [backoff_delay(n, 1.0, 60.0, rand=lambda: 0.0) for n in range(1, 10)]
    high = [backoff_delay(n, 1.0, 60.0, rand=lambda: 1.0) for n in range(1, 10)]
    assert high == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert low == [h / 2 for h in high]
    assert backoff_delay(0, 1.0, 60.0, rand=lambda: 1.0) == 1.0  # before any failure: the minimum
    assert backoff_delay(10_000, 1.0, 60.0, rand=lambda: 1.0) == 60.0  # no overflow far out


def test_status_payloads() -> None:
    birth = json.loads(status_payload("gw1", 4, "online", 1_700_000_000.0))
    assert birth == {
        "schema": "edge-agent/status/1",
        "state": "online",
        "gateway": "gw1",
        "session": 4,
        "time": "2023-11-14T22:13:20.000Z",
    }
    will = json.loads(status_payload("gw1", 4, "offline", 1_700_000_000.0, clean=False))
    assert will == {
        "schema": "edge-agent/status/1",
        "state": "offline",
        "gateway": "gw1",
        "session": 4,
        "clean": False,
    }
    assert json.loads(status_payload("gw1", 4, "offline", 0.0, clean=True))["clean"] is True
    reload = json.loads(status_payload("gw1", 4, "offline", 0.0, clean=True, reason="reload"))
    assert (reload["clean"], reload["reason"]) == (True, "reload")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.5.5.5", True),
        ("::1", True),
        ("localhost", True),
        ("10.0.0.1", False),
        ("mqtt.example.org", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_transport_checks_name_the_key(tmp_path: Path) -> None:
    base = MqttConfig(host="10.1.2.3", port=8883, tls=TlsConfig())
    check_transport(base)  # TLS to a remote host: fine
    half_mtls = MqttConfig(host="10.1.2.3", port=8883, tls=TlsConfig(cert_file=tmp_path / "c.pem"))
    with pytest.raises(ConfigError) as info:
        check_transport(half_mtls)
    assert info.value.path == "mqtt.tls"
    with pytest.raises(ConfigError) as info:
        check_transport(MqttConfig(host="127.0.0.1", port=1883, tls=None, max_inflight=1))
    assert info.value.path == "mqtt.max_inflight"


def test_after_a_long_outage_the_uplink_tries_again_within_15_s(tmp_path: Path) -> None:
    # Alarms queued during the outage wait for the first attempt after the broker returns.
    from agent.outbox import Outbox
    from agent.uplink.mqtt import MqttUplink
    from agent.uplink.topics import Topics

    config = MqttConfig(host="127.0.0.1", port=1883, tls=None)
    with Outbox(OutboxConfig(tmp_path / "outbox.sqlite")) as outbox:
        uplink = MqttUplink(config, Topics("edge", "s", "gw"), outbox, 1)  # never run: no connection
        waits = [backoff_delay(n, uplink.backoff_min_s, uplink.backoff_max_s) for n in range(1, 500)]
    assert max(waits) <= 15.0 and min(waits[10:]) >= 7.5


@pytest.mark.parametrize(
    "host",
    [
        "broker..hospital.example",
        "b" * 64 + ".hospital.example",
        ".broker.example",
        "broker example",
        "a\x00b",
    ],
)
def test_a_host_the_socket_layer_cannot_look_up_is_refused_naming_mqtt_url(host: str) -> None:
    # The idna codec's UnicodeError (and a NUL's ValueError) is no OSError: paho's thread died of it.
    with pytest.raises(ConfigError) as info:
        check_transport(MqttConfig(host=host, port=8883, tls=TlsConfig()))
    assert info.value.path == "mqtt.url" and repr(host) in info.value.problem


@pytest.mark.parametrize("host", ["broker.example.", "bröker.example", "::1", "127.0.0.1", "a" * 63 + ".x"])
def test_hosts_the_socket_layer_can_look_up_pass(host: str) -> None:
    check_transport(MqttConfig(host=host, port=8883, tls=TlsConfig()))
