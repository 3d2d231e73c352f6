"""LocalBroker against the real mosquitto binary: ports, restart, persistence, auth, ACL."""

from __future__ import annotations

import queue
import socket
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.localbroker import LocalBroker, LocalBrokerError, hash_password

BrokerFactory = Callable[..., LocalBroker]


def _client(broker: LocalBroker, client_id: str = "", **auth: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if auth:
        client.username_pw_set(auth["username"], auth["password"])
    return client


def _connect_reason(broker: LocalBroker, **auth: str) -> int:
    """The CONNACK reason code the broker gives these credentials (0 = accepted)."""
    codes: queue.Queue[int] = queue.Queue()
    client = _client(broker, **auth)
    client.on_connect = lambda c, u, f, rc, p: codes.put(rc.value)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        return codes.get(timeout=10)
    finally:
        client.loop_stop()
        client.disconnect()


def _roundtrip(broker: LocalBroker, topic: str, payload: bytes, *, retain: bool = False) -> bytes:
    got: queue.Queue[bytes] = queue.Queue()
    sub = _client(broker)
    sub.on_message = lambda c, u, m: got.put(bytes(m.payload))
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
    sub.on_subscribe = lambda c, u, mid, rcs, p: c.publish(topic, payload, qos=1, retain=retain)
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    try:
        return got.get(timeout=10)
    finally:
        sub.loop_stop()
        sub.disconnect()


def test_broker_accepts_connections_and_routes_messages(mosquitto: LocalBroker) -> None:
    assert mosquitto.running
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"
    assert _roundtrip(mosquitto, "t/hello", b"hi") == b"hi"


def test_stop_closes_port_and_restart_reuses_it(mosquitto: LocalBroker) -> None:
    port = mosquitto.port
    mosquitto.kill()
    assert not mosquitto.running
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    mosquitto.start()
    assert mosquitto.port == port
    mosquitto.restart()
    assert mosquitto.port == port
    assert _roundtrip(mosquitto, "t/again", b"x") == b"x"


def test_persistence_keeps_retained_messages_across_restart(make_broker: BrokerFactory) -> None:
    broker = make_broker(persistence=True)
    _roundtrip(broker, "t/retained", b"kept", retain=True)
    broker.restart()  # SIGTERM: mosquitto writes its db on the way out
    assert (broker.db_dir / "mosquitto.db").is_file()
    got: queue.Queue[bytes] = queue.Queue()
    sub = _client(broker)
    sub.on_message = lambda c, u, m: got.put(bytes(m.payload))
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("t/retained", qos=1)
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    try:
        assert got.get(timeout=10) == b"kept"
    finally:
        sub.loop_stop()
        sub.disconnect()


def test_password_file_accepts_right_and_refuses_wrong_password(make_broker: BrokerFactory) -> None:
    broker = make_broker(allow_anonymous=False, users={"gw1": "s3cret"})
    assert _connect_reason(broker, username="gw1", password="s3cret") == 0
    assert _connect_reason(broker, username="gw1", password="wrong") >= 0x80
    assert _connect_reason(broker) >= 0x80  # anonymous refused


def test_password_hash_is_deterministic_for_a_given_salt() -> None:
    one = hash_password("pw", salt=b"0123456789ab")
    assert one == hash_password("pw", salt=b"0123456789ab")
    assert one.startswith("$7$101$") and one != hash_password("pw2", salt=b"0123456789ab")


def test_start_failure_reports_log_tail(tmp_path: Path) -> None:
    broker = LocalBroker(workdir=tmp_path / "bad", backend="mosquitto", extra_config="no_such_option 1")
    with pytest.raises(LocalBrokerError, match="no_such_option"):
        broker.start()
    assert not broker.running


def test_amqtt_fallback_refuses_options_it_cannot_honour(tmp_path: Path) -> None:
    with pytest.raises(LocalBrokerError, match="persistence"):
        LocalBroker(workdir=tmp_path, backend="amqtt", persistence=True)


def test_amqtt_fallback_serves_mqtt_311(tmp_path: Path) -> None:
    with LocalBroker(workdir=tmp_path / "amqtt", backend="amqtt") as broker:
        got: queue.Queue[bytes] = queue.Queue()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        client.on_message = lambda c, u, m: got.put(bytes(m.payload))
        client.on_connect = lambda c, u, f, rc, p: c.subscribe("a/b", qos=1)
        client.on_subscribe = lambda c, u, mid, rcs, p: c.publish("a/b", b"z", qos=1)
        client.connect(broker.host, broker.port)
        client.loop_start()
        try:
            assert got.get(timeout=10) == b"z"
        finally:
            client.loop_stop()
            client.disconnect()
    assert not broker.running
