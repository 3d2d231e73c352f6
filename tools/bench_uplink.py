"""Uplink benchmarks: outbox commit rates, events/s through outbox -> local mosquitto with PUBACKs, and
MQTT bytes per device-hour for alarms + heartbeats versus streaming the raw samples.

    python -m tools.bench_uplink            # prints Markdown tables (the figures in docs/benchmarks.md)
    python -m tools.bench_uplink --quick    # 1 run, fewer events (smoke test)

Throughput: every figure is the median of `--runs` runs, each on a fresh outbox file and a fresh private
mosquitto (agent.localbroker) on 127.0.0.1, with one QoS 1 subscriber attached to all topics so the
broker routes every message (as in production). "drain" pre-fills the outbox and times until every row
is PUBACKed and deleted; "end to end" puts and drains at the same time (put_alarm + notify per event).

Wire bytes are measured, not computed: the uplink talks to mosquitto through a counting TCP relay,
and each figure is the TCP payload both ways (PUBLISH + PUBACK) divided by the number of messages.
Per-hour totals then scale those measured sizes by the stated rates; the TLS and TCP/IP rows add
fixed per-packet estimates (said so in the table).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import struct
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from agent.config.schema import MqttConfig, OutboxConfig
from agent.events import AlarmEvent, AlarmKind, DeviceHealth, Explanation, Heartbeat, Phase, Priority
from agent.ids import uuid7
from agent.localbroker import LocalBroker
from agent.outbox import Kind, Outbox, OutboxItem
from agent.uplink.mqtt import MqttUplink
from agent.uplink.topics import Topics

TOPICS = Topics("edge", "site-01", "gw-0001")
HEARTBEAT_INTERVAL_S = 30.0  # GatewayConfig.heartbeat_interval_s default
KEEPALIVE_S = 30  # MqttConfig.keepalive_s default
ECG_HZ, ECG_BYTES = 250, 2  # one ECG lead, int16
VITALS = ("hr", "spo2", "resp_rate", "temp", "sbp", "dbp")  # 1 Hz, float32 each, + 8-byte timestamp
TLS13_RECORD = 22  # 5-byte header + 1 content type + 16-byte AEAD tag, one record per MQTT packet
TCP_IP = 52  # IPv4 (20) + TCP with timestamps (32), one segment per MQTT packet, ACKs piggy-backed


def alarm_event(n: int) -> AlarmEvent:
    """A realistic alarm transition: explanation with channels, baseline and a sentence."""
    end = n % 2 == 1
    return AlarmEvent(
        id=str(uuid7()),
        seq=1 if end else 0,
        phase=Phase.END if end else Phase.START,
        gateway=TOPICS.gateway,
        device="p-3f9a1c2be07d",
        stream="vitals",
        condition="tachycardia",
        priority=(Priority.HIGH, Priority.MEDIUM, Priority.LOW)[n % 3],
        kind=AlarmKind.PHYSIOLOGICAL,
        onset_time=1_763_900_000.0 + n,
        detection_time=1_763_900_012.5 + n,
        end_time=1_763_900_100.0 + n if end else None,
        value=142.0,
        threshold=120.0,
        unit="bpm",
        explanation=Explanation(
            detector="hr_limit",
            score=142.0,
            threshold=120.0,
            top_channels=(("hr", 1.0),),
            baseline={"hr": 78.4},
            signal_quality="ok",
            text="hr 142 bpm above limit 120 bpm for 12 s",
        ),
        config_hash="9c1e4b7d2a0f6e35",
        model_hash="",
    )


def heartbeat(now: float) -> Heartbeat:
    device = DeviceHealth("p-3f9a1c2be07d", now - 0.4, 1.0, 0, 0, True)
    return Heartbeat(
        TOPICS.gateway, now, 3600.0, 12, (device,), 0, None, 0, {"hr_limit": "builtin"}, 3.5, 61_000_000, 47.0
    )


def raw_second(n: int) -> bytes:
    """One second of one wearable, binary-packed (the cheapest honest raw stream)."""
    ecg = struct.pack(f"<{ECG_HZ}h", *((i * 37 + n) % 2000 - 1000 for i in range(ECG_HZ)))
    vitals = struct.pack(f"<d{len(VITALS)}f", 1_763_900_000.0 + n, 78.0, 97.0, 14.0, 36.8, 121.0, 79.0)
    return vitals + ecg


def mqtt_config(port: int) -> MqttConfig:
    return MqttConfig(
        host="127.0.0.1", port=port, tls=None, client_id=TOPICS.gateway, keepalive_s=KEEPALIVE_S
    )


# -- helpers ------------------------------------------------------------------------------------------


class Backend:
    """A QoS 1 subscriber on every topic, so the broker routes (and PUBACKs with 0x00) like production."""

    def __init__(self, broker: LocalBroker) -> None:
        ready = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("edge/#", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: ready.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not ready.wait(10):
            raise RuntimeError("benchmark subscriber could not subscribe")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def until(predicate: Callable[[], bool], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        await asyncio.sleep(0.002)


async def with_uplink(uplink: MqttUplink, body: Callable[[], Awaitable[float]]) -> float:
    task = asyncio.create_task(uplink.run())
    try:
        await until(lambda: uplink.connected, 10)
        return await body()
    finally:
        await uplink.stop()
        await task


# -- throughput -----------------------------------------------------------------------------------


def bench_put(kind: str, n: int, *, batch: int = 1, sealed: bool = False) -> float:
    """Events per second into a fresh outbox (alarms: synchronous=FULL, heartbeats: NORMAL).

    `batch` > 1 commits alarms `batch` at a time with `put_alarms` (one transaction, one fsync), as
    the daemon does with one pipeline turn's alarms; `sealed` turns on encryption at rest."""
    with tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp) / "outbox.key" if sealed else None  # created on open
        box = Outbox(OutboxConfig(Path(tmp) / "o.db", encryption_key_file=key_file))
        events = [alarm_event(i) for i in range(n)]
        beat = heartbeat(time.time())
        start = time.perf_counter()
        if kind == "alarm" and batch > 1:
            for i in range(0, n, batch):
                box.put_alarms(events[i : i + batch], TOPICS.alarm)
        else:
            for event in events:
                if kind == "alarm":
                    box.put_alarm(event, TOPICS.alarm)
                else:
                    box.put_heartbeat(beat, TOPICS.heartbeat, 120)
        elapsed = time.perf_counter() - start
        assert box.depth() == n
        box.close()
    return n / elapsed


