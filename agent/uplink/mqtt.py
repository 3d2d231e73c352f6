"""MQTT v5 uplink: drains the outbox to the broker with QoS 1 and deletes only on a success PUBACK.

Strategy:
- paho-mqtt 2.x (callback API v2) runs its own network thread (`loop_start`), which also reconnects.
  Every paho callback is handed to the asyncio loop at ONE place, `_from_paho`, through
  `call_soon_threadsafe`; all state (the in-flight map, the outbox, the counters) is touched on the
  loop thread only. The one thing done in paho's thread is choosing the next reconnect delay: capped
  exponential backoff with jitter, set on paho just before it waits. The paho side (the client, its
  callbacks, the bridge) is `agent.uplink.paho_bridge`.
- Persistent session: clean_start=False with SessionExpiryInterval, so the broker keeps our
  subscriptions and QoS 1 state across reconnects; paho keeps unacknowledged PUBLISHes of the same
  client object and resends them (DUP) after a reconnect, so in-flight rows are not taken twice.
  A new process requeues the rows its predecessor left in flight (duplicates are possible, losses
  are not: receivers drop duplicates by event id).
- Flow: `run()` takes at most `window` rows from the outbox (config.max_inflight, capped by the
  broker's Receive Maximum, one slot kept for status messages), publishes them, and takes more as
  PUBACKs free the window; it sleeps until `notify()` (after a put) or a short poll.
  A PUBACK reason < 0x80 deletes the row; >= 0x80 (e.g. 0x87 Not authorized) marks it refused and
  calls `on_refused` so the agent raises a technical alarm. A row larger than the broker's
  Maximum Packet Size (from its CONNACK) is refused the same way (0x95) without being sent: the
  broker would drop the connection and paho would resend it forever, blocking every row behind it.
- Trouble is told once, in words: a failed connection attempt (DNS, refused, TLS, a CONNACK
  refusal) is logged when its cause first appears or changes, then as a reminder every `REMIND_S`
  (`agent.link_trouble`), never once per retry; the sentence (`agent.uplink.problems`) names the
  broker address and the config key to check, and stays in `counters().problem` for
  `edge-agent status` until a connect succeeds. A refused PUBLISH is logged once per topic and
  reason code per connection.
- paho's network thread dies of any exception but a connection attempt's OSError (a host name its
  look-up cannot encode, an OSError from `time.sleep` in its reconnect wait, a bug in a callback):
  the uplink is told (`RecordingClient.on_network_death`), logs it once per cause with its traceback
  (then every `REMIND_S`), keeps the words in `counters().problem`, holds `network_failed` (the
  session's technical alarm `uplink_failing`) until a connection succeeds, and starts the thread
  again after a capped backoff.
- Commands arrive through a bounded gate (`agent.uplink.command_gate`: a flood is dropped in paho's
  thread, counted as `commands_dropped`). Their answers are QoS 1 PUBLISHes like the outbox's rows;
  an answer to a command whose signature never verified is dropped (counted) while
  `MAX_ANSWERS_PENDING` answers wait for their PUBACK, so a flood of answers cannot queue in paho
  ahead of alarms and heartbeats; answers to authenticated commands, results or refusals, are always
  sent. An answer goes to the request's ResponseTopic only where `Topics.may_answer_on` allows (else
  to `{root}/cmd/response`); one the broker refuses (its ACL on the ResponseTopic) is counted and
  logged at most every `REMIND_S`. An answer over the broker's Maximum Packet Size is not sent (the
  caller gets `AnswerTooLargeError` and answers a small `too_large` error instead).
- Status: a retained birth on every connect and a retained Will, both carrying the session counter;
  `stop()` publishes a retained clean "offline" before a normal DISCONNECT (which suppresses the Will),
  saying why: "stop", or "reload" (each reload ends the session's client and the next one connects:
  the offline a back end sees for some 30 ms between them must not read as a gateway stopped).
  `stop()` is bounded: with a hung broker paho's thread would wait for its CONNECT attempt to time out
  (`keepalive_s`) while messages are in flight; their rows stay in the outbox, so the socket is shut
  down instead (`_end_network_thread`) and the next session sends them.
- Transport rules (TLS verification, no plain MQTT to remote hosts, password file, MQTT 3.1.1 only
  where `mqtt.protocol` chose it, backoff) live in `agent.uplink.connection`. A plain loopback broker
  that proves it cannot do v5 gets nothing (`_until_the_broker_may_speak_v5`), as a remote one refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent.config.schema import MQTT_311, MqttConfig
from agent.link_trouble import REMIND_S, LinkTrouble, Tell  # REMIND_S: tests shorten it here
from agent.outbox import Outbox, OutboxItem
from agent.uplink.command_gate import CommandGate
from agent.uplink.connection import (
    backoff_delay,
    check_transport,
    is_loopback,
    new_properties,
    read_password,
    speaks_v5,
    status_payload,
)
from agent.uplink.paho_bridge import Command, _PahoBridge, publish_packet_size
from agent.uplink.problems import (
    describe_connect_refusal,
    describe_early_close,
    describe_network_death,
    describe_no_v5,
    describe_publish_refusal,
    reason_name,
)
from agent.uplink.takeover import TakeoverWatch
from agent.uplink.topics import Topics

# Importable from here as before the split (agent.remote and tests import Command from here).
__all__ = ["AnswerTooLargeError", "Command", "MqttUplink", "UplinkCounters", "publish_packet_size"]

LOCAL_REFUSAL = 0x83  # "Implementation specific error": paho itself rejected the message (too large)
PACKET_TOO_LARGE = 0x95
log = logging.getLogger(__name__)
# Alarms queued while the broker was away go out at the first attempt after it returns: the cap bounds
# that wait (attempts 7.5-15 s apart once the backoff is at it). With the jitter, 1,000 gateways retry
# at about 90 connections a second, which a broker takes easily.
RECONNECT_MAX_S = 15.0
# Command answers sent and not yet acknowledged, past which answers to unauthenticated commands are
# dropped: a flood of them cannot fill paho's queue ahead of the outbox's alarms and heartbeats. Answers
# to authenticated commands are always sent (they count here): only a key holder can cause them, at
# most the command gate's rate, and an operator must learn what a command did.
MAX_ANSWERS_PENDING = 8
# The characters of a ResponseTopic a log line keeps (the sender chooses it, up to 64 KB: review remote #4).
TOPIC_LOGGED_CHARS = 80
# Ending paho's network thread at stop(): the time it gets to end by itself (it ends at once unless
# messages are in flight on a connection that does not answer), and the most stop() waits for it.
THREAD_END_GRACE_S = 0.3
THREAD_END_LIMIT_S = 2.0
# Broker addresses (host, port) whose CONNECT this process saw answered: a later attempt there that gets
# no CONNACK is a broker that hangs, not a wrong port, also in the session after a reload (a new uplink).
_ANSWERED: set[tuple[str, int]] = set()


class AnswerTooLargeError(Exception):
    """An answer whose PUBLISH (`size` bytes, `overhead` of them topic and properties) is over the
    broker's Maximum Packet Size `limit`: it was not sent."""

    def __init__(self, size: int, limit: int, overhead: int) -> None:
        super().__init__(f"answer of {size} bytes over the broker's maximum packet size {limit}")
        self.size = size
        self.limit = limit
        self.overhead = overhead


