"""A hung broker (SIGSTOP) must not hold up the uplink's stop (ops review F1 of 2026-11-30).

The broker is frozen after the uplink published messages it never acknowledges; paho's keepalive
drops the connection and paho starts a new attempt: the frozen broker's kernel still takes the TCP
connection, so paho sends CONNECT and waits for a CONNACK up to the keepalive. paho's network thread
does not end while messages are in flight, so `loop_stop()` waited for that attempt to time out
(20-30 s with the default keepalive): a reload or a stop of the daemon waited as long, its sources
unread. `stop()` must end within a second or two, and the messages in flight must stay in the outbox
and reach the receiver through the next session once the broker answers again (docs/durability.md).
The log of that outage must also say what happened: one "disconnected ... Keep alive timeout" line
(ops review F2: paho calls on_disconnect twice for it, and the second call was taken for a failed
CONNECT and logged as "never answered CONNECT ...: is it an MQTT broker's port?").
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from uplink_probe import Subscriber, mqtt_config

from agent.config.schema import OutboxConfig
from agent.localbroker import LocalBroker
from agent.outbox import Kind, Outbox, OutboxItem
from agent.uplink.mqtt import MqttUplink
from agent.uplink.topics import Topics

TOPICS = Topics("edge", "site1", "gw1")
KEEPALIVE_S = 5
STOP_LIMIT_S = 2.0  # the offline status is not sent (not connected): this is the network thread's end


def alarm(n: int) -> OutboxItem:
    return OutboxItem(
        f"ev{n}", TOPICS.alarm, json.dumps({"id": f"ev{n}"}).encode(), Kind.ALARM, 0, time.time()
    )


async def wait_for(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


def test_stop_with_a_frozen_broker_and_messages_in_flight_is_prompt_and_loses_nothing(
    mosquitto: LocalBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.uplink.mqtt")
    config = replace(mqtt_config(mosquitto), keepalive_s=KEEPALIVE_S)
    outbox = Outbox(OutboxConfig(tmp_path / "o.db"))
    backend = Subscriber(mosquitto, TOPICS.alarm, client_id="backend", persistent=True)
    first = MqttUplink(config, TOPICS, outbox, 1, poll_s=0.1, backoff_min_s=0.1, backoff_max_s=0.2)
    stop_took = 0.0

    async def session_one() -> None:
        nonlocal stop_took
        task = asyncio.create_task(first.run())
        await wait_for(lambda: first.connected, 10, "the uplink did not connect")
        mosquitto.pause()
        for n in range(5):
            outbox.put(alarm(n))
        first.notify()
        await wait_for(lambda: first.counters().inflight == 5, 5, "the alarms were not published")
        # paho's keepalive gives up on the frozen broker (PINGREQ unanswered: up to 2 keepalives).
        await wait_for(lambda: not first.connected, 3 * KEEPALIVE_S, "the keepalive never ran out")
        await asyncio.sleep(1.0)  # paho's next attempt: TCP taken by the frozen broker's kernel, CONNECT sent
        started = time.monotonic()
        await first.stop()
        stop_took = time.monotonic() - started
        await asyncio.wait_for(task, 5)

    try:
        asyncio.run(session_one())
        print(f"stop() with a frozen broker took {stop_took:.2f} s")
        assert stop_took < STOP_LIMIT_S, f"stop() took {stop_took:.1f} s with a frozen broker"
        # paho's network thread has ended: nothing of this session can reconnect or publish later.
        assert not any(t.name == "paho-mqtt-client-gw1" for t in threading.enumerate())
        # Nothing was acknowledged: the five alarms are all still in the outbox.
        assert outbox.depth() == 5
    finally:
        mosquitto.resume()

    lines = [r.getMessage() for r in caplog.records if r.name == "agent.uplink.mqtt"]
    assert sum("Keep alive timeout" in line for line in lines) == 1, lines
    assert not any("is it an MQTT broker's port" in line for line in lines), lines

    # The next session (a reload) starts while the broker still hangs: its unanswered CONNECT is told as
    # a broker that hangs (this process saw the address answer), not a wrong port; once the broker runs
    # again it sends the alarms left in flight.
    second = MqttUplink(config, TOPICS, outbox, 2, poll_s=0.1, backoff_min_s=0.1, backoff_max_s=0.2)
    caplog.clear()

    async def session_two() -> None:
        task = asyncio.create_task(second.run())
        hung = "which answered before, did not answer CONNECT (within 5 s): the broker is hung or overloaded"
        await wait_for(lambda: hung in caplog.text, 3 * KEEPALIVE_S, "the hung broker was not told")
        mosquitto.resume()
        await wait_for(lambda: outbox.depth() == 0, 15, "the alarms in flight were not delivered later")
        await second.stop()
        await asyncio.wait_for(task, 5)

    try:
        mosquitto.pause()
        asyncio.run(session_two())
        got = backend.wait_for(lambda ms: {m.json()["id"] for m in ms} >= {f"ev{n}" for n in range(5)})
    finally:
        mosquitto.resume()
        backend.close()
    assert "is it an MQTT broker's port" not in caplog.text
    assert {m.json()["id"] for m in got} == {f"ev{n}" for n in range(5)}