def bench_flow(n: int, *, prefill: bool) -> float:
    """Events/s from outbox to PUBACK-and-delete through a private mosquitto."""
    with tempfile.TemporaryDirectory() as tmp, LocalBroker(workdir=Path(tmp) / "broker") as broker:
        backend = Backend(broker)
        box = Outbox(OutboxConfig(Path(tmp) / "o.db"))
        events = [alarm_event(i) for i in range(n)]
        if prefill:
            for event in events:
                box.put_alarm(event, TOPICS.alarm)
        uplink = MqttUplink(mqtt_config(broker.port), TOPICS, box, 1, poll_s=0.5)

        async def body() -> float:
            start = time.perf_counter()
            if not prefill:
                for i, event in enumerate(events):
                    box.put_alarm(event, TOPICS.alarm)
                    uplink.notify()
                    if i % 16 == 0:
                        await asyncio.sleep(0)  # let PUBACKs in, as a busy agent loop would
            await until(lambda: uplink.counters().delivered >= n)
            return n / (time.perf_counter() - start)

        rate = asyncio.run(with_uplink(uplink, body))
        assert box.depth() == 0
        box.close()
        backend.close()
    return rate


# -- wire bytes -----------------------------------------------------------------------------------


class CountingRelay:
    """TCP relay agent <-> broker counting payload bytes in each direction."""

    def __init__(self, broker_port: int) -> None:
        self.broker_port = broker_port
        self.up = 0  # agent -> broker
        self.down = 0  # broker -> agent
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def total(self) -> int:
        return self.up + self.down

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        b_reader, b_writer = await asyncio.open_connection("127.0.0.1", self.broker_port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, upward: bool) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    if upward:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                    dst.write(data)
                    await dst.drain()
            dst.close()

        with contextlib.suppress(asyncio.CancelledError):  # the benchmark's loop is closing
            await asyncio.gather(pump(reader, b_writer, True), pump(b_reader, writer, False))


@dataclass(frozen=True, slots=True)
class WireSizes:
    alarm: float  # bytes per alarm event (PUBLISH + PUBACK)
    heartbeat: float
    raw_second: float  # bytes per 1-s raw message
    alarm_payload: float
    heartbeat_payload: float
    raw_payload: int


def measure_wire(samples: int) -> WireSizes:
    with tempfile.TemporaryDirectory() as tmp, LocalBroker(workdir=Path(tmp) / "broker") as broker:
        backend = Backend(broker)
        box = Outbox(OutboxConfig(Path(tmp) / "o.db"))

        async def main() -> WireSizes:
            relay = CountingRelay(broker.port)
            await relay.start()
            uplink = MqttUplink(mqtt_config(relay.port), TOPICS, box, 1, poll_s=0.2)
            task = asyncio.create_task(uplink.run())
            await until(lambda: uplink.connected, 10)
            await asyncio.sleep(0.3)  # CONNECT/CONNACK and the birth are not per-message traffic

            async def phase(put: Callable[[int], None]) -> float:
                before, done = relay.total(), uplink.counters().delivered
                for i in range(samples):
                    put(i)
                uplink.notify()
                await until(lambda: uplink.counters().delivered >= done + samples)
                await asyncio.sleep(0.2)  # the last PUBACKs through the relay
                return (relay.total() - before) / samples

            now = time.time()
            alarms = [alarm_event(i) for i in range(samples)]
            raw_topic = f"{TOPICS.root}/raw/p-3f9a1c2be07d"

            def put_alarm(i: int) -> None:
                box.put_alarm(alarms[i], TOPICS.alarm)

            def put_heartbeat(i: int) -> None:
                box.put_heartbeat(heartbeat(now), TOPICS.heartbeat, 120)

            def put_raw(i: int) -> None:  # raw samples would be QoS 1 and unexpiring, like alarms
                box.put(OutboxItem(f"raw{i}", raw_topic, raw_second(i), Kind.ALARM, 2, now))

            per_alarm = await phase(put_alarm)
            per_beat = await phase(put_heartbeat)
            per_raw = await phase(put_raw)
            await uplink.stop()
            await task
            await relay.close()
            return WireSizes(
                per_alarm,
                per_beat,
                per_raw,
                statistics.mean(len(a.to_json()) for a in alarms),
                len(heartbeat(now).to_json()),
                len(raw_second(0)),
            )

        sizes = asyncio.run(main())
        box.close()
        backend.close()
    return sizes


