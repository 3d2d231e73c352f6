"""What an operator reads when the broker side is set up wrong: one log line that names the broker
address, the cause and the config key to fix; not one line per retry, and not nothing at all (paho
gives no cause for a failed attempt). Alarms wait in the outbox, and the uplink joins the broker by
itself once the problem is fixed. Real mosquitto brokers, real TLS handshakes, real DNS look-ups.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from ports import RefusingPort
from uplink_probe import Pki, make_tls_material, mqtt_config

from agent.config.schema import AuthConfig, MqttConfig, OutboxConfig, TlsConfig
from agent.localbroker import BrokerTls, LocalBroker
from agent.outbox import Kind, Outbox, OutboxItem
from agent.uplink.mqtt import MqttUplink
from agent.uplink.problems import KEEPALIVE_TIMEOUT, describe_early_close
from agent.uplink.topics import Topics

BrokerFactory = Callable[..., LocalBroker]
TOPICS = Topics("edge", "site1", "gw1")
LOGGER = "agent.uplink.mqtt"


@dataclass(frozen=True)
class Address:
    host: str
    port: int


def outbox_with_alarm(tmp_path: Path, event_id: str = "a1") -> Outbox:
    outbox = Outbox(OutboxConfig(tmp_path / "o.db"))
    outbox.put(OutboxItem(event_id, TOPICS.alarm, json.dumps({"id": event_id}).encode(), Kind.ALARM, 0, 0.0))
    return outbox


def password_file_for(tmp_path: Path, user: str, password: str) -> AuthConfig:
    path = tmp_path / f"{user}.password"
    path.write_text(password + "\n")
    path.chmod(0o600)
    return AuthConfig(user, path)


def fast_uplink(config: MqttConfig, outbox: Outbox) -> MqttUplink:
    return MqttUplink(config, TOPICS, outbox, 1, poll_s=0.1, backoff_min_s=0.05, backoff_max_s=0.2)


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.05)
    assert condition(), what


def drive(uplink: MqttUplink, body: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        task = asyncio.create_task(uplink.run())
        try:
            await body()
        finally:
            await uplink.stop(timeout_s=1.0)
            await asyncio.wait_for(task, 10)

    asyncio.run(main())


def uplink_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


def fails_several_times(
    config: MqttConfig, outbox: Outbox, caplog: pytest.LogCaptureFixture, attempts: int = 4
) -> MqttUplink:
    """Run an uplink until `attempts` connection attempts failed; its counters stay readable."""
    uplink = fast_uplink(config, outbox)

    async def body() -> None:
        await until(lambda: uplink.counters().failed_attempts >= attempts, f"{attempts} failed attempts")

    with caplog.at_level(logging.INFO, logger=LOGGER):
        drive(uplink, body)
    return uplink


def test_a_broker_not_running_yet_is_told_once_and_joined_when_it_starts(
    make_broker: BrokerFactory, refusing_port: RefusingPort, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = refusing_port.port
    outbox = outbox_with_alarm(tmp_path)
    uplink = fast_uplink(mqtt_config(Address("127.0.0.1", port)), outbox)

    async def body() -> None:
        await until(lambda: uplink.counters().failed_attempts >= 4, "4 refused attempts")
        problem = uplink.counters().problem or ""
        assert f"mqtt://127.0.0.1:{port}" in problem and "connection refused" in problem
        assert "mqtt.url" in problem
        await asyncio.to_thread(make_broker, port=refusing_port.release())  # started later, on that port
        await until(lambda: outbox.depth() == 0, "the waiting alarm delivered")

    with caplog.at_level(logging.INFO, logger=LOGGER):
        drive(uplink, body)
    (warning,) = uplink_lines(caplog, logging.WARNING)  # once, not once per retry
    assert "connection refused" in warning and "1 message(s) wait in the outbox" in warning
    assert any("failed attempt(s) over" in line for line in uplink_lines(caplog, logging.INFO))
    counters = uplink.counters()
    assert counters.problem is None and counters.failed_attempts == 0 and counters.delivered == 1


def test_a_broker_host_name_that_does_not_resolve_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = replace(mqtt_config(Address("broker.invalid", 8883)), insecure=True)  # .invalid: never in DNS
    outbox = outbox_with_alarm(tmp_path)
    uplink = fails_several_times(config, outbox, caplog, attempts=2)
    (warning,) = uplink_lines(caplog, logging.WARNING)
    assert "cannot resolve the broker host 'broker.invalid'" in warning and "mqtt.url" in warning
    assert uplink.counters().problem == warning.split("uplink: ", 1)[1].split("; retrying")[0]
    assert outbox.depth() == 1


def test_a_ca_file_that_did_not_sign_the_broker_certificate_is_named(
    make_broker: BrokerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pki = Pki(tmp_path / "pki")
    server = pki.issue("127.0.0.1", stem="server", server=True)
    broker = make_broker(tls=BrokerTls(pki.ca, server.cert, server.key))
    other = Pki(tmp_path / "other", name="other")
    uplink = fails_several_times(
        mqtt_config(broker, tls=TlsConfig(ca_file=other.ca)), outbox_with_alarm(tmp_path), caplog
    )
    (warning,) = uplink_lines(caplog, logging.WARNING)
    assert f"the TLS certificate of mqtts://127.0.0.1:{broker.port} is not trusted" in warning
    assert f"mqtt.tls.ca_file ({other.ca})" in warning
    assert uplink.counters().connects == 0


def test_a_broker_certificate_for_another_host_is_named(
    make_broker: BrokerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pki = Pki(tmp_path / "pki")
    wrong_name = pki.issue("broker.example", stem="server", server=True, hosts=("broker.example",))
    broker = make_broker(tls=BrokerTls(pki.ca, wrong_name.cert, wrong_name.key))
    uplink = fails_several_times(
        mqtt_config(broker, tls=TlsConfig(ca_file=pki.ca)), outbox_with_alarm(tmp_path), caplog
    )
    (warning,) = uplink_lines(caplog, logging.WARNING)
    assert "is not issued for '127.0.0.1'" in warning and "mqtt.url" in warning
    assert uplink.counters().connects == 0


def test_a_wrong_password_is_told_once_naming_the_user_and_the_password_file(
    make_broker: BrokerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = make_broker(allow_anonymous=False, users={"gw1": "right"})
    auth = password_file_for(tmp_path, "gw1", "wrong")
    uplink = fails_several_times(mqtt_config(broker, auth=auth), outbox_with_alarm(tmp_path), caplog)
    (warning,) = uplink_lines(caplog, logging.WARNING)
    assert "refused the connection: 0x87 Not authorized" in warning or "0x86" in warning
    assert "mqtt.auth.username ('gw1')" in warning
    assert f"mqtt.auth.password_file ({auth.password_file})" in warning
    assert uplink.counters().problem is not None


def test_a_corrected_password_file_is_used_at_the_next_attempt_without_a_reload(
    make_broker: BrokerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # troubleshooting.md says "fix the password file": the file was read once, at start, and every later
    # attempt was refused until a reload (review link F3).
    broker = make_broker(allow_anonymous=False, users={"gw1": "s3cret-new"})
    auth = password_file_for(tmp_path, "gw1", "s3cret-old")
    outbox = outbox_with_alarm(tmp_path)
    uplink = fast_uplink(mqtt_config(broker, auth=auth), outbox)

    async def body() -> None:
        await until(lambda: uplink.counters().failed_attempts >= 2, "the old password refused")
        auth.password_file.write_text("s3cret-new\n")  # the operator's fix, mode 600 kept
        await until(lambda: outbox.depth() == 0, "the waiting alarm delivered with the new password")

    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        drive(uplink, body)
    assert uplink.counters().delivered == 1
    assert not any("s3cret" in r.getMessage() for r in caplog.records)  # the password never in a line


def test_an_unreadable_password_file_keeps_the_last_password_and_is_told_once(
    make_broker: BrokerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = make_broker(allow_anonymous=False, users={"gw1": "s3cret"})
    auth = password_file_for(tmp_path, "gw1", "s3cret")
    outbox = outbox_with_alarm(tmp_path)
    uplink = fast_uplink(mqtt_config(broker, auth=auth), outbox)

    async def body() -> None:
        await until(lambda: outbox.depth() == 0, "the first alarm delivered")
        auth.password_file.chmod(0o644)  # now refused as readable by others: the last password stays
        await asyncio.to_thread(broker.restart)  # every reconnection reads the file again
        outbox.put(OutboxItem("a2", TOPICS.alarm, b'{"id": "a2"}', Kind.ALARM, 0, 0.0))
        uplink.notify()
        await until(lambda: outbox.depth() == 0, "the second alarm delivered with the last password")

    with caplog.at_level(logging.INFO, logger=LOGGER):
        drive(uplink, body)
    warnings = [line for line in uplink_lines(caplog, logging.WARNING) if "password_file" in line]
    assert len(warnings) == 1 and "readable by group or others" in warnings[0], warnings
    assert "the last password read is used" in warnings[0]
    assert not any("s3cret" in r.getMessage() for r in caplog.records)


def test_an_acl_refusal_is_logged_once_per_topic_naming_client_user_topic_and_the_way_back(
    make_broker: BrokerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = make_broker(
        allow_anonymous=False, users={"gw1": "pw"}, acl=f"user gw1\ntopic readwrite {TOPICS.status}\n"
    )
    outbox = outbox_with_alarm(tmp_path, "a1")
    for event_id in ("a2", "a3"):
        outbox.put(OutboxItem(event_id, TOPICS.alarm, b"{}", Kind.ALARM, 0, 0.0))
    uplink = fast_uplink(mqtt_config(broker, auth=password_file_for(tmp_path, "gw1", "pw")), outbox)

    async def body() -> None:
        await until(lambda: outbox.refused_count() == 3, "three refused alarms")

    with caplog.at_level(logging.INFO, logger=LOGGER):
        drive(uplink, body)
    (error,) = uplink_lines(caplog, logging.ERROR)
    assert "0x87 Not authorized" in error
    assert f"the broker's ACL must let client 'gw1' (user 'gw1') publish to {TOPICS.alarm}" in error
    assert "edge-agent retry-refused" in error
    assert uplink.counters().refused == 3


def test_a_problem_that_lasts_is_told_again_as_a_reminder_not_at_every_retry(
    refusing_port: RefusingPort,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("agent.uplink.mqtt.REMIND_S", 0.5)  # ten minutes in the field
    port = refusing_port.port
    uplink = fast_uplink(mqtt_config(Address("127.0.0.1", port)), outbox_with_alarm(tmp_path))

    async def body() -> None:
        await asyncio.sleep(1.2)

    with caplog.at_level(logging.INFO, logger=LOGGER):
        drive(uplink, body)
    warnings = uplink_lines(caplog, logging.WARNING)
    attempts = uplink.counters().failed_attempts
    assert 2 <= len(warnings) <= 3 < attempts  # the first line and a reminder per 0.5 s, of many attempts
    assert warnings[0].startswith("uplink: nothing accepts connections")
    assert warnings[1].startswith("uplink still not connected after ") and "connection refused" in warnings[1]


@pytest.mark.parametrize(
    "mistake", ["mqtt:// to a TLS port", "mqtts:// to a plain port", "no client certificate"]
)
def test_a_scheme_or_certificate_that_does_not_fit_the_listener_is_named(
    mistake: str, make_broker: BrokerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pki = make_tls_material(tmp_path / "pki")
    if mistake == "mqtts:// to a plain port":
        config = mqtt_config(make_broker(), tls=TlsConfig(ca_file=pki.ca))
        expected = "reset the connection during the TLS handshake: is this port a TLS listener?"
    else:
        broker = make_broker(tls=BrokerTls(pki.ca, pki.server_cert, pki.server_key, require_certificate=True))
        tls = None if mistake == "mqtt:// to a TLS port" else TlsConfig(ca_file=pki.ca)
        config = mqtt_config(broker, tls=tls)
        expected = "closed the connection before accepting it (Unspecified error): " + (
            "is this port a TLS listener that wants mqtts://?"
            if tls is None
            else "does the broker want a client certificate"
        )
    uplink = fails_several_times(config, outbox_with_alarm(tmp_path), caplog)
    (warning,) = uplink_lines(caplog, logging.WARNING)
    assert expected in warning
    assert uplink.counters().connects == 0


def test_a_status_topic_the_acl_refuses_is_named_once(
    make_broker: BrokerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = make_broker(
        allow_anonymous=False, users={"gw1": "pw"}, acl=f"user gw1\ntopic write {TOPICS.alarm}\n"
    )
    outbox = outbox_with_alarm(tmp_path)
    uplink = fast_uplink(mqtt_config(broker, auth=password_file_for(tmp_path, "gw1", "pw")), outbox)

    async def body() -> None:
        await until(lambda: outbox.depth() == 0, "the alarm delivered")
        await until(lambda: bool(uplink_lines(caplog, logging.ERROR)), "the refused birth told")

    with caplog.at_level(logging.INFO, logger=LOGGER):
        drive(uplink, body)
    (error,) = uplink_lines(caplog, logging.ERROR)
    assert error == (
        "broker refused the gateway's online/offline status: 0x87 Not authorized: the broker's ACL must let "
        f"client 'gw1' (user 'gw1') publish to {TOPICS.status}"
    )


def test_a_port_that_takes_the_connection_but_never_answers_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What a wrong port looks like behind a firewall or proxy that accepts every TCP connection."""
    held: list[socket.socket] = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.1)
        port = server.getsockname()[1]
        stop = threading.Event()

        def accept() -> None:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    held.append(server.accept()[0])

        acceptor = threading.Thread(target=accept, daemon=True)
        acceptor.start()
        config = replace(mqtt_config(Address("127.0.0.1", port)), keepalive_s=1)
        try:
            uplink = fails_several_times(config, outbox_with_alarm(tmp_path), caplog, attempts=2)
        finally:
            stop.set()
            acceptor.join(5)
            for connection in held:
                connection.close()
    (warning,) = uplink_lines(caplog, logging.WARNING)
    assert f"mqtt://127.0.0.1:{port} took the connection but never answered CONNECT (within 1 s)" in warning
    assert "is it an MQTT broker's port? check mqtt.url" in warning
    assert uplink.counters().connects == 0 and held


def test_a_broker_that_answered_before_and_stopped_answering_is_not_called_a_wrong_port() -> None:
    """Ops review F2: a frozen broker's kernel still takes connections, so paho's attempts end with no
    CONNACK like a wrong port's; once the address has answered CONNECT, the line says the broker hangs."""
    config = mqtt_config(Address("127.0.0.1", 1883))
    hung = describe_early_close(KEEPALIVE_TIMEOUT, config, answered_before=True)
    assert hung == (
        "mqtt://127.0.0.1:1883 took the connection but its broker, which answered before, did not answer "
        "CONNECT (within 10 s): the broker is hung or overloaded; see the broker's host and log"
    )
    assert "is it an MQTT broker's port" in describe_early_close(KEEPALIVE_TIMEOUT, config)
