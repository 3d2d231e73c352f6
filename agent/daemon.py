"""The running agent: sources → pipeline → outbox → uplink, plus heartbeats and technical alarms.

Everything runs in one asyncio loop. Sources push readings into a bounded queue; one task takes
them in batches through the pipeline and commits the resulting alarm events to the outbox, which
is the only road to the broker. A monitor task raises gateway-side technical alarms (device lost,
outbox filling, publish refused) and a heartbeat task reports health at the configured interval.
On stop: sources close, queued readings are processed, alarms flushed to the outbox, detector
state saved, and a clean "offline" status is published.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any

from agent.alarms import StreamRef
from agent.config.schema import AgentConfig
from agent.errors import ConfigError, InvalidConfigError
from agent.events import AlarmEvent, Heartbeat, Priority
from agent.health import Health, board_temperature_c, rss_bytes
from agent.outbox import Outbox
from agent.pipeline import Pipeline, build_detectors
from agent.pipeline.technical import ThresholdAlarm
from agent.privacy import Pseudonymizer, load_or_create_key
from agent.readings import Reading
from agent.sources import check_transport, open_source
from agent.state import ensure_state_dir, next_session, read_json, write_json
from agent.uplink.mqtt import MqttUplink
from agent.uplink.topics import Topics

log = logging.getLogger("agent")

QUEUE_READINGS = 10_000  # bounded: a stalled pipeline makes sources wait instead of eating memory
MONITOR_PERIOD_S = 1.0


def preflight(config: AgentConfig) -> None:
    """Everything `run` would refuse, found without starting anything (for `check-config`)."""
    problems: list[ConfigError] = []
    try:
        Topics(config.mqtt.topic_prefix, config.gateway.site, config.gateway.id)
    except ConfigError as exc:
        problems.append(exc)
    for i, device in enumerate(config.devices):
        try:
            check_transport(device, i)
        except ConfigError as exc:
            problems.append(exc)
    try:
        build_detectors(config)
    except InvalidConfigError as exc:
        problems += exc.errors
    if problems:
        raise InvalidConfigError(str(config.source_path or "<config>"), problems)


class Agent:
    def __init__(self, config: AgentConfig, *, sim_start_time: float | None = None) -> None:
        self.config = config
        self._sim_start_time = sim_start_time
        self.stopping = asyncio.Event()

    async def run_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        await self.run()

    async def run(self) -> None:
        cfg = self.config
        state_dir = ensure_state_dir(cfg.gateway.state_dir)
        session = next_session(state_dir)
        pseudonym = Pseudonymizer(load_or_create_key(cfg.privacy.key_file or state_dir / "pseudonym.key"))
        topics = Topics(cfg.mqtt.topic_prefix, cfg.gateway.site, cfg.gateway.id)
        pipeline = Pipeline(cfg, pseudonym)
        pipeline.load_detector_state(read_json(state_dir / "detectors.json") or {})
        health = Health()
        for device in cfg.devices:
            health.add_device(device.id, pseudonym(device.id), device.lost_after_s)
        outbox = Outbox(cfg.outbox)
        uplink = MqttUplink(cfg.mqtt, topics, outbox, session)
        run = _Run(cfg, topics, pipeline, health, outbox, uplink, session, pseudonym)
        log.info(
            "session %d: %d device(s), %d detector(s), uplink %s:%d",
            session,
            len(cfg.devices),
            len(pipeline.detectors),
            cfg.mqtt.host,
            cfg.mqtt.port,
        )
        try:
            await run.serve(self.stopping, self._sim_start_time)
        finally:
            write_json(state_dir / "detectors.json", pipeline.detector_state())
            outbox.close()


class _Run:
    """One session of the agent: the tasks and the state they share."""

    def __init__(
        self,
        cfg: AgentConfig,
        topics: Topics,
        pipeline: Pipeline,
        health: Health,
        outbox: Outbox,
        uplink: MqttUplink,
        session: int,
        pseudonym: Pseudonymizer,
    ) -> None:
        self.cfg = cfg
        self.topics = topics
        self.pipeline = pipeline
        self.health = health
        self.outbox = outbox
        self.uplink = uplink
        self.session = session
        self.queue: asyncio.Queue[Reading] = asyncio.Queue(QUEUE_READINGS)
        gateway, digest = cfg.gateway.id, cfg.digest[:16]
        self.device_lost = ThresholdAlarm("device_lost", Priority.MEDIUM, gateway, digest)
        self.outbox_filling = ThresholdAlarm("outbox_filling", Priority.HIGH, gateway, digest)
        self.publish_refused = ThresholdAlarm("publish_refused", Priority.HIGH, gateway, digest)
        self.device_refs = [StreamRef(pseudonym(d.id), "device") for d in cfg.devices]
        self.gateway_ref = StreamRef(pseudonym(gateway, "g"), "uplink")

    async def serve(self, stopping: asyncio.Event, sim_start_time: float | None) -> None:
        sources = [
            asyncio.create_task(self._pump(d, sim_start_time), name=f"source {i}")
            for i, d in enumerate(self.cfg.devices)
        ]
        workers = [
            asyncio.create_task(self._process(), name="pipeline"),
            asyncio.create_task(self._heartbeats(), name="heartbeats"),
            asyncio.create_task(self._monitor(), name="monitor"),
            asyncio.create_task(self.uplink.run(), name="uplink"),
        ]
        stop_wait = asyncio.create_task(stopping.wait())
        await asyncio.wait([stop_wait, *workers], return_when=asyncio.FIRST_COMPLETED)
        for task in workers:
            if task.done() and task.exception() is not None:
                log.error("task %s failed: %r", task.get_name(), task.exception())
        for task in sources:
            task.cancel()
        await asyncio.gather(*sources, return_exceptions=True)
        self.workers_stop(workers[:3])
        await asyncio.gather(*workers[:3], return_exceptions=True)
        self._commit(self._drain_queue())  # nothing already read is lost
        await self.uplink.stop()
        workers[3].cancel()
        await asyncio.gather(workers[3], stop_wait, return_exceptions=True)
        stop_wait.cancel()

    @staticmethod
    def workers_stop(tasks: list[asyncio.Task[Any]]) -> None:
        for task in tasks:
            task.cancel()

    async def _pump(self, device: Any, sim_start_time: float | None) -> None:
        """Move one device's readings into the queue; a failing source is restarted with backoff."""
        delay = 1.0
        while True:
            try:
                async with open_source(device, start_time=sim_start_time) as source:
                    self.health.set_counters(device.id, connected=True)
                    async for reading in source:
                        await self.queue.put(reading)
                        delay = 1.0
                return  # a finite source (replay) ended
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a source must never take the agent down
                self.health.set_counters(device.id, connected=False)
                log.warning(
                    "source %s failed (%s); retrying in %.0f s",
                    self.device_refs[self.cfg.devices.index(device)].device_pseudonym,
                    type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    async def _process(self) -> None:
        while True:
            batch = [await self.queue.get()]
            batch += self._drain_queue(limit=2_000)
            self._commit(batch)

    def _drain_queue(self, limit: int | None = None) -> list[Reading]:
        batch: list[Reading] = []
        while not self.queue.empty() and (limit is None or len(batch) < limit):
            batch.append(self.queue.get_nowait())
        return batch

    def _commit(self, readings: list[Reading]) -> None:
        for reading in readings:
            self.health.saw(reading)
        self.publish(self.pipeline.ingest(readings))

    def publish(self, events: list[AlarmEvent]) -> None:
        """Commit alarm events to the outbox (durably, before anything is sent) and wake the uplink."""
        if not events:
            return
        for event in events:
            self.outbox.put_alarm(event, self.topics.alarm)
            log.info(
                "alarm %s %s %s on %s/%s",
                event.phase.value,
                event.priority.value,
                event.condition,
                event.device,
                event.stream,
            )
        self.uplink.notify()

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.gateway.heartbeat_interval_s)
            stats = self.outbox.stats()
            beat = Heartbeat(
                gateway=self.cfg.gateway.id,
                time=time.time(),
                uptime_s=self.health.uptime_s(),
                session=self.session,
                devices=self.health.device_report(),
                outbox_depth=stats.depth,
                oldest_undelivered_age_s=self.outbox.oldest_age(),
                active_alarms=self.pipeline.active_alarms() + self._technical_active(),
                models={},
                cpu_percent=self.health.cpu_percent(),
                rss_bytes=rss_bytes(),
                temperature_c=board_temperature_c(),
            )
            self.outbox.put_heartbeat(beat, self.topics.heartbeat, self.cfg.mqtt.heartbeat_expiry_s)
            self.uplink.notify()

    def _technical_active(self) -> int:
        return sum(a.active_count() for a in (self.device_lost, self.outbox_filling, self.publish_refused))

    async def _monitor(self) -> None:
        """Gateway-side technical alarms, checked once a second."""
        while True:
            await asyncio.sleep(MONITOR_PERIOD_S)
            now, mono = time.time(), time.monotonic()
            devices = self.cfg.devices
            events = self.device_lost.check(
                self.device_refs,
                [self.health.silence_s(d.id, mono) for d in devices],
                [d.lost_after_s for d in devices],
                now,
            )
            events += self.outbox_filling.check(
                [self.gateway_ref], [self.outbox.fill_fraction()], [self.cfg.outbox.warn_fraction], now
            )
            events += self.publish_refused.check(
                [self.gateway_ref], [float(self.outbox.refused_count())], [0.5], now
            )
            self.publish(events)