# -- report ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="1 run, 500 events")
    args = parser.parse_args()
    runs, n = (1, 500) if args.quick else (args.runs, args.events)

    print(f"### Throughput (median of {runs} runs, {n} events each; min-max in brackets)\n")
    print("| path | events/s |")
    print("|---|---:|")
    rows: tuple[tuple[str, Callable[[], float]], ...] = (
        ("put_alarm (SQLite commit, synchronous=FULL)", lambda: bench_put("alarm", n)),
        ("put_alarms, 100 alarms per transaction (one turn)", lambda: bench_put("alarm", n, batch=100)),
        ("put_alarm, encrypted at rest (AES-256-GCM)", lambda: bench_put("alarm", n, sealed=True)),
        ("put_alarms, 100 per transaction, encrypted", lambda: bench_put("alarm", n, batch=100, sealed=True)),
        ("put_heartbeat (synchronous=NORMAL)", lambda: bench_put("heartbeat", n)),
        ("drain: pre-filled outbox -> mosquitto, PUBACK, delete", lambda: bench_flow(n, prefill=True)),
        ("end to end: put_alarm + notify -> PUBACK -> delete", lambda: bench_flow(n, prefill=False)),
    )
    for label, fn in rows:
        results = [fn() for _ in range(runs)]
        spread = f"{min(results):,.0f}-{max(results):,.0f}"
        print(f"| {label} | {statistics.median(results):,.0f} ({spread}) |")

    sizes = measure_wire(200 if not args.quick else 50)
    raw_payload_hour = sizes.raw_payload * 3600
    beats_per_hour = 3600 / HEARTBEAT_INTERVAL_S
    pings_per_hour = 3600 / KEEPALIVE_S  # upper bound: one PINGREQ + PINGRESP (2 + 2 B) per keepalive
    print("\n### Measured MQTT v5 sizes (TCP payload, PUBLISH + PUBACK, QoS 1)\n")
    print("| message | JSON/binary payload B | on the wire B |")
    print("|---|---:|---:|")
    print(f"| alarm event | {sizes.alarm_payload:.0f} | {sizes.alarm:.0f} |")
    beat = f"{sizes.heartbeat_payload:.0f} | {sizes.heartbeat:.0f}"
    print(f"| heartbeat (1 device, MessageExpiryInterval) | {beat} |")
    print(f"| 1 s of raw samples (binary) | {sizes.raw_payload} | {sizes.raw_second:.0f} |")

    def per_hour(alarms_per_hour: float) -> tuple[float, float]:
        mqtt = alarms_per_hour * sizes.alarm + beats_per_hour * sizes.heartbeat + pings_per_hour * 4
        packets = 2 * (alarms_per_hour + beats_per_hour)
        return mqtt, mqtt + packets * (TLS13_RECORD + TCP_IP)

    raw_mqtt = 3600 * sizes.raw_second  # a stream keeps the link busy: no PINGs
    raw_full = raw_mqtt + 2 * 3600 * (TLS13_RECORD + TCP_IP)
    print("\n### Bytes per device-hour (one wearable per gateway, heartbeat every 30 s)\n")
    print("| what is sent | MQTT B/h (measured sizes) | + TLS 1.3 and TCP/IPv4, estimated B/h | vs raw |")
    print("|---|---:|---:|---:|")
    for label, rate in (
        ("alarms + heartbeats, 2 alarm events/h (1 episode)", 2.0),
        ("alarms + heartbeats, 20 alarm events/h (10 episodes)", 20.0),
    ):
        mqtt, full = per_hour(rate)
        print(f"| {label} | {mqtt:,.0f} | {full:,.0f} | 1 : {raw_full / full:,.0f} |")
    print(
        f"| raw stream: 250 Hz ECG int16 + 1 Hz vitals, 1 msg/s | {raw_mqtt:,.0f} | {raw_full:,.0f} | 1 : 1 |"
    )
    print(f"\n(raw sample payload alone: {raw_payload_hour:,} B/h)")


if __name__ == "__main__":
    main()
