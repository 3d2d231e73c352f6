"""Broker-side security of the uplink, against real mosquitto brokers started by each test.

- The fleet ACL `deploy/mosquitto/acl` (read from the repository, not a copy) loaded into a
  LocalBroker with password users: a gateway writes and reads only its own topics, the central user
  reads everything and sends commands.
- Authentication: anonymous clients and wrong passwords are refused; the outbox keeps the item.
- Certificates: an expired client certificate is refused by the broker, an expired server
  certificate by the agent; the item waits in the outbox and goes out once the certificate is renewed.
  A revoked client certificate (the broker's CRL) is refused while other gateways keep delivering.
- The example `deploy/mosquitto/mosquitto.conf` started as-is, only ports and file paths substituted.

A refusal is awaited on a barrier (the uplink's own log line naming the CONNACK reason, or the
broker's log of the failed TLS handshake), never a fixed sleep; what is asserted is behaviour:
counters, outbox rows, and what subscribers receive.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from uplink_probe import Issued, Pki, Subscriber, mqtt_config

from agent.config.schema import AuthConfig, MqttConfig, OutboxConfig, TlsConfig
from agent.localbroker import BrokerTls, LocalBroker, find_mosquitto, free_port, hash_password
from agent.outbox import Kind, Outbox, OutboxItem
from agent.uplink.mqtt import Command, MqttUplink
from agent.uplink.topics import Topics

BrokerFactory = Callable[..., LocalBroker]
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
GW1 = Topics("edge", "site1", "gw1")
GW2 = Topics("edge", "site1", "gw2")
PASSWORDS = {"gw1": "pw-gw1", "gw2": "pw-gw2", "central": "pw-central"}
NOT_AUTHORIZED = 0x87
DAY = datetime.timedelta(days=1)
VERIFY_FAILED = "certificate verify failed"  # the broker's log of a refused client certificate


# -- helpers ----------------------------------------------------------------------------------------


def alarm(event_id: str, topics: Topics) -> OutboxItem:
    payload = json.dumps({"id": event_id}).encode()
    return OutboxItem(event_id, topics.alarm, payload, Kind.ALARM, 0, 1_700_000_000.0)


def password_file(tmp_path: Path, user: str, password: str | None = None) -> AuthConfig:
    path = tmp_path / f"{user}.password"
    path.write_text((PASSWORDS[user] if password is None else password) + "\n")
    path.chmod(0o600)
    return AuthConfig(user, path)


def fleet_broker(make_broker: BrokerFactory) -> LocalBroker:
    """Password users gw1, gw2, central and the repository's fleet ACL file, nothing anonymous."""
    acl = (DEPLOY / "acl").read_text()
    return make_broker(allow_anonymous=False, users=PASSWORDS, acl=acl)


def uplink_for(
    config: MqttConfig,
    topics: Topics,
    outbox: Outbox,
    *,
    refusals: list[tuple[str, int]] | None = None,
    on_command: Callable[[Command], None] | None = None,
) -> MqttUplink:
    on_refused = None if refusals is None else (lambda item, rc: refusals.append((item.id, rc)))
    return MqttUplink(
        config,
        topics,
        outbox,
        1,
        on_refused=on_refused,
        on_command=on_command,
        poll_s=0.2,
        backoff_min_s=0.1,
        backoff_max_s=0.4,
    )


async def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 8.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.05)


