"""Runs the real daemon and collects the heartbeats a central subscriber receives from the broker."""

from __future__ import annotations

import asyncio
import json
import queue
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.daemon import Agent

Beat = dict[str, Any]


def heartbeats_until(
    agent: Agent, port: int, topic: str, done: Callable[[list[Beat]], bool], deadline_s: float
) -> list[Beat]:
    """Every heartbeat published on `topic` while `agent` runs, until `done(seen)` holds or
    `deadline_s` passes; the agent is stopped before returning (the caller asserts on what came)."""
    received: queue.Queue[Beat] = queue.Queue()
    central = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="central", protocol=mqtt.MQTTv5)
    central.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    central.on_message = lambda _c, _u, m: received.put(json.loads(m.payload))
    central.connect("127.0.0.1", port)
    central.loop_start()
    seen: list[Beat] = []

    async def main() -> None:
        runner = asyncio.create_task(agent.run())
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + deadline_s
            while loop.time() < deadline and not done(seen):
                try:
                    seen.append(await asyncio.to_thread(received.get, timeout=0.5))
                except queue.Empty:
                    continue
        finally:
            agent.stopping.set()
            await runner

    try:
        asyncio.run(main())
    finally:
        central.loop_stop()
        central.disconnect()
    return seen
