"""A central-side subscriber that prints what gateways send, readably: used by `edge-agent demo`.

It is what an operator's console would show: each alarm event as one line (time, phase, priority,
condition, device, value vs threshold, why), heartbeats as a short health line, and the gateway's
online/offline status. Duplicates redelivered by QoS 1 are dropped by (id, seq).

It speaks MQTT v5 unless `speaks_v5` finds that the broker cannot (the demo's embedded amqtt broker
speaks 3.1.1 only); a subscriber loses nothing by falling back, unlike the uplink, which needs v5's
PUBACK reason codes and so falls back only for a loopback broker.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.uplink.connection import speaks_v5

PHASE_MARK = {"start": "▲ START", "update": "◆ UPDATE", "end": "▼ END"}


def format_alarm(p: dict[str, Any], received: float | None = None) -> str:
    """One line; the left column is when it arrived, the event's own time is added when it differs
    (events delivered late after an outage, or a simulation running faster than real time)."""
    event_time = p["end_time"] if p["phase"] == "end" else p["detection_time"]
    when = _clock(event_time) if received is None else time.strftime("%H:%M:%S", time.localtime(received))
    if received is not None and abs(_unix(event_time) - received) > 5:
        when += f" [event {_clock(event_time)}]"
    unit = f" {p['unit']}" if p.get("unit") else ""
    value, limit = p.get("value"), p.get("threshold")
    measure = f"{_num(value)}{unit} vs {_num(limit)}{unit}" if value is not None else "n/a"
    if p["kind"] == "technical" and not unit:
        measure = ""  # a condition's score against its trigger level ("1 vs 0.5"): the text says it
    why = p["explanation"].get("text") or p["explanation"].get("detector", "")
    return (
        f"{when:8}  {PHASE_MARK.get(p['phase'], p['phase']):9} {p['priority'].upper():6} {p['kind'][:4]:4}  "
        f"{p['condition']:18} {p['device']}/{p['stream']:8} {measure:24} {why}"
    )


def format_heartbeat(p: dict[str, Any]) -> str:
    devices = ", ".join(f"{d['device']} {d['rate_hz']:.1f}/s" for d in p["devices"])
    rss = f"{p['rss_bytes'] / 2**20:.0f} MB" if p.get("rss_bytes") else "?"
    return (
        f"{_clock(p['time'])}  ♥ heartbeat {p['gateway']} session {p['session']} up {p['uptime_s']:.0f} s: "
        f"{devices}; outbox {p['outbox_depth']}"
        + (f" ({refused} REFUSED by the broker)" if (refused := p.get("outbox_refused")) else "")
        + f", active alarms {p['active_alarms']}, "
        f"cpu {p['cpu_percent']}%, rss {rss}"
    )


def format_status(p: dict[str, Any]) -> str:
    clean = (
        ""
        if p.get("state") == "online"
        else (" (clean stop)" if p.get("clean") else " (connection lost: Will)")
    )
    return (
        f"          ● gateway {p.get('gateway', '?')} session {p.get('session')} is {p.get('state')}{clean}"
    )


class Receiver:
    """Subscribes to every gateway under `prefix` and calls `show(line)` for each message."""

    def __init__(self, host: str, port: int, prefix: str, show: Callable[[str], None] = print) -> None:
        self.prefix = prefix
        self.show = show
        self.alarms: list[dict[str, Any]] = []
        self.heartbeats: list[dict[str, Any]] = []
        self._seen: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        self.protocol: int | None = None  # mqtt.MQTTv5 or mqtt.MQTTv311, chosen by `start()`
        self._client: mqtt.Client | None = None
        self._host, self._port = host, port

    def start(self) -> Receiver:
        """Connect (v5, or 3.1.1 when the broker proves it cannot do v5) and subscribe in the background."""
        v5 = speaks_v5(self._host, self._port) is not False  # no answer: let connect() report the error
        self.protocol = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="edge-demo-receiver", protocol=self.protocol
        )
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        client.connect(self._host, self._port)
        client.loop_start()
        return self

    def stop(self) -> None:
        if self._client is None:
            return
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        client.subscribe([(f"{self.prefix}/+/+/{leaf}", 1) for leaf in ("alarm", "heartbeat", "status")])

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self.subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            payload = json.loads(message.payload)
        except ValueError:
            self.show(f"          ? undecodable message on {message.topic}")
            return
        leaf = message.topic.rsplit("/", 1)[-1]
        with self._lock:
            if leaf == "alarm":
                key = (payload["id"], payload["seq"])
                if key in self._seen:
                    return  # QoS 1 redelivery
                self._seen.add(key)
                self.alarms.append(payload)
                line = format_alarm(payload, received=time.time())
            elif leaf == "heartbeat":
                self.heartbeats.append(payload)
                line = format_heartbeat(payload)
            else:
                payload.setdefault("gateway", message.topic.split("/")[-2])
                line = format_status(payload)
        self.show(line)


def _unix(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _clock(iso: str) -> str:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S")


def _num(value: float | None) -> str:
    return "?" if value is None else f"{value:.4g}"
