"""The paho side of the uplink: the client, its network thread, and the one bridge to the asyncio loop.

Strategy: paho-mqtt 2.x (callback API v2) runs its own network thread (`loop_start`), which also
reconnects. Every paho callback (`_paho_*`, the only code here run by paho's thread) is handed to the
asyncio loop at ONE place, `_from_paho`, through `call_soon_threadsafe` (received commands through
the bounded `agent.uplink.command_gate` first, which wakes the loop once per batch); all state (the
in-flight map, the outbox, the counters) is touched on the loop thread only, by the `_on_*` handlers
(`agent.uplink.mqtt`). The two things done in paho's thread: choosing the next reconnect delay, capped
exponential backoff with jitter, set on paho just before it waits (`_failures` is paho-thread state);
and reading the password file again before each connection attempt (`_paho_pre_connect`), so fixing
the file is enough. paho lets its thread die of any exception but the OSError of a connection attempt:
the client hands that death over too (`RecordingClient.on_network_death`), and the loop thread starts
the thread again after a backoff (`_restart_network`).

`_PahoBridge` is a part of `MqttUplink`, its base class: it declares the state it reads, which
`MqttUplink.__init__` sets, and the loop-thread handlers it hands paho's news to. Also here: `Command`,
a message received on the command topic as the loop thread gets it, and `publish_packet_size`, the bytes
of the PUBLISH paho will send (the uplink refuses a row over the broker's Maximum Packet Size unsent).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config.schema import MqttConfig
from agent.errors import ConfigError
from agent.uplink.connection import backoff_delay, connect_async, new_client, read_password
from agent.uplink.problems import describe_connect_error
from agent.uplink.topics import Topics

if TYPE_CHECKING:
    from agent.uplink.command_gate import CommandGate


@dataclass(frozen=True, slots=True)
class Command:
    """A message received on the command topic; answer it with `MqttUplink.respond`."""

    topic: str
    payload: bytes
    response_topic: str | None
    correlation_data: bytes | None


class _PahoBridge:
    """The paho client of `MqttUplink` and its callbacks, handed to the loop thread."""

    # Set by `MqttUplink.__init__`.
    config: MqttConfig
    topics: Topics
    client_id: str
    backoff_min_s: float
    backoff_max_s: float
    _loop: asyncio.AbstractEventLoop | None
    _stopping: bool
    _v5: bool
    _password: str | None
    _client: paho.Client
    _failures: int  # paho-thread state: consecutive failed attempts, for the backoff
    _commands: CommandGate  # received commands on their way to the loop (bounded: floods are dropped)

    # The loop-thread side, in `MqttUplink`.
    _status: Callable[..., bytes]
    _on_attempt: Callable[[], None]
    _on_connected: Callable[[int, bool, int | None, int | None], None]
    _on_connect_failed: Callable[[str], None]
    _on_disconnected: Callable[[int], None]
    _on_puback: Callable[[int, int], None]
    _on_subscribed: Callable[[bool], None]
    _on_commands: Callable[[], None]
    _on_network_died: Callable[[Exception], None]
    _on_password_unreadable: Callable[[str], None]

    # -- paho setup and the bridge ----------------------------------------------------------------

    def _make_client(self) -> paho.Client:
        client = new_client(
            self.config,
            self.client_id,
            v5=self._v5,
            password=self._password,
            will_topic=self.topics.status,
            will=self._status("offline", clean=False),
        )
        self._set_backoff(client)
        client.on_pre_connect = self._paho_pre_connect
        client.on_connect = self._paho_connect
        client.on_connect_fail = self._paho_connect_fail
        client.on_disconnect = self._paho_disconnect
        client.on_publish = self._paho_publish
        client.on_message = self._paho_message
        client.on_subscribe = self._paho_subscribe
        client.on_network_death = self._paho_network_died
        return client

    def _start_client(self) -> None:
        connect_async(self._client, self.config, v5=self._v5)
        self._client.loop_start()

    def _restart_network(self) -> None:
        """Start paho's network thread again after it died (loop thread, after a backoff). The same
        client: the unacknowledged PUBLISHes it holds are resent after the reconnect, as after any."""
        if self._stopping:
            return
        connect_async(self._client, self.config, v5=self._v5)  # attempt at once, retrying as at start
        if self._client.loop_start() is MQTTErrorCode.MQTT_ERR_INVAL and self._loop is not None:
            self._loop.call_later(0.1, self._restart_network)  # the dead thread has not quite ended

    def _from_paho(self, handler: Callable[..., None], *args: Any) -> bool:
        """THE bridge from paho's network thread to the asyncio loop; False when there is no loop to
        hand to (not yet running, or closed): the call is dropped."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closed between the check and the call
                loop.call_soon_threadsafe(handler, *args)
                return True
        return False

    def _set_backoff(self, client: paho.Client) -> None:
        """Next reconnect delay (paho thread), set on paho just before it waits."""
        delay = backoff_delay(self._failures, self.backoff_min_s, self.backoff_max_s)
        client.reconnect_delay_set(delay, delay)  # type: ignore[arg-type,unused-ignore]  # paho sleeps floats fine

    def _paho_pre_connect(self, client: paho.Client, _u: Any) -> None:
        """Read the password file again before each connection attempt, so a corrected file is used at
        the next attempt without a reload (a small file; the password never reaches a log line). A
        file that cannot be read now keeps the last password read; the loop thread tells it. It also
        marks an attempt: a disconnect with no attempt under way is not a failed CONNECT."""
        self._from_paho(self._on_attempt)
        auth = self.config.auth
        if auth is None:
            return
        try:
            password = read_password(self.config)
        except ConfigError as exc:
            self._from_paho(self._on_password_unreadable, str(exc))
            return
        client.username_pw_set(auth.username, password)

    def _paho_network_died(self, error: Exception) -> None:
        self._from_paho(self._on_network_died, error)

    def _paho_connect(
        self, client: paho.Client, _u: Any, flags: Any, reason: ReasonCode, props: Properties | None
    ) -> None:
        receive_maximum = getattr(props, "ReceiveMaximum", None) if props is not None else None
        max_packet = getattr(props, "MaximumPacketSize", None) if props is not None else None
        if reason.value < 0x80:
            self._failures = 0
        self._from_paho(
            self._on_connected, reason.value, bool(flags.session_present), receive_maximum, max_packet
        )

    def _paho_connect_fail(self, client: paho.Client, _u: Any) -> None:
        self._failures += 1
        self._set_backoff(client)
        error = getattr(client, "last_connect_error", None)
        problem = (
            describe_connect_error(error, self.config)
            if error is not None
            else f"cannot connect to {self.config.host}:{self.config.port}"
        )
        self._from_paho(self._on_connect_failed, problem)

    def _paho_disconnect(
        self, client: paho.Client, _u: Any, _flags: Any, reason: ReasonCode, _props: Properties | None
    ) -> None:
        self._failures += 1
        self._set_backoff(client)
        self._from_paho(self._on_disconnected, reason.value)

    def _paho_publish(
        self, client: paho.Client, _u: Any, mid: int, reason: ReasonCode, _props: Properties | None
    ) -> None:
        self._from_paho(self._on_puback, mid, reason.value)

    def _paho_subscribe(
        self, client: paho.Client, _u: Any, _mid: int, reasons: list[ReasonCode], _props: Properties | None
    ) -> None:
        self._from_paho(self._on_subscribed, all(r.value < 0x80 for r in reasons))

    def _paho_message(self, client: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        if message.topic == self.topics.response:
            # Answers on cmd/response (the command filter covers it) are nobody's command: over MQTT
            # 3.1.1 (no noLocal) the gateway's own come back, and they must not use the gate's budget.
            return
        props = getattr(message, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None)
        correlation = getattr(props, "CorrelationData", None)
        command = Command(message.topic, bytes(message.payload), response_topic, correlation)
        # Not one loop wake-up per message: see agent.uplink.command_gate. A wake-up that found no loop
        # is given back, or the gate would wait for it forever and drop every command past MAX_WAITING.
        if self._commands.offer(command) and not self._from_paho(self._on_commands):
            self._commands.wake_lost()


def publish_packet_size(topic: str, payload: bytes, props: Properties | None) -> int:
    """Bytes of the QoS 1 PUBLISH packet paho will send (MQTT v5 3.3; `props` None for 3.1.1)."""
    remaining = 2 + len(topic.encode()) + 2 + len(payload)  # topic name, packet id, payload
    if props is not None:
        remaining += len(props.pack())  # type: ignore[no-untyped-call]  # property length + properties
    length_bytes = 1 if remaining < 128 else 2 if remaining < 16_384 else 3 if remaining < 2_097_152 else 4
    return 1 + length_bytes + remaining
