"""MqttUplink against a real mosquitto: delivery with ids, birth/Will/clean offline, refusals, auth."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from uplink_probe import Received, Subscriber, mqtt_config

from agent.config.schema import AuthConfig, OutboxConfig
from agent.errors import ConfigError
from agent.events import DeviceHealth, Heartbeat
from agent.localbroker import LocalBroker
from agent.outbox import Kind, Outbox, OutboxItem
from agent.uplink.connection import speaks_v5
from agent.uplink.mqtt import Command, MqttUplink, publish_packet_size
from agent.uplink.topics import Topics

BrokerFactory = Callable[..., LocalBroker]
TOPICS = Topics("edge", "site1", "gw1")


def alarm_item(n: int, topic: str = TOPICS.alarm) -> OutboxItem:
    payload = json.dumps({"id": f"ev{n}", "n": n}).encode()
    return OutboxItem(f"ev{n}", topic, payload, Kind.ALARM, n % 3, 1_700_000_000.0 + n)


def ids(messages: list[Received], topic: str = TOPICS.alarm) -> set[str]:
    return {m.json()["id"] for m in messages if m.topic == topic}


async def with_uplink(uplink: MqttUplink, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    task = asyncio.create_task(uplink.run())
    try:
        await body()
    finally:
        await uplink.stop()
        await asyncio.wait_for(task, 10)


def test_events_reach_a_subscriber_with_ids_and_leave_the_outbox(
    mosquitto: LocalBroker, tmp_path: Path
) -> None:
    outbox = Outbox(OutboxConfig(tmp_path / "o.db"))
    sub = Subscriber(mosquitto, "edge/site1/gw1/#")
    for n in range(50):
        outbox.put(alarm_item(n))
    hb = Heartbeat("gw1", 1_700_000_000.0, 1.0, 7, (DeviceHealth("d", None, 0.0, 0, 0, False),), 0, None, 0)
    uplink = MqttUplink(mqtt_config(mosquitto), TOPICS, outbox, session=7, backoff_min_s=0.1)
    outbox.put_heartbeat(hb, TOPICS.heartbeat, 120)

    async def body() -> None:
        await asyncio.to_thread(
            sub.wait_for, lambda ms: len(ids(ms)) == 50 and any(m.topic == TOPICS.heartbeat for m in ms)
        )
        for n in range(50, 60):  # put while running: notify() drains without waiting for the poll
            outbox.put(alarm_item(n))
            uplink.notify()
        await asyncio.to_thread(sub.wait_for, lambda ms: len(ids(ms)) == 60)
        for _ in range(100):
            if outbox.depth() == 0:
                break
            await asyncio.sleep(0.05)

    asyncio.run(with_uplink(uplink, body))
    messages = sub.snapshot()
    sub.close()
    assert ids(messages) == {f"ev{n}" for n in range(60)}
    assert outbox.depth() == 0 and outbox.refused_count() == 0
    counters = uplink.counters()
    assert counters.delivered == 61 and counters.published == 61 and counters.refused == 0
    (beat,) = [m for m in messages if m.topic == TOPICS.heartbeat]
    assert beat.json()["session"] == 7
    assert 0 < beat.properties["MessageExpiryInterval"] <= 120
    alarms = [m.json()["n"] for m in messages if m.topic == TOPICS.alarm]
    # High priority (rank 0) rows of the initial batch drain before low ones.
    first_batch = alarms[:50]
    ranks = [n % 3 for n in first_batch]
    assert ranks == sorted(ranks)
    # The status topic saw the birth then the clean offline, never the Will.
    statuses = [m.json() for m in messages if m.topic == TOPICS.status]
    assert [s["state"] for s in statuses] == ["online", "offline"]
    assert statuses[0]["session"] == 7 and statuses[0]["schema"] == "edge-agent/status/1"
    assert statuses[1]["clean"] is True


def test_birth_is_retained_and_clean_stop_leaves_retained_offline(
    mosquitto: LocalBroker, tmp_path: Path
) -> None:
    outbox = Outbox(OutboxConfig(tmp_path / "o.db"))
    uplink = MqttUplink(mqtt_config(mosquitto), TOPICS, outbox, session=3, backoff_min_s=0.1)

    async def body() -> None:
        for _ in range(200):
            if uplink.connected:
                break
            await asyncio.sleep(0.05)
        late = await asyncio.to_thread(Subscriber, mosquitto, TOPICS.status)
        (birth,) = await asyncio.to_thread(late.wait_for, lambda ms: len(ms) >= 1)
        late.close()
        assert birth.retain and birth.json()["state"] == "online" and birth.json()["session"] == 3

    asyncio.run(with_uplink(uplink, body))
    after = Subscriber(mosquitto, TOPICS.status)
    (offline,) = after.wait_for(lambda ms: len(ms) >= 1)
    after.close()
    assert offline.retain
    assert offline.json() == {**offline.json(), "state": "offline", "clean": True, "session": 3}


AGENT = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from agent.config.schema import MqttConfig, OutboxConfig
    from agent.outbox import Outbox
    from agent.uplink.mqtt import MqttUplink
    from agent.uplink.topics import Topics

    async def main() -> None:
        cfg = MqttConfig(host="127.0.0.1", port=int(sys.argv[1]), tls=None, client_id="gw1", keepalive_s=5)
        uplink = MqttUplink(cfg, Topics("edge", "site1", "gw1"), Outbox(OutboxConfig(Path(sys.argv[2]))), 42)
        task = asyncio.create_task(uplink.run())
        while not uplink.connected:
            await asyncio.sleep(0.05)
        print("connected", flush=True)
        await task

    asyncio.run(main())
    """
)