def drive(uplinks: Sequence[MqttUplink], body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run the uplinks while `body` runs, then stop them cleanly."""

    async def main() -> None:
        tasks = [asyncio.create_task(u.run()) for u in uplinks]
        try:
            await body()
        finally:
            for uplink in uplinks:
                await uplink.stop(timeout_s=1.0)
            await asyncio.wait_for(asyncio.gather(*tasks), 10)

    asyncio.run(main())


def connack_refused(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The uplink's own warnings about refused CONNECTs (each names the CONNACK reason code)."""
    return [r.getMessage() for r in caplog.records if "refused the connection" in r.getMessage()]


def broker_log_has(log_path: Path, text: str, times: int = 1) -> Callable[[], bool]:
    """A barrier: the broker logged `text` at least `times` times (e.g. failed TLS handshakes)."""

    def check() -> bool:
        try:
            return log_path.read_text(errors="replace").count(text) >= times
        except FileNotFoundError:
            return False

    return check


def publish_as(
    host: str, port: int, topic: str, *, username: str, password: str, tls: TlsConfig | None = None
) -> int:
    """Publish one QoS 1 message with a plain paho client; the PUBACK reason code."""
    acked: list[int] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.username_pw_set(username, password)
    if tls is not None:
        client.tls_set(ca_certs=str(tls.ca_file))
    client.on_publish = lambda _c, _u, _mid, rc, _p: acked.append(int(rc.value))
    client.connect(host, port)
    client.loop_start()
    try:
        client.publish(topic, b"{}", qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 5
        while not acked and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        client.disconnect()
        client.loop_stop()
    (reason,) = acked
    return reason


def ids_on(sub: Subscriber, topic: str) -> list[str]:
    return [m.json()["id"] for m in sub.snapshot() if m.topic == topic]


# -- the fleet ACL, with password users ---------------------------------------------------------------


def test_fleet_acl_lets_a_gateway_deliver_its_own_alarm(make_broker: BrokerFactory, tmp_path: Path) -> None:
    broker = fleet_broker(make_broker)
    central = Subscriber(broker, "edge/#", username="central", password=PASSWORDS["central"])
    outbox = Outbox(OutboxConfig(tmp_path / "gw1.db"))
    outbox.put(alarm("a1", GW1))
    uplink = uplink_for(mqtt_config(broker, auth=password_file(tmp_path, "gw1")), GW1, outbox)

    async def body() -> None:
        await wait_until(lambda: outbox.depth() == 0 and "a1" in ids_on(central, GW1.alarm), "delivery")

    drive([uplink], body)
    central.close()
    counters = uplink.counters()
    assert (counters.delivered, counters.refused, counters.connects) == (1, 0, 1)
    assert outbox.depth() == 0 and outbox.refused_count() == 0
    # The gateway's status (birth, then clean offline) is within its rights too.
    states = [m.json()["state"] for m in central.snapshot() if m.topic == GW1.status]
    assert states[0] == "online"


def test_fleet_acl_refuses_a_gateway_writing_another_gateways_topic(
    make_broker: BrokerFactory, tmp_path: Path
) -> None:
    broker = fleet_broker(make_broker)
    central = Subscriber(broker, "edge/#", username="central", password=PASSWORDS["central"])
    outbox = Outbox(OutboxConfig(tmp_path / "gw1.db"))
    outbox.put(alarm("forged", GW2))  # gw1's outbox holding an item for gw2's alarm topic
    outbox.put(alarm("own", GW1))
    refusals: list[tuple[str, int]] = []
    uplink = uplink_for(
        mqtt_config(broker, auth=password_file(tmp_path, "gw1")), GW1, outbox, refusals=refusals
    )

    async def body() -> None:
        await wait_until(lambda: len(refusals) == 1 and "own" in ids_on(central, GW1.alarm), "refusal")

    drive([uplink], body)
    central.close()
    assert refusals == [("forged", NOT_AUTHORIZED)]
    (kept,) = outbox.refused_items()  # set aside, not deleted, not retried
    assert kept.id == "forged" and kept.reason_code == NOT_AUTHORIZED and kept.topic == GW2.alarm
    assert outbox.depth() == 0
    counters = uplink.counters()
    assert (counters.delivered, counters.refused) == (1, 1)
    assert ids_on(central, GW2.alarm) == []  # the broker forwarded nothing onto gw2's topic


def test_fleet_acl_refuses_a_gateway_posing_as_another_gateway(
    make_broker: BrokerFactory, tmp_path: Path
) -> None:
    """gw1's credentials configured with gw2's topics: its alarm, its birth and its Will (the
    connection dropped without DISCONNECT) all name gw2's topics, and none of them gets through."""
    broker = fleet_broker(make_broker)
    central = Subscriber(broker, "edge/#", username="central", password=PASSWORDS["central"])
    outbox = Outbox(OutboxConfig(tmp_path / "gw1.db"))
    outbox.put(alarm("a1", GW2))
    refusals: list[tuple[str, int]] = []
    config = mqtt_config(broker, auth=password_file(tmp_path, "gw1"), client_id="gw2")
    uplink = uplink_for(config, GW2, outbox, refusals=refusals)

    async def main() -> None:
        task = asyncio.create_task(uplink.run())
        await wait_until(lambda: len(refusals) == 1, "the alarm refused")
        task.cancel()  # drops the connection with "disconnect with will message"
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    # Barrier: a message central may write, sent after the Will would have been published.
    barrier = f"{GW1.root}/cmd/status"
    assert publish_as(broker.host, broker.port, barrier, username="central", password="pw-central") < 0x80
    central.wait_for(lambda ms: any(m.topic == barrier for m in ms))
    central.close()
    assert refusals == [("a1", NOT_AUTHORIZED)]
    assert outbox.depth() == 0 and [i.id for i in outbox.refused_items()] == ["a1"]
    assert [m.topic for m in central.snapshot() if m.topic.startswith(GW2.root)] == []


def test_fleet_acl_keeps_other_gateways_topics_unreadable_and_uncommandable(
    make_broker: BrokerFactory, tmp_path: Path
) -> None:
    broker = fleet_broker(make_broker)
    central = Subscriber(broker, "edge/#", username="central", password=PASSWORDS["central"])
    # gw1's credentials, subscribing to gw2's subtree and to everything.
    spy_gw2 = Subscriber(broker, "edge/site1/gw2/#", client_id="spy-a", username="gw1", password="pw-gw1")
    spy_all = Subscriber(broker, "edge/#", client_id="spy-b", username="gw1", password="pw-gw1")
    outbox = Outbox(OutboxConfig(tmp_path / "gw2.db"))
    outbox.put(alarm("b1", GW2))
    uplink = uplink_for(
        mqtt_config(broker, auth=password_file(tmp_path, "gw2"), client_id="gw2"), GW2, outbox
    )

    async def body() -> None:
        await wait_until(lambda: "b1" in ids_on(central, GW2.alarm), "gw2's alarm at central")

    drive([uplink], body)
    # Barrier: a command for gw1, which gw1 may read, sent after gw2's alarm was routed. Mosquitto
    # routes in order, so once it reaches spy_all anything of gw2's would have arrived before it.
    barrier = f"{GW1.root}/cmd/status"
    assert publish_as(broker.host, broker.port, barrier, username="central", password="pw-central") < 0x80
    spy_all.wait_for(lambda ms: any(m.topic == barrier for m in ms))
    assert [m.topic for m in spy_all.snapshot()] == [barrier]
    assert spy_gw2.snapshot() == []
    # mosquitto 2.0's acl_file grants the SUBSCRIBE itself (a SUBACK did come back) and checks read
    # access per message at delivery: what matters is that nothing of gw2's was delivered.
    assert len(spy_gw2.granted) == 1 and len(spy_all.granted) == 1
    # Nor may gw1 send gw2 a command (only the central user writes command topics).
    reason = publish_as(broker.host, broker.port, f"{GW2.root}/cmd/reload", username="gw1", password="pw-gw1")
    assert reason == NOT_AUTHORIZED
    for sub in (central, spy_gw2, spy_all):
        sub.close()


def test_fleet_acl_central_reads_every_gateway_and_commands_them(
    make_broker: BrokerFactory, tmp_path: Path
) -> None:
    broker = fleet_broker(make_broker)
    central = Subscriber(broker, "edge/#", username="central", password=PASSWORDS["central"])
    replies = Subscriber(
        broker, "edge-ops/replies/#", client_id="ops", username="central", password="pw-central"
    )
    outboxes = {name: Outbox(OutboxConfig(tmp_path / f"{name}.db")) for name in ("gw1", "gw2")}
    outboxes["gw1"].put(alarm("a1", GW1))
    outboxes["gw2"].put(alarm("b1", GW2))
    gw2: MqttUplink

    def answer(command: Command) -> None:
        gw2.respond(command, b'{"ok":true}')

    gw1 = uplink_for(mqtt_config(broker, auth=password_file(tmp_path, "gw1")), GW1, outboxes["gw1"])
    gw2 = uplink_for(
        mqtt_config(broker, auth=password_file(tmp_path, "gw2"), client_id="gw2"),
        GW2,
        outboxes["gw2"],
        on_command=answer,
    )

    async def body() -> None:
        await wait_until(
            lambda: ids_on(central, GW1.alarm) == ["a1"] and ids_on(central, GW2.alarm) == ["b1"],
            "both alarms at central",
        )
        await wait_until(lambda: gw2.commands_ready, "gw2's command subscription")
        # One command answered on the operator's ResponseTopic, one on the gateway's response topic.
        await asyncio.to_thread(send_command, broker, f"{GW2.root}/cmd/status", "edge-ops/replies/r1")
        await asyncio.to_thread(send_command, broker, f"{GW2.root}/cmd/status", None)
        await asyncio.to_thread(replies.wait_for, lambda ms: len(ms) >= 1)
        await asyncio.to_thread(central.wait_for, lambda ms: any(m.topic == GW2.response for m in ms))

    drive([gw1, gw2], body)
    central.close()
    replies.close()
    assert [m.topic for m in replies.snapshot()] == ["edge-ops/replies/r1"]
    assert replies.snapshot()[0].payload == b'{"ok":true}'
    seen = {m.topic for m in central.snapshot()}
    assert {GW1.status, GW2.status, f"{GW2.root}/cmd/status"} <= seen  # births and the commands
    assert gw1.counters().refused == 0 and gw2.counters().refused == 0


def test_answers_go_only_where_an_answer_may_go_and_a_refused_one_is_counted_and_told(
    make_broker: BrokerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A ResponseTopic on the gateway's own event topics is not used (audit audsec finding 7: answers to
    unsigned garbage landed on the alarm topic); one the ACL does not grant the gateway is refused by
    the broker, which the gateway now counts and tells once (finding 11: it was ignored)."""
    broker = fleet_broker(make_broker)
    central = Subscriber(broker, "edge/#", username="central", password=PASSWORDS["central"])
    outbox = Outbox(OutboxConfig(tmp_path / "gw2.db"))
    gw2: MqttUplink

    def answer(command: Command) -> None:
        gw2.respond(command, b'{"ok":false}')

    gw2 = uplink_for(
        mqtt_config(broker, auth=password_file(tmp_path, "gw2"), client_id="gw2"),
        GW2,
        outbox,
        on_command=answer,
    )
    posing = [GW2.alarm, GW2.heartbeat, GW2.status, "edge/site9/gw2/alarm", f"{GW2.root}/cmd/x"]

    async def body() -> None:
        await wait_until(lambda: gw2.commands_ready, "gw2's command subscription")
        for topic in posing:
            await asyncio.to_thread(send_command, broker, f"{GW2.root}/cmd/status", topic)
        await asyncio.to_thread(
            central.wait_for, lambda ms: len([m for m in ms if m.topic == GW2.response]) == len(posing)
        )
        for n in (1, 2):  # outside the gateway's ACL grant: the broker refuses (0x87)
            await asyncio.to_thread(send_command, broker, f"{GW2.root}/cmd/status", f"ops-private/r{n}")
            await wait_until(lambda n=n: gw2.counters().answers_refused == n, "the refusal counted")

    with caplog.at_level(logging.WARNING, logger="agent.uplink"):
        drive([gw2], body)
    central.close()
    answers = [m.topic for m in central.snapshot() if m.payload == b'{"ok":false}']
    assert answers == [GW2.response] * len(posing)  # none on the event topics: all on cmd/response
    told = [r.getMessage() for r in caplog.records if "answer to a remote command" in r.getMessage()]
    assert len(told) == 1, told  # the second refusal is counted, not logged again
    assert "ops-private/r1" in told[0] and "0x87" in told[0] and "ACL" in told[0]
    assert gw2.counters().answers_refused == 2 and gw2.counters().refused == 0


def test_a_refused_answers_long_response_topic_is_shortened_in_the_log(
    make_broker: BrokerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Review remote #4: the ResponseTopic is the sender's choice, up to 64 KB, and the refusal's
    warning quoted it whole; it keeps its first 80 characters and says how long it was."""
    broker = fleet_broker(make_broker)
    gw2: MqttUplink

    def answer(command: Command) -> None:
        gw2.respond(command, b'{"ok":false}')

    gw2 = uplink_for(
        mqtt_config(broker, auth=password_file(tmp_path, "gw2"), client_id="gw2"),
        GW2,
        Outbox(OutboxConfig(tmp_path / "gw2.db")),
        on_command=answer,
    )
    long_topic = "ops-private/" + "x" * 65_000  # outside the gateway's ACL grant: refused (0x87)

    async def body() -> None:
        await wait_until(lambda: gw2.commands_ready, "gw2's command subscription")
        await asyncio.to_thread(send_command, broker, f"{GW2.root}/cmd/status", long_topic)
        await wait_until(lambda: gw2.counters().answers_refused == 1, "the refusal counted")

    with caplog.at_level(logging.WARNING, logger="agent.uplink"):
        drive([gw2], body)
    (told,) = [r.getMessage() for r in caplog.records if "answer to a remote command" in r.getMessage()]
    assert len(told) < 1500, len(told)  # failed before: the whole 65,012 characters
    assert f"{long_topic[:80]}… ({len(long_topic)} characters)" in told and "0x87" in told


def send_command(broker: LocalBroker, topic: str, response_topic: str | None) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.username_pw_set("central", PASSWORDS["central"])
    client.connect(broker.host, broker.port)
    client.loop_start()
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if response_topic is not None:
        props.ResponseTopic = response_topic
    props.CorrelationData = b"c1"
    try:
        client.publish(topic, b"{}", qos=1, properties=props).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


# -- authentication -------------------------------------------------------------------------------------


@pytest.mark.parametrize("credentials", ["anonymous", "wrong password"])
def test_unauthenticated_gateway_is_refused_and_its_alarm_waits(
    credentials: str, make_broker: BrokerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = fleet_broker(make_broker)
    outbox = Outbox(OutboxConfig(tmp_path / "gw1.db"))
    outbox.put(alarm("a1", GW1))
    auth = None if credentials == "anonymous" else password_file(tmp_path, "gw1", "not-the-password")
    refused = uplink_for(mqtt_config(broker, auth=auth), GW1, outbox)

    async def body() -> None:
        await wait_until(lambda: refused.counters().failed_attempts >= 2, "two refused CONNECTs")

    with caplog.at_level(logging.WARNING, logger="agent.uplink.mqtt"):
        drive([refused], body)
    counters = refused.counters()
    assert (counters.connects, counters.published, counters.delivered, counters.refused) == (0, 0, 0, 0)
    assert outbox.depth() == 1 and outbox.refused_count() == 0
    # 0x86 bad user name or password / 0x87 not authorized: a refusal, never a success code, told
    # once for the repeated attempts (the uplink logs a connection problem when it changes).
    (line,) = connack_refused(caplog)
    assert "0x86" in line or "0x87" in line

    # The same outbox, now with the right password: the alarm that waited goes out.
    allowed = uplink_for(mqtt_config(broker, auth=password_file(tmp_path, "gw1")), GW1, outbox)

    async def deliver() -> None:
        await wait_until(lambda: outbox.depth() == 0, "delivery with the right password")

    drive([allowed], deliver)
    assert allowed.counters().delivered == 1


# -- certificates ----------------------------------------------------------------------------------------


def test_expired_client_certificate_is_refused_by_the_broker(
    make_broker: BrokerFactory, tmp_path: Path
) -> None:
    pki = Pki(tmp_path / "pki")
    server = pki.issue("127.0.0.1", stem="server", server=True)
    broker = make_broker(tls=BrokerTls(pki.ca, server.cert, server.key, require_certificate=True))
    now = datetime.datetime.now(datetime.UTC)
    expired = pki.issue("gw1", stem="gw1-expired", valid_from=now - 30 * DAY, valid_until=now - DAY)
    outbox = Outbox(OutboxConfig(tmp_path / "gw1.db"))
    outbox.put(alarm("a1", GW1))
    tls = TlsConfig(ca_file=pki.ca, cert_file=expired.cert, key_file=expired.key)
    refused = uplink_for(mqtt_config(broker, tls=tls), GW1, outbox)

    async def body() -> None:
        # mosquitto logs "certificate verify failed" without the reason; the renewal below shows
        # that the expiry was the reason.
        await wait_until(broker_log_has(broker.log_path, VERIFY_FAILED, 2), "broker rejects the cert")

    drive([refused], body)
    assert refused.counters().connects == 0 and refused.counters().published == 0
    assert outbox.depth() == 1 and outbox.refused_count() == 0

    # A renewed certificate from the same CA: the alarm that waited goes out.
    renewed = pki.issue("gw1", stem="gw1-renewed")
    tls = TlsConfig(ca_file=pki.ca, cert_file=renewed.cert, key_file=renewed.key)
    allowed = uplink_for(mqtt_config(broker, tls=tls), GW1, outbox)

    async def deliver() -> None:
        await wait_until(lambda: outbox.depth() == 0, "delivery with the renewed certificate")

    drive([allowed], deliver)
    assert allowed.counters().delivered == 1


def test_revoked_client_certificate_is_refused_and_the_fleet_keeps_delivering(
    make_broker: BrokerFactory, tmp_path: Path
) -> None:
    """A stolen gateway: the CA revokes its certificate (mosquitto `crlfile`); its alarms cannot go
    in, the other gateways' still do. A broker reads the CRL when it starts: revoking a gateway means
    a new CRL and a broker restart, which also drops the revoked gateway's open connection."""
    pki = Pki(tmp_path / "pki")
    server = pki.issue("127.0.0.1", stem="server", server=True)
    gw1, gw2 = pki.issue("gw1"), pki.issue("gw2")
    crl = pki.revoke()  # nothing revoked yet
    broker = make_broker(
        tls=BrokerTls(pki.ca, server.cert, server.key, require_certificate=True, crlfile=crl)
    )
    outboxes = {name: Outbox(OutboxConfig(tmp_path / f"{name}.db")) for name in ("gw1", "gw2")}
    uplinks = {
        name: uplink_for(
            mqtt_config(broker, tls=TlsConfig(ca_file=pki.ca, cert_file=c.cert, key_file=c.key)),
            topics,
            outboxes[name],
        )
        for name, c, topics in (("gw1", gw1, GW1), ("gw2", gw2, GW2))
    }

    async def before() -> None:
        for name in ("gw1", "gw2"):
            outboxes[name].put(alarm(f"{name}-before", GW1 if name == "gw1" else GW2))
        await wait_until(lambda: all(o.depth() == 0 for o in outboxes.values()), "both deliver")

    drive(list(uplinks.values()), before)

    pki.revoke(gw1)  # gw1 reported stolen
    broker.restart()
    restarted = {name: uplink_for(u.config, u.topics, outboxes[name]) for name, u in uplinks.items()}

    async def after() -> None:
        outboxes["gw1"].put(alarm("gw1-after", GW1))
        outboxes["gw2"].put(alarm("gw2-after", GW2))
        await wait_until(lambda: outboxes["gw2"].depth() == 0, "gw2 still delivers")
        await wait_until(broker_log_has(broker.log_path, VERIFY_FAILED, 2), "broker rejects gw1's cert")

    drive(list(restarted.values()), after)
    assert restarted["gw1"].counters().connects == 0 and restarted["gw1"].counters().published == 0
    assert outboxes["gw1"].depth() == 1  # the stolen gateway's alarm never left it
    assert restarted["gw2"].counters().delivered == 1


def test_expired_server_certificate_is_refused_by_the_agent(
    make_broker: BrokerFactory, tmp_path: Path
) -> None:
    pki = Pki(tmp_path / "pki")
    now = datetime.datetime.now(datetime.UTC)
    expired = pki.issue(
        "127.0.0.1", stem="server", server=True, valid_from=now - 30 * DAY, valid_until=now - DAY
    )
    broker = make_broker(tls=BrokerTls(pki.ca, expired.cert, expired.key))
    outbox = Outbox(OutboxConfig(tmp_path / "gw1.db"))
    outbox.put(alarm("a1", GW1))
    uplink = uplink_for(mqtt_config(broker, tls=TlsConfig(ca_file=pki.ca)), GW1, outbox)
    seen: dict[str, int] = {}

    async def body() -> None:
        # The agent aborts the handshake with a "certificate expired" alert, which the broker logs.
        await wait_until(broker_log_has(broker.log_path, "certificate expired"), "agent rejects the cert")
        seen["connects"], seen["depth"] = uplink.counters().connects, outbox.depth()
        # Renew the broker's certificate in place and restart it: the running uplink gets through.
        pki.issue("127.0.0.1", stem="server", server=True)
        await asyncio.to_thread(broker.restart)
        await wait_until(lambda: outbox.depth() == 0, "delivery after the renewal")

    drive([uplink], body)
    assert seen == {"connects": 0, "depth": 1}
    assert uplink.counters().delivered == 1 and uplink.counters().connects == 1


# -- the example mosquitto.conf, as shipped --------------------------------------------------------------


@dataclass(frozen=True)
class Listener:
    host: str
    port: int


@dataclass(frozen=True)
class ExampleBroker:
    """deploy/mosquitto/mosquitto.conf running with test ports, test PKI and the repository ACL."""

    gateways: Listener  # listener 8883: mutual TLS, CN = user name
    services: Listener  # listener 8884: TLS + password
    pki: Pki
    server: Issued
    log_path: Path
    config_text: str

    def tls_for(self, cert: Issued | None = None) -> TlsConfig:
        if cert is None:
            return TlsConfig(ca_file=self.pki.ca)
        return TlsConfig(ca_file=self.pki.ca, cert_file=cert.cert, key_file=cert.key)


def example_config(text: str, replacements: dict[str, str]) -> str:
    """The example with each placeholder replaced; fails when one is missing, so the test notices
    when the example changes shape."""
    for old, new in replacements.items():
        assert old in text, f"deploy/mosquitto/mosquitto.conf no longer contains {old!r}"
        text = text.replace(old, new)
    live = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    stray = [line for line in live if "/etc/" in line or "/var/" in line]
    assert stray == [], f"paths the test does not substitute: {stray}"
    return text


def wait_listening(proc: subprocess.Popen[bytes], ports: Sequence[int], log_path: Path) -> None:
    deadline = time.monotonic() + 10
    for port in ports:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"mosquitto exited ({proc.returncode}):\n{log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"mosquitto not listening on {port}:\n{log_path.read_text()}"
                    ) from exc
                time.sleep(0.05)


@pytest.fixture
def example_broker(tmp_path: Path) -> Iterator[ExampleBroker]:
    binary = find_mosquitto()
    if binary is None:
        pytest.fail("the mosquitto broker is required by the tests: apt-get install mosquitto", pytrace=False)
    pki = Pki(tmp_path / "pki", "fleet")
    server = pki.issue("127.0.0.1", stem="broker", server=True)
    work = tmp_path / "example-broker"
    (work / "db").mkdir(parents=True)
    passwd = work / "passwd"
    passwd.write_text(f"central:{hash_password(PASSWORDS['central'])}\n")
    passwd.chmod(0o600)
    log_path = work / "mosquitto.log"
    gateways, services = Listener("127.0.0.1", free_port()), Listener("127.0.0.1", free_port())
    text = example_config(
        (DEPLOY / "mosquitto.conf").read_text(),
        {
            "listener 8883": f"listener {gateways.port} 127.0.0.1",
            "listener 8884": f"listener {services.port} 127.0.0.1",
            "/etc/mosquitto/certs/fleet-ca.pem": str(pki.ca),
            "/etc/mosquitto/certs/broker.pem": str(server.cert),
            "/etc/mosquitto/certs/broker.key": str(server.key),
            "/etc/mosquitto/acl": str(DEPLOY / "acl"),  # the repository file itself
            "/etc/mosquitto/passwd": str(passwd),
            "/var/lib/mosquitto/": f"{work / 'db'}/",
            "/var/log/mosquitto/mosquitto.log": str(log_path),
            # As root mosquitto would switch to the "mosquitto" user, which cannot read tmp_path.
            "user mosquitto": "user root" if os.geteuid() == 0 else "user mosquitto",
        },
    )
    conf = work / "mosquitto.conf"
    conf.write_text(text)
    proc = subprocess.Popen(
        [str(binary), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=work
    )
    try:
        wait_listening(proc, (gateways.port, services.port), log_path)
        yield ExampleBroker(gateways, services, pki, server, log_path, text)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_example_config_gateway_delivers_over_mutual_tls_and_central_receives(
    example_broker: ExampleBroker, tmp_path: Path
) -> None:
    broker = example_broker
    central = Subscriber(
        broker.services, "edge/#", username="central", password="pw-central", tls=broker.tls_for()
    )
    gw1_cert = broker.pki.issue("gw1")
    outbox = Outbox(OutboxConfig(tmp_path / "gw1.db"))
    outbox.put(alarm("a1", GW1))
    refusals: list[tuple[str, int]] = []
    outbox.put(alarm("forged", GW2))
    # No user name or password: the certificate's CN is the identity on this listener.
    config = mqtt_config(broker.gateways, tls=broker.tls_for(gw1_cert))
    uplink = uplink_for(config, GW1, outbox, refusals=refusals)

    async def body() -> None:
        await wait_until(
            lambda: "a1" in ids_on(central, GW1.alarm) and len(refusals) == 1, "a1 and a refusal"
        )

    drive([uplink], body)
    central.close()
    assert outbox.depth() == 0 and [i.id for i in outbox.refused_items()] == ["forged"]
    assert refusals == [("forged", NOT_AUTHORIZED)]
    assert ids_on(central, GW2.alarm) == []
    assert uplink.counters().delivered == 1


def test_example_config_refuses_clients_without_credentials(
    example_broker: ExampleBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = example_broker
    outbox = Outbox(OutboxConfig(tmp_path / "gw1.db"))
    outbox.put(alarm("a1", GW1))
    now = datetime.datetime.now(datetime.UTC)
    expired = broker.pki.issue("gw1", stem="gw1-expired", valid_from=now - 30 * DAY, valid_until=now - DAY)
    wrong_password = password_file(tmp_path, "central", "not-the-password")
    log = broker.log_path
    attempts: list[tuple[str, MqttConfig, Callable[[], bool]]] = [
        # Gateway listener: TLS without a client certificate, then with an expired one.
        (
            "no client certificate",
            mqtt_config(broker.gateways, tls=broker.tls_for()),
            broker_log_has(log, "peer did not return a certificate"),
        ),
        (
            "expired client certificate",
            mqtt_config(broker.gateways, tls=broker.tls_for(expired)),
            broker_log_has(log, VERIFY_FAILED),
        ),
        # Service listener: anonymous, then a wrong password (the CONNACK refuses them).
        (
            "anonymous",
            mqtt_config(broker.services, tls=broker.tls_for()),
            lambda: len(connack_refused(caplog)) >= 1,
        ),
        (
            "wrong password",
            mqtt_config(broker.services, tls=broker.tls_for(), auth=wrong_password),
            lambda: len(connack_refused(caplog)) >= 1,
        ),
    ]
    for what, config, refused in attempts:
        caplog.clear()
        uplink = uplink_for(config, GW1, outbox)

        async def body() -> None:
            await wait_until(refused, f"{what}: refusal")  # noqa: B023  (awaited in this iteration)

        with caplog.at_level(logging.WARNING, logger="agent.uplink.mqtt"):
            drive([uplink], body)
        counters = uplink.counters()
        assert (counters.connects, counters.published) == (0, 0), what
        assert outbox.depth() == 1 and outbox.refused_count() == 0, what


def test_example_config_disconnects_a_client_sending_an_oversized_packet(
    example_broker: ExampleBroker, tmp_path: Path
) -> None:
    """max_packet_size: told to v5 clients in the CONNACK; a bigger PUBLISH costs the client its
    connection and is forwarded to nobody."""
    broker = example_broker
    limit = int(
        next(
            line.split()[1] for line in broker.config_text.splitlines() if line.startswith("max_packet_size")
        )
    )
    central = Subscriber(
        broker.services, "edge/#", username="central", password="pw-central", tls=broker.tls_for()
    )
    cert = broker.pki.issue("gw1")
    connack: dict[str, Any] = {}
    connected = threading.Event()
    disconnects: list[int] = []

    def on_connect(_c: paho.Client, _u: Any, _f: Any, rc: Any, props: Any) -> None:
        connack.update(rc=rc.value, props=props)
        connected.set()

    # One connection only: no automatic reconnect that would send the oversized message again.
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id="gw1", protocol=paho.MQTTv5, reconnect_on_failure=False
    )
    client.tls_set(ca_certs=str(broker.pki.ca), certfile=str(cert.cert), keyfile=str(cert.key))
    client.on_connect = on_connect
    client.on_disconnect = lambda _c, _u, _f, rc, _p: disconnects.append(int(rc.value))
    client.connect(broker.gateways.host, broker.gateways.port)
    client.loop_start()
    try:
        assert connected.wait(8), "no CONNACK"
        client.publish(GW1.alarm, b"x" * limit, qos=1)  # payload alone = limit: packet > limit
        deadline = time.monotonic() + 8
        while not disconnects and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        client.disconnect()
        client.loop_stop()
    assert connack["rc"] == 0 and connack["props"].MaximumPacketSize == limit
    # mosquitto 2.0.11 closes the connection without a DISCONNECT packet: paho reports 0x80.
    assert disconnects and disconnects[0] >= 0x80
    # Barrier: the gateway's next, ordinary alarm; the oversized one never reached central.
    outbox = Outbox(OutboxConfig(tmp_path / "gw1.db"))
    outbox.put(alarm("a1", GW1))
    uplink = uplink_for(mqtt_config(broker.gateways, tls=broker.tls_for(cert)), GW1, outbox)

    async def body() -> None:
        await wait_until(lambda: "a1" in ids_on(central, GW1.alarm), "the ordinary alarm delivered")

    drive([uplink], body)
    central.close()
    assert [len(m.payload) for m in central.snapshot() if m.topic == GW1.alarm] == [len(b'{"id": "a1"}')]


def test_example_config_ties_the_client_id_to_the_certificate(
    example_broker: ExampleBroker, tmp_path: Path
) -> None:
    """gw2 connecting with gw1's client id does not take over gw1's session (use_username_as_clientid)."""
    broker = example_broker
    central = Subscriber(
        broker.services, "edge/#", username="central", password="pw-central", tls=broker.tls_for()
    )
    outboxes = {name: Outbox(OutboxConfig(tmp_path / f"{name}.db")) for name in ("gw1", "gw2")}
    outboxes["gw1"].put(alarm("a1", GW1))
    outboxes["gw2"].put(alarm("b1", GW2))
    gw1 = uplink_for(
        mqtt_config(broker.gateways, tls=broker.tls_for(broker.pki.issue("gw1"))), GW1, outboxes["gw1"]
    )
    gw2_as_gw1 = mqtt_config(broker.gateways, tls=broker.tls_for(broker.pki.issue("gw2")), client_id="gw1")
    gw2 = uplink_for(gw2_as_gw1, GW2, outboxes["gw2"])

    async def body() -> None:
        await wait_until(lambda: ids_on(central, GW1.alarm) == ["a1"], "gw1 delivers")
        task = asyncio.create_task(gw2.run())
        await wait_until(lambda: ids_on(central, GW2.alarm) == ["b1"], "gw2 delivers")
        # Had gw2 taken over gw1's client id, gw1 would have been disconnected and would
        # reconnect before delivering this one.
        outboxes["gw1"].put(alarm("a2", GW1))
        gw1.notify()
        await wait_until(lambda: ids_on(central, GW1.alarm) == ["a1", "a2"], "gw1 delivers again")
        await gw2.stop(timeout_s=1.0)
        await asyncio.wait_for(task, 10)

    drive([gw1], body)
    central.close()
    assert gw1.counters().reconnects == 0 and gw2.counters().reconnects == 0
    assert outboxes["gw1"].depth() == 0 and outboxes["gw2"].depth() == 0
