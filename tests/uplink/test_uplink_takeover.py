"""Another client with the gateway's client id (a copied `gateway.id`): the uplink names the likely cause
once and keeps it in the status, instead of only `disconnected ... 0x80 Unspecified error` per flap
(new-user review M1). A real mosquitto and a real paho client with the same id; the pattern itself:
test_takeover_watch.py."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from uplink_probe import mqtt_config

from agent.config.schema import OutboxConfig
from agent.localbroker import LocalBroker
from agent.outbox import Outbox
from agent.status import render
from agent.uplink.mqtt import MqttUplink
from agent.uplink.topics import Topics

CLIENT_ID = "gw-ward5"
TOPICS = Topics("edge", "general", CLIENT_ID)
LOGGER = "agent.uplink.mqtt"


def test_mosquitto_closes_the_older_of_two_connections_with_one_id_without_a_reason(
    mosquitto: LocalBroker,
) -> None:
    """What the uplink has to go on: mosquitto 2.0 sends no DISCONNECT 0x8E, it closes the socket (paho:
    0x80, no packet from the server) right after accepting the newcomer."""
    seen: list[tuple[int, bool]] = []
    dropped = threading.Event()

    def on_disconnect(
        _c: mqtt.Client, _u: object, flags: mqtt.DisconnectFlags, rc: object, _p: object
    ) -> None:
        seen.append((int(rc.value), flags.is_disconnect_packet_from_server))  # type: ignore[attr-defined]
        dropped.set()

    first = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=CLIENT_ID, protocol=mqtt.MQTTv5)
    first.on_disconnect = on_disconnect
    first.connect(mosquitto.host, mosquitto.port)
    first.loop_start()
    second = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=CLIENT_ID, protocol=mqtt.MQTTv5)
    try:
        time.sleep(0.5)
        second.connect(mosquitto.host, mosquitto.port)
        second.loop_start()
        assert dropped.wait(10)
        assert seen[0] == (0x80, False)
    finally:
        first.disconnect()
        second.disconnect()
        first.loop_stop()
        second.loop_stop()


def test_a_gateway_sharing_its_client_id_is_told_once_and_in_the_status(
    mosquitto: LocalBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = Outbox(OutboxConfig(tmp_path / "o.db"))
    config = mqtt_config(mosquitto, client_id=CLIENT_ID)
    uplink = MqttUplink(config, TOPICS, outbox, 1, poll_s=0.1, backoff_min_s=0.05, backoff_max_s=0.2)
    # the other gateway: a paho client with the same id that reconnects as soon as it is put out
    other = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=CLIENT_ID, protocol=mqtt.MQTTv5)
    other.reconnect_delay_set(min_delay=1, max_delay=1)

    async def main() -> None:
        task = asyncio.create_task(uplink.run())
        try:
            async with asyncio.timeout(10):
                while not uplink.connected:
                    await asyncio.sleep(0.05)
            other.connect(mosquitto.host, mosquitto.port)
            other.loop_start()
            async with asyncio.timeout(30):
                while uplink.counters().takeover is None:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(3)  # more flaps: still one line
        finally:
            other.loop_stop()
            other.disconnect()
            await uplink.stop(timeout_s=1.0)
            await asyncio.wait_for(task, 10)

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        asyncio.run(main())
    told = [r.getMessage() for r in caplog.records if "same client id" in r.getMessage()]
    assert len(told) == 1, told
    assert f"another client uses the same client id '{CLIENT_ID}'" in told[0]
    assert "is gateway.id copied from another gateway's configuration?" in told[0]
    assert uplink.counters().reconnects >= 3  # takeover.IN_A_ROW
    # `edge-agent status` says it too, connected or not
    counters = uplink.counters()
    for connected in (True, False):
        uplink_status = {"connected": connected, "problem": counters.takeover, "takeover": counters.takeover}
        text = render("live", {"heartbeat": {}, "uplink": uplink_status, "outbox": {}})
        assert "is gateway.id copied" in text