@dataclass(frozen=True, slots=True)
class UplinkCounters:
    connected: bool
    published: int  # outbox items handed to the MQTT client (resends by paho not counted)
    delivered: int  # success PUBACKs
    refused: int  # PUBACKs with reason >= 0x80
    connects: int  # successful CONNACKs
    reconnects: int  # successful CONNACKs after the first
    inflight: int
    problem: str | None = None  # why the broker cannot be reached, while it cannot
    failed_attempts: int = 0  # connection attempts failed since the last successful one
    down_for_s: float | None = None  # seconds without a connection (since the start or the loss)
    commands_dropped: int = 0  # commands the gate dropped unanswered (a flood: agent.uplink.command_gate)
    answers_dropped: int = 0  # unauthenticated commands' answers not sent: MAX_ANSWERS_PENDING waited
    answers_refused: int = 0  # answers the broker refused (PUBACK >= 0x80: its ACL on the ResponseTopic)
    takeover: str | None = None  # another client seems to use this client id (agent.uplink.takeover)
    # The first failure's words since the last connection, while not connected and unlike `problem`
    # (an earlier cause a later one would hide: a clock too far behind for TLS, say); else None.
    first_problem: str | None = None


class MqttUplink(_PahoBridge):
    """One MQTT v5 connection for one gateway; `await run()` in a task, `await stop()` to end."""

    def __init__(
        self,
        mqtt: MqttConfig,
        topics: Topics,
        outbox: Outbox,
        session: int,
        *,
        on_refused: Callable[[OutboxItem, int], None] | None = None,
        on_command: Callable[[Command], None] | None = None,
        poll_s: float = 1.0,
        backoff_min_s: float = 1.0,
        backoff_max_s: float = RECONNECT_MAX_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_transport(mqtt)
        self.config = mqtt
        self.topics = topics
        self.outbox = outbox
        self.session = session
        self.on_refused = on_refused
        self.on_command = on_command
        self.poll_s = poll_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self._clock = clock
        self.client_id = mqtt.client_id or topics.gateway

        # Loop-thread state.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._connected = False
        self._commands_ready = False
        self._window = mqtt.max_inflight - 1
        self._max_packet: int | None = None  # the broker's Maximum Packet Size, when it sets one
        self._inflight: dict[int, OutboxItem] = {}
        self._status_waiters: dict[int, asyncio.Future[int]] = {}
        self._published = self._delivered = self._refused = self._connects = 0
        self._trouble = LinkTrouble(REMIND_S)  # failed attempts of this outage, and what was logged
        self._deaths = LinkTrouble(REMIND_S)  # deaths of paho's network thread since the last connection
        self._network_failed = False  # the network thread died and has not connected since
        self._network_deaths = 0  # deaths of the network thread over this uplink's life
        self._problem: str | None = None  # the words of the last failure, for status
        # The first failure's words since the last connection (or the start), kept for status when a
        # later, different one follows: a TLS "not valid yet: set the clock" is not hidden by a later
        # generic error (offline review m2).
        self._first_problem: str | None = None
        self._takeover = TakeoverWatch(self.client_id)  # another client with this id (review M1)
        self._password_trouble = LinkTrouble(REMIND_S)  # the password file unreadable at an attempt
        self._down_since: float | None = time.monotonic()  # monotonic; None while connected
        self._refused_connect = False  # a CONNACK refusal was told: its disconnect says nothing new
        self._attempting = False  # paho began a connection attempt not yet answered nor failed
        self._refusals_told: set[tuple[str, int]] = set()  # (topic, reason) logged this connection
        self._commands = CommandGate()
        self._answers: dict[int, str] = {}  # mid -> topic of answers awaiting their PUBACK
        self._answers_dropped = self._answers_refused = 0
        self._answer_refusal_told = -float("inf")  # monotonic time of the last such warning
        # Paho-thread state: consecutive failed attempts, for the backoff.
        self._failures = 0

        self._v5 = mqtt.protocol != MQTT_311
        self._password = read_password(mqtt)
        self._client = self._make_client()

    # -- public surface ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def network_failed(self) -> bool:
        """paho's network thread died (and was started again) and has not connected since."""
        return self._network_failed

    @property
    def network_deaths(self) -> int:
        """Deaths of paho's network thread since this uplink was made (each followed by a restart)."""
        return self._network_deaths

    @property
    def commands_ready(self) -> bool:
        """The broker acknowledged the command subscription (only with an `on_command` handler)."""
        return self._commands_ready

    def counters(self) -> UplinkCounters:
        return UplinkCounters(
            self._connected,
            self._published,
            self._delivered,
            self._refused,
            self._connects,
            max(0, self._connects - 1),
            len(self._inflight),
            None if self._connected else self._problem,
            self._trouble.failures,
            None if self._down_since is None else round(time.monotonic() - self._down_since, 1),
            commands_dropped=self._commands.dropped,
            answers_dropped=self._answers_dropped,
            answers_refused=self._answers_refused,
            takeover=self._takeover.current(),
            first_problem=(
                None if self._connected or self._first_problem == self._problem else self._first_problem
            ),
        )

    def notify(self) -> None:
        """Something was put in the outbox: drain now rather than at the next poll (loop thread)."""
        self._wake.set()

    async def run(self) -> None:
        """Connect (retrying forever) and drain the outbox until `stop()`."""
        self._loop = asyncio.get_running_loop()
        self.outbox.requeue_inflight()  # rows a previous process left in flight: this client holds none
        try:
            if self._v5 and self.config.tls is None and is_loopback(self.config.host):
                await self._until_the_broker_may_speak_v5()
            if not self._stopping:
                self._start_client()
            while not self._stopping:
                self._pump()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_s):  # not wait_for: see agent.session._process
                        await self._wake.wait()
                self._wake.clear()
        finally:
            if not self._stopping:
                # Cancelled without stop(): end paho's thread (no clean offline; the Will tells the
                # truth once the connection drops) so no orphan thread keeps reconnecting.
                self._stopping = True
                self._connected = False
                self._client.loop_stop()
                if self._v5:
                    self._client.disconnect(
                        ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")
                    )
                elif (sock := self._client.socket()) is not None:
                    sock.close()  # MQTT 3.1.1 has no "disconnect with Will": drop the connection instead

    async def _until_the_broker_may_speak_v5(self) -> None:
        """A plain loopback broker that proves it cannot do MQTT v5 (amqtt, an old broker, a tunnel to
        one) gets nothing: told as a failed attempt, probed again with backoff until it answers v5 or
        not at all (paho's attempts then take over), or the uplink stops. `mqtt.protocol = "3.1.1"`
        opts out (the demo's amqtt); a remote broker refuses a v5 CONNECT itself."""
        loop = asyncio.get_running_loop()
        while not self._stopping:
            if await asyncio.to_thread(speaks_v5, self.config.host, self.config.port) is not False:
                return
            self._connect_failed(describe_no_v5(self.config))
            delay = backoff_delay(self._trouble.failures, self.backoff_min_s, self.backoff_max_s)
            wake_at = loop.time() + delay
            while not self._stopping and loop.time() < wake_at:
                await asyncio.sleep(min(0.1, wake_at - loop.time()))  # not _wake: puts would shorten it

    async def stop(self, timeout_s: float = 3.0, *, reason: str = "stop") -> None:
        """Clean stop: retained offline status (waiting up to `timeout_s` for its PUBACK), DISCONNECT.
        `reason` ("stop" or "reload") goes in the status."""
        self._stopping = True
        self._wake.set()
        if self._connected:
            payload = self._status("offline", clean=True, reason=reason)
            waiter = self._publish_status(payload)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await waiter
            # A normal disconnection (reason 0) tells the broker not to send the Will.
            self._client.disconnect(ReasonCode(PacketTypes.DISCONNECT, "Normal disconnection"))
        await self._end_network_thread()
        self._connected = False

    async def _end_network_thread(self) -> None:
        """End paho's network thread within about `THREAD_END_LIMIT_S`. paho's loop does not end while
        messages are in flight: with a hung broker (the kernel still takes the connection, CONNECT is
        never answered) it would wait for the attempt to time out after `keepalive_s`, holding up a stop
        past the service manager's limit and a reload with every source unread. What is in flight is
        still in the outbox (a row leaves it only on its PUBACK) and the next session sends it again:
        once paho had `THREAD_END_GRACE_S` to finish, its socket is shut down, which ends the attempt.
        The broker then sends the Will, unless the clean offline and DISCONNECT went out above."""
        client = self._client
        stopper = threading.Thread(target=client.loop_stop, name="uplink-stop", daemon=True)
        stopper.start()  # loop_stop tells the thread to end, then joins it: not in the loop's executor
        started = time.monotonic()
        while stopper.is_alive():
            waited = time.monotonic() - started
            if waited >= THREAD_END_LIMIT_S:
                log.warning(
                    "uplink: paho's network thread did not end within %.0f s; left to end on its own "
                    "(messages in flight stay in the outbox)",
                    THREAD_END_LIMIT_S,
                )
                return
            sock = client.socket()
            if waited >= THREAD_END_GRACE_S and isinstance(sock, socket.socket):  # TLS: a subclass
                with contextlib.suppress(OSError):  # already closed, or never connected
                    sock.shutdown(socket.SHUT_RDWR)  # wakes paho's select: the attempt ends at once
            await asyncio.sleep(0.05)

    def respond(self, command: Command, payload: bytes, *, authenticated: bool = False) -> None:
        """Answer a command (QoS 1) on its ResponseTopic, where `Topics.may_answer_on` allows it, else on
        the gateway's response topic. The answer of a command whose signature never verified is dropped
        (counted) while MAX_ANSWERS_PENDING answers await their PUBACK; an `authenticated` one (its
        result, or its refusal) is always sent. An answer whose PUBLISH would be over the broker's
        Maximum Packet Size is not sent: AnswerTooLargeError (the caller answers something smaller)."""
        if not authenticated and len(self._answers) >= MAX_ANSWERS_PENDING:
            self._answers_dropped += 1
            return
        props = new_properties(PacketTypes.PUBLISH)
        if command.correlation_data is not None:
            props.CorrelationData = command.correlation_data
        requested = command.response_topic
        topic = requested if requested and self.topics.may_answer_on(requested) else self.topics.response
        # paho does not enforce the broker's limit: the broker would drop the connection and paho resend
        # the answer after every reconnect, starving alarms and heartbeats (review remote #1).
        if (over := self._oversize(topic, payload, props)) is not None:
            size, limit = over
            raise AnswerTooLargeError(size, limit, size - len(payload))
        info = self._client.publish(topic, payload, qos=1, properties=props if self._v5 else None)
        if info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            self._answers[info.mid] = topic

    def publish_now(self, topic: str, payload: bytes, expiry_s: int | None = None) -> bool:
        """Send a message the outbox could not take (a full disk) once, now, if connected: QoS 1 but
        untracked (not resent after a disconnect; the outbox sends its own copy once it takes writes,
        which receivers drop as a duplicate). False when not connected."""
        if not self._connected or self._stopping:
            return False
        props = new_properties(PacketTypes.PUBLISH)
        if expiry_s is not None:
            props.MessageExpiryInterval = expiry_s
        self._client.publish(topic, payload, qos=1, properties=props if self._v5 else None)
        return True

    # -- the drain --------------------------------------------------------------------------------

    def _pump(self) -> None:
        if not self._connected or self._stopping:
            return
        room = self._window - len(self._inflight)
        while room > 0:
            items = self.outbox.take(room)
            if not items:
                return
            for item in items:
                self._publish(item)
            room = self._window - len(self._inflight)

    def _oversize(self, topic: str, payload: bytes, props: Properties) -> tuple[int, int] | None:
        """(the PUBLISH's bytes, the broker's Maximum Packet Size) when it is over that limit, else None."""
        if self._max_packet is None:
            return None
        size = publish_packet_size(topic, payload, props if self._v5 else None)
        return (size, self._max_packet) if size > self._max_packet else None

    def _publish(self, item: OutboxItem) -> None:
        props = new_properties(PacketTypes.PUBLISH)
        expiry = item.remaining_expiry(self._clock())
        if expiry is not None:
            props.MessageExpiryInterval = expiry
        if (over := self._oversize(item.topic, item.payload, props)) is not None:
            log.error("outbox item %s is %d bytes, over the broker's maximum packet size %d", item.id, *over)
            self._refuse(item, PACKET_TOO_LARGE)
            return
        try:
            info = self._client.publish(
                item.topic, item.payload, qos=1, retain=False, properties=props if self._v5 else None
            )
        except ValueError as exc:  # payload or topic paho will never send
            log.error("outbox item %s cannot be published: %s", item.id, exc)
            self._refuse(item, LOCAL_REFUSAL)
            return
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            # Not queued by paho (queue full): back to pending, retried on the next pump.
            self.outbox.requeue(item.id)
            return
        # NO_CONN still queues a QoS 1 message in paho, which sends it after the reconnect.
        self._inflight[info.mid] = item
        self._published += 1

    def _tell_refusal(self, item: OutboxItem, reason: int) -> None:
        """Log a refused PUBLISH once per topic and reason per connection (the count is in status)."""
        told = (item.topic, reason)
        if told in self._refusals_told:
            log.debug("broker refused %s %s on %s: 0x%02x", item.kind, item.id, item.topic, reason)
            return
        self._refusals_told.add(told)
        why = describe_publish_refusal(reason, item.topic, self.config, self.client_id)
        log.error(
            "broker refused %s %s: %s. It is kept aside in the outbox, not sent again until "
            "`edge-agent retry-refused` after the fix; further refusals of this kind are counted, not logged",
            item.kind,
            item.id,
            why,
        )

    def _refuse(self, item: OutboxItem, reason: int) -> None:
        self.outbox.refused(item.id, reason)
        self._refused += 1
        if self.on_refused is not None:
            try:
                self.on_refused(item, reason)
            except Exception:
                log.exception("on_refused callback failed for %s", item.id)

    # -- paho callbacks, on the loop thread -------------------------------------------------------

    def _on_attempt(self) -> None:
        self._attempting = True

    def _on_connected(
        self, reason: int, session_present: bool, receive_maximum: int | None, max_packet: int | None
    ) -> None:
        self._attempting = False
        if self._stopping:
            return  # an attempt answered after stop(): this session is over, its thread ending
        _ANSWERED.add((self.config.host, self.config.port))  # a broker's port, even if it refused us
        if reason >= 0x80:
            self._refused_connect = True
            self._connect_failed(describe_connect_refusal(reason, self.config))
            return
        recovered = self._trouble.recovered()
        self._deaths.recovered()
        self._password_trouble.recovered()
        self._network_failed = False
        self._problem = self._first_problem = None
        self._connected = True
        self._connects += 1
        self._down_since = None
        self._takeover.connected()
        self._refusals_told.clear()
        self._answers.clear()  # paho resends those still unacknowledged; the window starts afresh
        if receive_maximum is not None:
            self._window = max(1, min(self.config.max_inflight, receive_maximum) - 1)
        self._max_packet = max_packet
        log.info(
            "connected to %s:%s%s; session present: %s, window %d",
            self.config.host,
            self.config.port,
            recovered,
            session_present,
            self._window,
        )
        self._publish_status(self._status("online"))
        if self.on_command is not None:
            if self._v5:
                self._client.subscribe(self.topics.command, options=SubscribeOptions(qos=1, noLocal=True))
            else:
                self._client.subscribe(self.topics.command, qos=1)
        self._wake.set()

    def _on_subscribed(self, granted: bool) -> None:
        if not granted:
            log.error("broker refused the command subscription %s", self.topics.command)
        self._commands_ready = granted

    def _on_disconnected(self, reason: int) -> None:
        attempt, self._attempting = self._attempting, False
        if self._stopping:
            self._connected = False
            return
        if self._connected:
            self._connected = False
            self._down_since = time.monotonic()
            log.warning(
                "disconnected from %s:%s: 0x%02x %s; reconnecting, messages wait in the outbox",
                self.config.host,
                self.config.port,
                reason,
                reason_name(PacketTypes.DISCONNECT, reason),
            )
            if (takeover := self._takeover.dropped(reason)) is not None:
                log.warning("uplink: %s", takeover)  # once: the flapping goes on, the cause is known
            self._first_problem = None  # a new streak of failures
            self._failed_for(self._takeover.suspected)  # the status's reason while down (None: none known)
        elif self._refused_connect:
            self._refused_connect = False  # the close that follows a refused CONNECT: already told
        elif attempt:  # closed before the CONNACK: the port took the connection and did not speak MQTT
            answered = (self.config.host, self.config.port) in _ANSWERED
            self._connect_failed(describe_early_close(reason, self.config, answered_before=answered))
        else:
            # paho reports a keepalive loss twice (its keepalive check, then the unanswered PINGREQ):
            # the first report was told above; this one is no failed attempt.
            log.debug("disconnect reported again (0x%02x): no attempt was under way", reason)

    def _on_connect_failed(self, problem: str) -> None:
        self._connected = False
        self._attempting = False
        if not self._stopping:
            self._connect_failed(problem)

    def _connect_failed(self, problem: str) -> None:
        """One failed connection attempt: log its cause when new or changed, else every REMIND_S."""
        if self._down_since is None:
            self._down_since = time.monotonic()
        self._failed_for(problem)
        tell = self._trouble.failed(problem)
        if tell is Tell.QUIET:
            return
        waiting = self.outbox.depth()
        if tell is Tell.NEW:
            log.warning("uplink: %s; retrying, %d message(s) wait in the outbox", problem, waiting)
        else:
            log.warning(
                "uplink still not connected after %d attempt(s) in %.0f s: %s; "
                "%d message(s) wait in the outbox",
                self._trouble.failures,
                time.monotonic() - self._down_since,
                problem,
                waiting,
            )

    def _failed_for(self, problem: str | None) -> None:
        """The words of the latest failure, and of the streak's first if it is the first."""
        self._problem = problem
        if self._first_problem is None:
            self._first_problem = problem

    def _on_network_died(self, error: Exception) -> None:
        """paho's network thread ended on `error`: told once per cause (with its traceback), then every
        REMIND_S; flagged for `uplink_failing` until a connection succeeds; started again after a backoff
        (`_deaths` counts the deaths of this outage, apart from the failed attempts, so a thread that
        dies after each refused attempt does not make each alternate line news)."""
        if self._stopping or self._loop is None:
            return
        self._connected = False
        self._attempting = False  # the attempt under way, if any, ended with the thread
        self._network_failed = True
        self._network_deaths += 1
        if self._down_since is None:
            self._down_since = time.monotonic()
        self._failed_for(problem := describe_network_death(error))
        tell = self._deaths.failed(problem)
        delay = backoff_delay(self._deaths.failures, self.backoff_min_s, self.backoff_max_s)
        if tell is Tell.QUIET:
            log.debug("uplink: %s; restarting it in %.1f s", problem, delay)
        else:
            log.error(
                "uplink: %s; restarting it in %.1f s, and again with backoff while it fails; "
                "%d message(s) wait in the outbox",
                problem,
                delay,
                self.outbox.depth(),
                exc_info=error if tell is Tell.NEW else None,
            )
        self._loop.call_later(delay, self._restart_network)

    def _on_password_unreadable(self, problem: str) -> None:
        """The password file could not be read again before an attempt: told once per cause (then
        every REMIND_S); the attempt goes on with the last password read."""
        if self._password_trouble.failed(problem) is not Tell.QUIET:
            log.warning("uplink: %s; the last password read is used meanwhile", problem)

    def _on_puback(self, mid: int, reason: int) -> None:
        waiter = self._status_waiters.pop(mid, None)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(reason)
            if reason >= 0x80 and (self.topics.status, reason) not in self._refusals_told:
                self._refusals_told.add((self.topics.status, reason))
                why = describe_publish_refusal(reason, self.topics.status, self.config, self.client_id)
                log.error("broker refused the gateway's online/offline status: %s", why)
            return
        answer = self._answers.pop(mid, None)
        if answer is not None:
            if reason >= 0x80:
                self._answer_refused(answer, reason)
            return
        item = self._inflight.pop(mid, None)
        if item is None:
            return  # an answer sent before a reconnect, acknowledged after it
        if reason < 0x80:
            self.outbox.delivered(item.id)
            self._delivered += 1
        else:
            self._tell_refusal(item, reason)
            self._refuse(item, reason)
        self._wake.set()

    def _on_commands(self) -> None:
        """The commands the gate let through since the last call (woken by paho's thread)."""
        for command in self._commands.take():  # answers on cmd/response stayed in paho's thread
            if self.on_command is None:
                continue
            try:
                self.on_command(command)
            except Exception:
                log.exception("command handler failed for %s", command.topic)

    def _answer_refused(self, topic: str, reason: int) -> None:
        """A command answer the broker refused: counted; told at most every REMIND_S (the operator who
        asked got nothing, and the topic may be new for each request)."""
        self._answers_refused += 1
        now = time.monotonic()
        if now - self._answer_refusal_told < REMIND_S:
            return
        self._answer_refusal_told = now
        why = describe_publish_refusal(reason, shorten_topic(topic), self.config, self.client_id)
        log.warning(
            "broker refused the answer to a remote command: %s (the request's ResponseTopic: grant the "
            "gateway write access there, or answer on %s); %d answer(s) refused so far, further ones "
            "are counted in status and told at most every %.0f s",
            why,
            self.topics.response,
            self._answers_refused,
            REMIND_S,
        )

    # -- status messages --------------------------------------------------------------------------

    def _status(self, state: str, *, clean: bool | None = None, reason: str | None = None) -> bytes:
        return status_payload(
            self.topics.gateway, self.session, state, self._clock(), clean=clean, reason=reason
        )

    def _publish_status(self, payload: bytes) -> asyncio.Future[int]:
        assert self._loop is not None
        waiter: asyncio.Future[int] = self._loop.create_future()
        info = self._client.publish(self.topics.status, payload, qos=1, retain=True)
        self._status_waiters[info.mid] = waiter
        return waiter


def shorten_topic(topic: str, keep: int = TOPIC_LOGGED_CHARS) -> str:
    """A topic for the log: a request's ResponseTopic is chosen by whoever sent it, up to 64 KB."""
    if len(topic) <= keep:
        return topic
    return f"{topic[:keep]}… ({len(topic)} characters)"