def test_will_is_published_when_the_agent_process_is_killed(mosquitto: LocalBroker, tmp_path: Path) -> None:
    sub = Subscriber(mosquitto, TOPICS.status)
    proc = subprocess.Popen(
        [sys.executable, "-c", AGENT, str(mosquitto.port), str(tmp_path / "o.db")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "connected"
        sub.wait_for(lambda ms: any(m.json()["state"] == "online" for m in ms))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        messages = sub.wait_for(lambda ms: any(m.json()["state"] == "offline" for m in ms))
    finally:
        proc.kill()
        sub.close()
    will = next(m.json() for m in messages if m.json()["state"] == "offline")
    assert will == {**will, "clean": False, "session": 42, "gateway": "gw1"}
    retained = Subscriber(mosquitto, TOPICS.status)
    (kept,) = retained.wait_for(lambda ms: len(ms) >= 1)
    retained.close()
    assert kept.retain and kept.json()["state"] == "offline" and kept.json()["clean"] is False


def test_acl_refusal_keeps_the_item_aside_and_calls_on_refused(
    make_broker: BrokerFactory, tmp_path: Path
) -> None:
    acl = "user gw1\ntopic readwrite edge/site1/gw1/#\n"
    broker = make_broker(allow_anonymous=False, users={"gw1": "pw\u00e9"}, acl=acl)
    password_file = tmp_path / "password"
    password_file.write_text("pw\u00e9\n")  # the trailing newline is not part of the password
    password_file.chmod(0o600)  # a secret others can read is refused
    config = mqtt_config(broker, auth=AuthConfig("gw1", password_file))
    outbox = Outbox(OutboxConfig(tmp_path / "o.db"))
    refusals: list[tuple[str, int]] = []
    uplink = MqttUplink(
        config,
        TOPICS,
        outbox,
        1,
        on_refused=lambda item, rc: refusals.append((item.id, rc)),
        backoff_min_s=0.1,
    )
    outbox.put(alarm_item(1, topic="edge/site1/other-gateway/alarm"))
    outbox.put(alarm_item(2))

    async def body() -> None:
        for _ in range(200):
            if uplink.counters().delivered + uplink.counters().refused >= 2:
                return
            await asyncio.sleep(0.05)

    asyncio.run(with_uplink(uplink, body))
    assert refusals == [("ev1", 0x87)]
    assert outbox.refused_count() == 1 and outbox.depth() == 0
    (kept,) = outbox.refused_items()
    assert kept.id == "ev1" and kept.reason_code == 0x87
    assert uplink.counters().delivered == 1  # ev2; status messages are not outbox items
    assert uplink.counters().refused == 1


def test_plain_mqtt_to_a_remote_host_needs_insecure(mosquitto: LocalBroker, tmp_path: Path) -> None:
    outbox = Outbox(OutboxConfig(tmp_path / "o.db"))
    remote = mqtt_config(mosquitto, host="broker.example.org")
    with pytest.raises(ConfigError) as info:
        MqttUplink(remote, TOPICS, outbox, 1)
    assert info.value.path == "mqtt.host"
    MqttUplink(replace(remote, insecure=True), TOPICS, outbox, 1)  # accepted when asked for explicitly


def test_missing_password_file_is_a_config_error(mosquitto: LocalBroker, tmp_path: Path) -> None:
    config = mqtt_config(mosquitto, auth=AuthConfig("gw1", tmp_path / "nope"))
    with pytest.raises(ConfigError) as info:
        MqttUplink(config, TOPICS, Outbox(OutboxConfig(tmp_path / "o.db")), 1)
    assert info.value.path == "mqtt.auth.password_file"


def test_cancelled_run_ends_paho_and_lets_the_will_speak(mosquitto: LocalBroker, tmp_path: Path) -> None:
    sub = Subscriber(mosquitto, TOPICS.status)
    uplink = MqttUplink(mqtt_config(mosquitto), TOPICS, Outbox(OutboxConfig(tmp_path / "o.db")), 5)

    async def main() -> None:
        task = asyncio.create_task(uplink.run())
        for _ in range(200):
            if uplink.connected:
                break
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    try:
        messages = sub.wait_for(lambda ms: any(m.json()["state"] == "offline" for m in ms), timeout=5)
    finally:
        sub.close()
    assert [m.json()["state"] for m in messages] == ["online", "offline"]
    assert messages[1].json()["clean"] is False and messages[1].json()["session"] == 5
    # No orphan network thread left reconnecting.
    assert not any(t.name == "paho-mqtt-client-gw1" for t in threading.enumerate())


def test_commands_are_delivered_and_answered_on_their_response_topic(
    mosquitto: LocalBroker, tmp_path: Path
) -> None:
    answers = Subscriber(mosquitto, "backend/answers")
    commands: list[Command] = []
    outbox = Outbox(OutboxConfig(tmp_path / "o.db"))
    uplink: MqttUplink

    def on_command(command: Command) -> None:
        commands.append(command)
        uplink.respond(command, b'{"ok":true}')

    uplink = MqttUplink(mqtt_config(mosquitto), TOPICS, outbox, 1, on_command=on_command, backoff_min_s=0.1)

    async def body() -> None:
        for _ in range(200):
            if uplink.commands_ready:
                break
            await asyncio.sleep(0.05)
        sender = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        sender.connect(mosquitto.host, mosquitto.port)
        sender.loop_start()
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = "backend/answers"
        props.CorrelationData = b"req-1"
        sender.publish(f"{TOPICS.root}/cmd/status", b"{}", qos=1, properties=props).wait_for_publish(5)
        sender.loop_stop()
        sender.disconnect()
        await asyncio.to_thread(answers.wait_for, lambda ms: len(ms) >= 1)

    asyncio.run(with_uplink(uplink, body))
    answers.close()
    (command,) = commands
    assert command.topic == "edge/site1/gw1/cmd/status"
    assert (command.response_topic, command.correlation_data) == ("backend/answers", b"req-1")
    (answer,) = answers.snapshot()
    assert answer.payload == b'{"ok":true}'
    assert bytes.fromhex(answer.properties["CorrelationData"]) == b"req-1"


def test_a_local_broker_without_v5_gets_nothing_unless_mqtt_311_is_chosen(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # With MQTT 3.1.1 an ACL refusal is acknowledged like a delivery (the review's amqtt with a deny
    # ACL: 2 alarms deleted as delivered). So no fallback of its own, even for a loopback broker.
    outbox = Outbox(OutboxConfig(tmp_path / "o.db"))
    for n in range(5):
        outbox.put(alarm_item(n))
    with LocalBroker(workdir=tmp_path / "amqtt", backend="amqtt") as broker:  # MQTT 3.1.1 only
        uplink = MqttUplink(mqtt_config(broker), TOPICS, outbox, 1, backoff_min_s=0.05, backoff_max_s=0.1)

        async def body() -> None:
            for _ in range(100):
                if uplink.counters().failed_attempts >= 3:
                    return
                await asyncio.sleep(0.05)

        with caplog.at_level(logging.INFO, logger="agent.uplink.mqtt"):
            asyncio.run(with_uplink(uplink, body))
    assert outbox.depth() == 5 and uplink.counters().connects == 0
    problem = uplink.counters().problem or ""
    assert uplink.counters().failed_attempts >= 3, problem
    assert "does not speak MQTT v5" in problem and 'mqtt.protocol = "3.1.1"' in problem
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and problem in warnings[0], warnings  # once, not per probe


def test_mqtt_311_chosen_for_a_local_broker_without_v5_delivers(tmp_path: Path) -> None:
    outbox = Outbox(OutboxConfig(tmp_path / "o.db"))
    for n in range(5):
        outbox.put(alarm_item(n))
    with LocalBroker(workdir=tmp_path / "amqtt", backend="amqtt") as broker:  # MQTT 3.1.1 only
        config = replace(mqtt_config(broker), protocol="3.1.1")
        uplink = MqttUplink(config, TOPICS, outbox, 1, backoff_min_s=0.1)

        async def body() -> None:
            for _ in range(300):
                if outbox.depth() == 0:
                    return
                await asyncio.sleep(0.05)

        asyncio.run(with_uplink(uplink, body))
    assert outbox.depth() == 0 and outbox.refused_count() == 0
    assert uplink.counters().delivered == 5 and uplink.counters().connects == 1


def test_v5_probe_tells_mosquitto_from_a_311_only_broker(mosquitto: LocalBroker, tmp_path: Path) -> None:
    assert speaks_v5(mosquitto.host, mosquitto.port) is True
    with LocalBroker(workdir=tmp_path / "amqtt", backend="amqtt") as amqtt:
        assert speaks_v5(amqtt.host, amqtt.port) is False
    assert speaks_v5("127.0.0.1", amqtt.port, timeout_s=1) is None  # nobody listening


def test_an_item_over_the_brokers_packet_limit_is_refused_unsent_and_does_not_block_the_rest(
    make_broker: BrokerFactory, tmp_path: Path
) -> None:
    limit = 2000
    broker = make_broker(extra_config=f"max_packet_size {limit}\n")
    outbox = Outbox(OutboxConfig(tmp_path / "o.db"))
    refusals: list[tuple[str, int]] = []
    uplink = MqttUplink(
        mqtt_config(broker),
        TOPICS,
        outbox,
        1,
        on_refused=lambda item, rc: refusals.append((item.id, rc)),
        backoff_min_s=0.1,
    )

    def sized(item_id: str, priority: int, packet_bytes: int) -> OutboxItem:
        """An alarm whose PUBLISH packet is exactly `packet_bytes` long."""
        overhead = publish_packet_size(TOPICS.alarm, b"", Properties(PacketTypes.PUBLISH))
        # The remaining-length field grows by one byte past 127: both sizes here are past it.
        payload = b"x" * (packet_bytes - overhead - 1)
        item = OutboxItem(item_id, TOPICS.alarm, payload, Kind.ALARM, priority, 1_700_000_000.0)
        assert publish_packet_size(item.topic, item.payload, Properties(PacketTypes.PUBLISH)) == packet_bytes
        return item

    at_the_limit = sized("at-the-limit", 1, limit)
    outbox.put(sized("too-big", 0, limit + 1))  # first in line: the highest priority
    outbox.put(at_the_limit)
    outbox.put(alarm_item(3))
    sub = Subscriber(broker, "edge/site1/gw1/alarm")

    async def body() -> None:
        for _ in range(200):
            if uplink.counters().delivered + uplink.counters().refused >= 3:
                return
            await asyncio.sleep(0.05)

    asyncio.run(with_uplink(uplink, body))
    assert refusals == [("too-big", 0x95)]
    assert [item.id for item in outbox.refused_items()] == ["too-big"]
    assert uplink.counters().delivered == 2 and uplink.counters().connects == 1  # no reconnect loop
    got = sub.wait_for(lambda got: len(got) >= 2, 5.0)
    sub.close()
    assert sorted(m.payload for m in got) == sorted([at_the_limit.payload, alarm_item(3).payload])
