"""The demo's receiver against the embedded amqtt broker (MQTT 3.1.1 only): the fallback `edge-agent demo`
uses where mosquitto is not installed. The agent runs the demo's own config; the receiver must print
its heartbeats and alarms, which it did not while it spoke MQTT v5 only."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import paho.mqtt.client as mqtt

from agent.daemon import Agent, preflight
from agent.demo import demo_config
from agent.localbroker import LocalBroker
from agent.receiver import Receiver

DEADLINE_S = 20.0
SPEED = 60.0  # the demo's tachycardia starts at 100 simulated s, its AF at 150 s: under 3 s real


def test_receiver_prints_demo_heartbeats_and_alarms_from_an_amqtt_broker(tmp_path: Path) -> None:
    lines: list[str] = []
    with LocalBroker(workdir=tmp_path / "amqtt", backend="amqtt") as broker:
        config = demo_config(tmp_path / "demo", broker.port, SPEED, None, protocol="3.1.1")  # as run_demo
        config = dataclasses.replace(
            config, gateway=dataclasses.replace(config.gateway, heartbeat_interval_s=0.5)
        )
        preflight(config)
        receiver = Receiver("127.0.0.1", broker.port, config.mqtt.topic_prefix, show=lines.append).start()
        try:
            assert receiver.subscribed.wait(10), "no SUBACK from the amqtt broker"
            assert receiver.protocol == mqtt.MQTTv311
            asyncio.run(_run_until(Agent(config), receiver))
        finally:
            receiver.stop()
    assert receiver.heartbeats and receiver.alarms, lines
    assert any("♥ heartbeat demo-gateway" in line for line in lines), lines
    assert any("START" in line and "tachycardia" in line for line in lines), lines
    # the ECG patch's AF, found from the beats the gateway finds in its ECG (agent/ecg), on its own stream
    assert any("START" in line and "atrial_fibrillation" in line and "/ecg_rr" in line for line in lines), (
        lines
    )
    assert all(beat["gateway"] == "demo-gateway" for beat in receiver.heartbeats)


def test_receiver_keeps_mqtt_v5_where_the_broker_speaks_it(mosquitto: LocalBroker) -> None:
    receiver = Receiver("127.0.0.1", mosquitto.port, "edge", show=lambda _line: None).start()
    try:
        assert receiver.subscribed.wait(10)
        assert receiver.protocol == mqtt.MQTTv5
    finally:
        receiver.stop()


async def _run_until(agent: Agent, receiver: Receiver) -> None:
    """Run the agent until the receiver has a heartbeat, a tachycardia and an AF alarm, or the deadline."""

    async def watch() -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        while loop.time() < deadline:
            conditions = {a["condition"] for a in receiver.alarms}
            if receiver.heartbeats and {"tachycardia", "atrial_fibrillation"} <= conditions:
                break
            await asyncio.sleep(0.1)
        agent.stopping.set()

    watcher = asyncio.create_task(watch())
    await agent.run()
    await watcher
