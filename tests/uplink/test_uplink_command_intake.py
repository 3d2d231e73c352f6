"""Received commands on their way from paho's thread to the loop, through a real broker: the gateway's
own answers (they come back over MQTT 3.1.1, which has no noLocal) never use the gate's budget, and a
wake-up that found no loop to hand to is asked for again (review finding 7); an authenticated command's
answer is sent however many refusals await their PUBACK (finding 6)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from uplink_probe import Subscriber, mqtt_config

from agent.config.schema import OutboxConfig
from agent.localbroker import LocalBroker
from agent.outbox import Outbox
from agent.uplink.command_gate import BURST
from agent.uplink.mqtt import MAX_ANSWERS_PENDING, Command, MqttUplink
from agent.uplink.topics import Topics

TOPICS = Topics("edge", "site1", "gw1")


async def with_uplink(uplink: MqttUplink, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    task = asyncio.create_task(uplink.run())
    try:
        for _ in range(300):
            if uplink.commands_ready:
                break
            await asyncio.sleep(0.05)
        assert uplink.commands_ready
        await body()
    finally:
        await uplink.stop()
        await asyncio.wait_for(task, 10)


def sender(broker: LocalBroker, protocol: int) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=protocol)  # type: ignore[arg-type]
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def test_own_answers_coming_back_over_mqtt_311_do_not_use_the_command_budget(tmp_path: Path) -> None:
    commands: list[Command] = []
    uplink: MqttUplink

    def on_command(command: Command) -> None:
        commands.append(command)
        uplink.respond(command, b'{"ok":true}')  # no ResponseTopic in 3.1.1: on cmd/response, echoed back

    sent = BURST  # the whole burst: each answer that came back through the gate would cost one more
    with LocalBroker(workdir=tmp_path / "amqtt", backend="amqtt") as broker:  # MQTT 3.1.1 only
        outbox = Outbox(OutboxConfig(tmp_path / "o.db"))
        config = replace(mqtt_config(broker), protocol="3.1.1")  # amqtt: 3.1.1 is opt-in
        uplink = MqttUplink(config, TOPICS, outbox, 1, on_command=on_command, backoff_min_s=0.1)

        async def body() -> None:
            client = sender(broker, paho.MQTTv311)
            for _ in range(sent):
                client.publish(f"{TOPICS.root}/cmd/status", b"{}", qos=1).wait_for_publish(5)
                await asyncio.sleep(0.005)  # paced: the gate's queue (MAX_WAITING) is not what is tested
            client.loop_stop()
            client.disconnect()
            deadline = time.monotonic() + 10
            while len(commands) < sent and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # the last answers' echoes

        asyncio.run(with_uplink(uplink, body))
    assert len(commands) == sent
    assert uplink.counters().commands_dropped == 0


def test_a_command_before_the_loop_runs_does_not_stop_later_ones(
    mosquitto: LocalBroker, tmp_path: Path
) -> None:
    commands: list[Command] = []
    outbox = Outbox(OutboxConfig(tmp_path / "o.db"))
    uplink = MqttUplink(
        mqtt_config(mosquitto), TOPICS, outbox, 1, on_command=commands.append, backoff_min_s=0.1
    )
    early = paho.MQTTMessage(topic=f"{TOPICS.root}/cmd/status".encode())
    early.payload = b"{}"
    uplink._paho_message(uplink._client, None, early)  # as paho's thread would, with no loop to wake yet

    async def body() -> None:
        client = sender(mosquitto, paho.MQTTv5)
        client.publish(f"{TOPICS.root}/cmd/reload", b"{}", qos=1).wait_for_publish(5)
        client.loop_stop()
        client.disconnect()
        for _ in range(100):
            if commands:
                break
            await asyncio.sleep(0.05)

    asyncio.run(with_uplink(uplink, body))
    assert [c.topic for c in commands] == [f"{TOPICS.root}/cmd/status", f"{TOPICS.root}/cmd/reload"]


def test_an_authenticated_answer_is_sent_while_refusals_fill_the_answer_window(
    mosquitto: LocalBroker, tmp_path: Path
) -> None:
    """Review finding 6: with MAX_ANSWERS_PENDING refusals awaiting their PUBACK (a slow broker under an
    unsigned flood), the operator's own answer was dropped too."""
    answers = Subscriber(mosquitto, "backend/answers")
    outbox = Outbox(OutboxConfig(tmp_path / "o.db"))
    uplink = MqttUplink(
        mqtt_config(mosquitto), TOPICS, outbox, 1, on_command=lambda _c: None, backoff_min_s=0.1
    )
    request = Command(f"{TOPICS.root}/cmd/reload", b"{}", "backend/answers", b"req")

    async def body() -> None:
        mosquitto.pause()  # no PUBACK comes back: the window fills
        try:
            for _ in range(MAX_ANSWERS_PENDING + 1):
                uplink.respond(request, b"refused", authenticated=False)
            uplink.respond(request, b"ran", authenticated=True)
        finally:
            mosquitto.resume()
        await asyncio.to_thread(answers.wait_for, lambda ms: any(m.payload == b"ran" for m in ms))

    asyncio.run(with_uplink(uplink, body))
    answers.close()
    payloads = [m.payload for m in answers.snapshot()]
    assert payloads.count(b"refused") == MAX_ANSWERS_PENDING and payloads.count(b"ran") == 1
    assert uplink.counters().answers_dropped == 1
