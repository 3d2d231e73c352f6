"""One session of the agent: sources → pipeline → outbox → uplink, plus heartbeats and technical alarms.

Strategy: everything runs in one asyncio loop. Sources push readings into a bounded queue; one task
takes them in batches through the pipeline and commits the resulting alarm events to the outbox, which
is the only road to the broker. A monitor task raises gateway-side technical alarms (device lost,
outbox filling, publish refused) and copies each open source's own counters (bad frames, reconnects,
link up or down) into the device health; a heartbeat task reports health at the configured interval.

A session runs from a start, or an accepted reload, to the next stop or reload (`agent.daemon` runs
the sessions and handles the signals); at its end the sources close, queued readings are processed,
alarms committed and the uplink stopped cleanly. Under systemd the session reports READY, and WATCHDOG
only while its pipeline loop keeps turning.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import state_journal
from agent.alarms import AlarmState, StreamRef
from agent.clock import ClockSteps
from agent.clock_sync import clock_synced
from agent.config.schema import AgentConfig, DeviceConfig
from agent.ecg import kept_shapes
from agent.ecg.kept_shapes import Handed, KeptShapes
from agent.ecg.rr_from_ecg import RrFromEcg
from agent.events import AlarmEvent, Heartbeat, Phase, Priority
from agent.gc_pacing import CollectorPacer
from agent.health import Health, board_temperature_c, desaturation_indices, rss_bytes
from agent.held_alarms import WRITE_ERRORS, HeldAlarms
from agent.inference.detector import AutoencoderDetector
from agent.outbox import Outbox
from agent.pipeline import Pipeline
from agent.pipeline.technical import DESCRIPTIONS, ThresholdAlarm, blinding
from agent.pipeline.wiring import beat_channels_read, expected_units
from agent.privacy import Pseudonymizer
from agent.read_only import remedy
from agent.readings import Reading, stream_id
from agent.remote import RemoteCommands
from agent.resumed_silence import open_silences
from agent.simulation.resumed_timeline import newest_instants
from agent.sources import Source, open_source, rr_validity
from agent.sources.ble_profiles import PROFILES
from agent.sources.counters import source_stats
from agent.state import write_json
from agent.state_saver import StateSaver, StateSnapshot
from agent.status import LAST_HEARTBEAT, StatusServer
from agent.systemd import notify, watchdog_period_s
from agent.uplink.mqtt import MqttUplink
from agent.uplink.topics import Topics

if TYPE_CHECKING:
    from agent.daemon import Agent

log = logging.getLogger("agent")  # the daemon's logger, as before the split

QUEUE_READINGS = 10_000  # bounded: a stalled pipeline makes sources wait instead of eating memory
MONITOR_PERIOD_S = 1.0
# A monitor tick this much later than its period found the event loop stalled (a long save, SIGSTOP, a
# starved VM): the devices' data may be waiting unread in buffers, so their silence is not judged then.
LOOP_STALL_S = 2.0
DETECTOR_CLEAR_S = 60.0  # detector_failing ends after this long without a failure
MIN_TURN_S = 0.01  # at most 100 pipeline turns a second (adds at most 10 ms to an alarm's latency)
PIPELINE_TICK_S = 1.0  # the pipeline loop turns at least this often, idle or not (watchdog proof of life)
BEATS_RETRY_S = 10.0  # after a fault in the beat finding, a fresh stage this much later
STALL_AFTER_S = 10.0  # no turn of the pipeline loop for this long: stop feeding the watchdog
HANDED_OVER_SILENCE_S = 5.0  # a reload goes on counting a silence at least this long (`silence_handover`)


class _GuardedBeats:
    """A device's ECG -> RR stage (agent.ecg.rr_from_ecg) where a fault (a bug) costs the beats, not the
    source: the readings go on without beats, and a fresh stage starts `BEATS_RETRY_S` later. It computes
    only the channels a detector of `config` reads (`beat_channels_read`); a reload makes a new session,
    and with it new stages that follow the new config."""

    def __init__(
        self, device: DeviceConfig, pseudonym: str, config: AgentConfig, kept: KeptShapes | None = None
    ) -> None:
        """`kept`: the device's templates from the stage before this one (agent.ecg.kept_shapes)."""
        assert device.beats is not None
        self._device_id, self._beats_config, self._pseudonym = device.id, device.beats, pseudonym
        self._channels = beat_channels_read(config, device.beats.rr_stream)
        self._stage: RrFromEcg | None = self._new_stage(kept)
        self._failed_at = 0.0

    def _new_stage(self, kept: KeptShapes | None = None) -> RrFromEcg:
        return RrFromEcg(self._device_id, self._beats_config, channels=self._channels, kept=kept)

    def handover(self) -> KeptShapes | None:
        """The stage's templates for the next one (after a fault: none, the fresh stage starts afresh). A
        fault here costs the templates, never a reload or a save."""
        if self._stage is None:
            return None
        try:
            return self._stage.handover()
        except Exception:
            log.exception(
                "the beat-shape templates of %s cannot be handed on: they start afresh", self._pseudonym
            )
            return None

    def take(self, reading: Reading) -> list[Reading]:
        if self._stage is None:
            if time.monotonic() - self._failed_at < BEATS_RETRY_S:
                return [reading]
            self._stage = self._new_stage()
        try:
            return self._stage.take(reading)
        except Exception:
            log.exception(
                "finding beats in the ECG of %s failed: its readings go on, without beats for %.0f s "
                "(heartbeat beats_per_min 0), then it starts again",
                self._pseudonym,
                BEATS_RETRY_S,
            )
            self._stage, self._failed_at = None, time.monotonic()
            return [reading]


class _Session:
    """One session of the agent: the tasks and the state they share."""

    def __init__(
        self,
        cfg: AgentConfig,
        topics: Topics,
        pipeline: Pipeline,
        outbox: Outbox,
        uplink: MqttUplink,
        session: int,
        pseudonym: Pseudonymizer,
        state_dir: Path,
        remote: RemoteCommands | None = None,
        gc_pacer: CollectorPacer | None = None,
    ) -> None:
        self.cfg = cfg
        self.gc_pacer = gc_pacer
        self.topics = topics
        self.pipeline = pipeline
        self.outbox = outbox
        self.uplink = uplink
        self.session = session
        self.state_dir = state_dir
        self.journal = state_journal.EpisodeJournal(cfg.alarms, cfg.detectors)
        self.saver = StateSaver(state_dir / state_journal.STATE_FILE, outbox)
        # One transaction, one fsync per turn; the episodes the events imply are committed with them.
        self.heartbeat_unwritable = False  # the last heartbeat could not be written to the outbox
        self._sent_directly: set[str] = set()  # "{id}:{seq}" of held events already sent directly
        # Asked for each batch of alarm events and each heartbeat (agent.clock_sync); a test sets its own.
        self.clock_synced: Callable[[], bool | None] = clock_synced
        self.held = HeldAlarms(
            lambda events: outbox.put_alarms(events, self.topics.alarm, note=self.journal.note(events)),
            str(cfg.outbox.path),
        )
        # Each ECG device's beats stage, and the templates the next one goes on with (agent.ecg.kept_shapes).
        self.kept_shapes: dict[str, KeptShapes] = {}  # given by the daemon: a reload's or the saved ones
        self.beat_stages: dict[str, _GuardedBeats] = {}
        self.beat_signatures = {
            d.id: kept_shapes.signature(d, beat_channels_read(cfg, d.beats.rr_stream), pseudonym)
            for d in cfg.devices
            if d.beats is not None
        }
        self.beat_names = {d: pseudonym(d) for d in self.beat_signatures}
        self.health = Health(vitals=cfg.privacy.vitals_in_heartbeat)
        for device in cfg.devices:
            beats = stream_id(device.id, device.beats.rr_stream) if device.beats is not None else None
            self.health.add_device(device.id, pseudonym(device.id), device.lost_after_s, beats)
        self.queue: asyncio.Queue[Reading] = asyncio.Queue(QUEUE_READINGS)
        self.sources: dict[str, Source] = {}  # device id -> its open source, for its counters
        gateway, digest = cfg.gateway.id, cfg.digest[:16]
        self.device_lost = ThresholdAlarm(
            "device_lost", Priority.MEDIUM, gateway, digest, configured_limit=True
        )
        # A BLE profile that notifies all the time gone silent while the device's others talk (a stopped
        # oximeter beside a strap): its channels are missing, and device_lost cannot tell (review of
        # 2026-11-30, finding 2). One row per (device, profile), its stream "profile:<name>".
        self.profile_silent = ThresholdAlarm(
            "profile_silent", Priority.MEDIUM, gateway, digest, configured_limit=True
        )
        self.profile_refs = {
            (d.id, name): StreamRef(pseudonym(d.id), f"profile:{name}")
            for d in cfg.devices
            if d.ble is not None
            for name in dict.fromkeys(d.ble.profiles)
            if name in PROFILES and PROFILES[name].continuous
        }
        # A heart-rate strap whose RR intervals are mostly impossible (dropped): the RR rules get no beats
        # while its HR looks fine (agent.sources.rr_validity). One row per BLE device with heart_rate,
        # its stream "rr" (the stream those rules watch).
        self.rr_invalid = ThresholdAlarm("rr_invalid", Priority.LOW, gateway, digest)
        self.rr_refs = {
            d.id: StreamRef(pseudonym(d.id), "rr")
            for d in cfg.devices
            if d.ble is not None and "heart_rate" in d.ble.profiles
        }
        # A detector reading a channel its device does not send on that stream (a typo against a serial
        # HELLO): it judges nothing there (new-user review S3; agent.pipeline.blind). One row per device
        # stream; what blinded it is kept for the END's text.
        self.channel_missing = ThresholdAlarm("channel_missing", Priority.MEDIUM, gateway, digest)
        self.blind_texts: dict[StreamRef, str] = {}
        self.outbox_filling = ThresholdAlarm(
            "outbox_filling", Priority.HIGH, gateway, digest, configured_limit=True
        )
        self.publish_refused = ThresholdAlarm("publish_refused", Priority.HIGH, gateway, digest)
        self.outbox_unreadable = ThresholdAlarm("outbox_unreadable", Priority.HIGH, gateway, digest)
        self.outbox_damaged = ThresholdAlarm("outbox_damaged", Priority.HIGH, gateway, digest)
        self.outbox_unwritable = ThresholdAlarm("outbox_unwritable", Priority.HIGH, gateway, digest)
        self.outbox_was_replaced = False  # this start found the outbox file damaged and replaced it
        # Cleared after a minute without failures, so a detector failing now and then does not flap.
        self.detector_failing = ThresholdAlarm(
            "detector_failing", Priority.HIGH, gateway, digest, clear_after_s=DETECTOR_CLEAR_S
        )
        # Held for the session: a detector runs on its model's previous version (agent.inference.managed).
        self.model_fallback = ThresholdAlarm("model_fallback", Priority.MEDIUM, gateway, digest)
        # paho's network thread died: from the death (seen at one check at least) until it connects again.
        self.uplink_failing = ThresholdAlarm("uplink_failing", Priority.HIGH, gateway, digest)
        self._network_deaths_seen = uplink.network_deaths
        self._uplink_failing_held = False  # a restored uplink_failing episode, until the uplink connects
        # Simulated device id -> where its timeline starts (a restored state's newest time: see
        # `resume_timelines`); the others, and a start without restored state, start at the wall clock.
        self.timeline_starts: dict[str, float] = {}
        self._fallbacks = [
            float(bool(d.model.fallback)) if isinstance(d, AutoencoderDetector) else 0.0
            for d in pipeline.detectors
        ]
        self.gateway_alarms = (
            self.device_lost,
            self.profile_silent,
            self.rr_invalid,
            self.channel_missing,
            self.outbox_filling,
            self.publish_refused,
            self.outbox_unreadable,
            self.outbox_damaged,
            self.outbox_unwritable,
            self.detector_failing,
            self.model_fallback,
            self.uplink_failing,
        )
        self.device_refs = [StreamRef(pseudonym(d.id), "device") for d in cfg.devices]
        self.gateway_ref = StreamRef(pseudonym(gateway, "g"), "uplink")
        self.detector_refs = {
            d.id: StreamRef(self.gateway_ref.device_pseudonym, f"detector:{d.id}") for d in cfg.detectors
        }
        self._failures_seen = pipeline.detector_failures()
        self._clock_steps = ClockSteps()  # the gateway alarms' timers follow steps of the wall clock
        self.pipeline_tick = time.monotonic()
        self.last_heartbeat: dict[str, Any] = {}
        self.status = StatusServer(state_dir, self.snapshot)
        self.remote = remote
        if remote is not None:
            remote.bind(uplink.respond, self.snapshot)

    async def serve(self, agent: Agent, sim_start_time: float | None) -> None:
        await self.status.start()
        sources = [
            asyncio.create_task(self._pump(d, sim_start_time), name=f"source {i}")
            for i, d in enumerate(self.cfg.devices)
        ]
        workers = [
            asyncio.create_task(self._process(), name="pipeline"),
            asyncio.create_task(self._heartbeats(), name="heartbeats"),
            asyncio.create_task(self._monitor(), name="monitor"),
            asyncio.create_task(self._watchdog(), name="watchdog"),
        ]
        uplink = asyncio.create_task(self.uplink.run(), name="uplink")
        notify("READY=1", f"STATUS=session {self.session}, {len(self.cfg.devices)} device(s)")
        await self._until_stop_or_accepted_reload(agent, [*workers, uplink])
        notify("STOPPING=1" if agent.stopping.is_set() else "RELOADING=1")
        for task in sources:
            task.cancel()
        await asyncio.gather(*sources, return_exceptions=True)
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._commit(self._drain_queue())  # nothing already read is lost
        if self.remote is not None:
            await self.remote.close()  # running commands are answered before the uplink stops
        await self.uplink.stop(reason="stop" if agent.stopping.is_set() else "reload")
        uplink.cancel()
        await asyncio.gather(uplink, return_exceptions=True)
        await self.status.close()

    async def _until_stop_or_accepted_reload(self, agent: Agent, tasks: list[asyncio.Task[Any]]) -> None:
        while True:
            stop = asyncio.create_task(agent.stopping.wait())
            reload = asyncio.create_task(agent.reloading.wait())
            done, _ = await asyncio.wait([stop, reload, *tasks], return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            reload.cancel()
            for task in tasks:
                if task in done:
                    # A worker must never end on its own: report it, then stop (systemd restarts us).
                    log.error(
                        "task %s ended unexpectedly: %r; stopping with exit status 1, for the service "
                        "manager to restart the agent",
                        task.get_name(),
                        task.exception(),
                    )
                    agent.failed = task.get_name()
                    agent.stopping.set()
                    return
            if agent.stopping.is_set():
                return
            agent.reloading.clear()
            if agent.try_reload():
                return
            if self.remote is not None:  # a model change waiting for this reload must not wait forever
                self.remote.changes.reload_refused()

    async def _pump(self, device: DeviceConfig, sim_start_time: float | None) -> None:
        """Move one device's readings into the queue; a failing source is reopened with backoff."""
        delay = 1.0
        ref = self.device_refs[self.cfg.devices.index(device)]
        units = expected_units(self.cfg)  # a reload makes a new session, with the new config's
        while True:
            try:
                start = sim_start_time if sim_start_time is not None else self._timeline_start(device)
                async with open_source(device, start_time=start, expected_units=units) as source:
                    self.sources[device.id] = source
                    self.health.source_opened(device.id)
                    self._copy_source_stats(device.id)
                    beats = None
                    if device.beats is not None:
                        beats = _GuardedBeats(device, ref.device_pseudonym, self.cfg, self._kept(device.id))
                        self.beat_stages[device.id] = beats
                    async for reading in source:
                        items = beats.take(reading) if beats is not None else (reading,)
                        for item in items:
                            await self.queue.put(item)
                        delay = 1.0
                    self._source_closed(device.id)
                return  # a finite source (replay) ended
            except asyncio.CancelledError:
                self._source_closed(device.id)
                raise
            except Exception as exc:  # a source must never take the agent down
                self._source_closed(device.id)
                log.warning(
                    "source %s failed (%s); retrying in %.0f s",
                    ref.device_pseudonym,
                    type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    def _kept(self, device_id: str) -> KeptShapes | None:
        """The templates a device's new stage goes on with: its previous stage's in this session (the
        source reopened), else those the session was given."""
        previous = self.beat_stages.get(device_id)
        if previous is not None:
            return previous.handover()
        return self.kept_shapes.pop(device_id, None)

    def beat_handover(self) -> dict[str, Handed]:
        """Each ECG device's templates for the next session (call once its sources are closed)."""
        out = {}
        for device_id, signature in self.beat_signatures.items():
            kept = self._kept(device_id)
            if kept is not None:
                out[device_id] = Handed(kept, signature)
        return out

    def _saved_shapes(self) -> dict[str, Any]:
        """The templates as `pipeline.json` keeps them, by device pseudonym (copies: the stages go on)."""
        out = {}
        for device_id, signature in self.beat_signatures.items():
            stage = self.beat_stages.get(device_id)
            kept = stage.handover() if stage is not None else self.kept_shapes.get(device_id)
            if kept is not None:
                out[self.beat_names[device_id]] = kept_shapes.saved(Handed(kept, signature))
        return out

    async def _process(self) -> None:
        last_turn = 0.0
        while True:
            self.pipeline_tick = time.monotonic()
            if self.gc_pacer is not None:
                self.gc_pacer.tick()  # between turns, so a collection never splits one
            try:
                # Not asyncio.wait_for: on Python 3.11 it swallows a cancel that lands as a reading
                # arrives, and the daemon then never stops (asyncio.timeout does not).
                async with asyncio.timeout(PIPELINE_TICK_S):
                    first = await self.queue.get()
            except TimeoutError:
                continue
            # Each turn costs a flush of every detector, whatever the batch size: readings that arrive
            # within MIN_TURN_S of the previous turn wait for the next one, scored together.
            wait = last_turn + MIN_TURN_S - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            last_turn = time.monotonic()
            self._commit([first, *self._drain_queue(limit=2_000)])

    def _copy_source_stats(self, device_id: str) -> None:
        source = self.sources.get(device_id)
        if source is not None:
            self.health.copy_source_stats(device_id, source_stats(source))

    def _source_closed(self, device_id: str) -> None:
        self._copy_source_stats(device_id)  # its last counts become the base of the next source's
        self.sources.pop(device_id, None)
        self.health.source_closed(device_id)

    def _sync_health(self) -> None:
        """Copy what the sources and detectors keep into the device health."""
        for device_id in self.sources:
            self._copy_source_stats(device_id)
        self.health.set_desaturation_indices(desaturation_indices(self.pipeline.streams.values()))

    def _drain_queue(self, limit: int | None = None) -> list[Reading]:
        batch: list[Reading] = []
        while not self.queue.empty() and (limit is None or len(batch) < limit):
            batch.append(self.queue.get_nowait())
        return batch

    def _commit(self, readings: list[Reading]) -> None:
        for reading in readings:
            self.health.saw(reading)
        self.publish(self.pipeline.ingest(readings))
        if self.remote is not None:
            self.remote.feed(readings)

    def publish(self, events: list[AlarmEvent], *, retry_held: bool = False) -> None:
        """Commit alarm events to the outbox (durably, before anything is sent) and wake the uplink.
        While the outbox cannot be written they are held (agent.held_alarms); `retry_held` tries the
        held ones even when there is nothing new (the monitor, once a second)."""
        if not events and not (retry_held and self.held.count):
            return
        if events:  # told with each event: the back end knows which times to distrust
            synced = self.clock_synced()
            events = [dataclasses.replace(event, clock_synced=synced) for event in events]
        committed = self.held.commit(events)
        if self.held.count:
            self._send_held_directly()
        for event in committed:
            self._sent_directly.discard(f"{event.id}:{event.seq}")
            log.info(
                "alarm %s %s %s on %s/%s",
                event.phase.value,
                event.priority.value,
                event.condition,
                event.device,
                event.stream,
            )
        self.uplink.notify()

    @property
    def outbox_writable(self) -> bool:
        """False while alarm events wait in memory or the last heartbeat could not be written."""
        return not (self.held.count or self.heartbeat_unwritable)

    def _send_held_directly(self) -> None:
        """While the outbox cannot be written (a full SD card), alarm events wait in memory; with the
        broker connected each is also sent once at once, so a full disk does not delay alarms."""
        held = {f"{event.id}:{event.seq}": event for event in self.held.events()}
        self._sent_directly &= held.keys()  # forget events no longer held (dropped past the cap)
        for key, event in held.items():
            if key not in self._sent_directly and self.uplink.publish_now(self.topics.alarm, event.to_json()):
                self._sent_directly.add(key)

    def _put_heartbeat(self, beat: Heartbeat) -> None:
        """Queue the heartbeat; if the outbox cannot be written, say so (once), raise
        `outbox_unwritable` and send this heartbeat directly, so a full disk is not a silent gateway."""
        expiry_s = self.cfg.mqtt.heartbeat_expiry_s
        try:
            result = self.outbox.put_heartbeat(beat, self.topics.heartbeat, expiry_s)
        except WRITE_ERRORS as exc:
            if not self.heartbeat_unwritable:
                log.error(
                    "cannot write the outbox %s (%s): heartbeats are sent directly while the broker is"
                    " connected, and lost while it is not; %s",
                    self.cfg.outbox.path,
                    exc,
                    remedy(self.cfg.outbox.path.parent),
                )
            self.heartbeat_unwritable = True
            self.uplink.publish_now(self.topics.heartbeat, beat.to_json(), expiry_s)
            return
        if self.heartbeat_unwritable:
            log.warning("the outbox %s takes heartbeats again", self.cfg.outbox.path)
        self.heartbeat_unwritable = False
        if not result.stored:  # refused for room (alarms fill it, or the disk's reserve): sent if connected
            self.uplink.publish_now(self.topics.heartbeat, beat.to_json(), expiry_s)
        self.uplink.notify()

    def _heartbeat(self, reset: bool = True) -> Heartbeat:
        """The gateway's health now; per-interval figures (rates, CPU) restart unless not `reset`."""
        self._sync_health()
        return Heartbeat(
            gateway=self.cfg.gateway.id,
            time=time.time(),
            uptime_s=self.health.uptime_s(),
            session=self.session,
            devices=self.health.device_report(reset),
            outbox_depth=self.outbox.depth(),
            oldest_undelivered_age_s=self.outbox.oldest_age(),
            outbox_refused=self.outbox.refused_count(),
            outbox_heartbeats_dropped=self.outbox.heartbeats_dropped(),
            outbox_heartbeats_expired=self.outbox.heartbeats_expired(),
            active_alarms=self.pipeline.active_alarms() + self._technical_active(),
            models=self.pipeline.models(),
            cpu_percent=self.health.cpu_percent(reset),
            rss_bytes=rss_bytes(),
            temperature_c=board_temperature_c(),
            calibration=self.pipeline.calibration_status(),
            running=self.pipeline.running_status(),
            learning=self.pipeline.learning_status(),
            clock_synced=self.clock_synced(),
        )

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.gateway.heartbeat_interval_s)
            beat = self._heartbeat()
            self.last_heartbeat = beat.to_payload()
            self._put_heartbeat(beat)  # a full disk never ends the agent: see held_alarms
            with contextlib.suppress(OSError):
                write_json(self.state_dir / LAST_HEARTBEAT, self.last_heartbeat)
            # Calibration and active episodes survive a crash, one interval old at most.
            await self.saver.save_in_thread(self.state_snapshot())

    def _technical_active(self) -> int:
        return sum(a.active_count() for a in self.gateway_alarms)

    def alarm_state(self) -> dict[str, Any]:
        """Every open episode: the pipeline's and the gateway's own technical alarms."""
        return self.pipeline.alarm_state() | {a.key: a.state() for a in self.gateway_alarms}

    def _blinding(self, event: AlarmEvent) -> AlarmEvent:
        """A device_lost START while the device's physiological episodes are open takes their highest
        priority and names them (`technical.blinding`)."""
        if event.phase is not Phase.START:
            return event
        raised = blinding(event, self.pipeline.unjudged_episodes(event.device))
        self.device_lost.raise_priority(StreamRef(event.device, event.stream), raised.priority)
        return raised

    def _silent_blinding(self, event: AlarmEvent) -> AlarmEvent:
        """A profile_silent START takes the highest priority of the device's open episodes that have had
        no verdict since the profile's values left the rows (its silence plus their hold), and names
        them: a stopped oximeter under an active HIGH spo2_low is high. Episodes still judged (an HR
        rule beside it) are not hidden by it (`technical.blinding`)."""
        if event.phase is not Phase.START:
            return event
        profile = PROFILES.get(event.stream.removeprefix("profile:"))
        gone_at = event.detection_time - event.value + (profile.hold_s if profile is not None else 0.0)
        raised = blinding(event, self.pipeline.unjudged_episodes(event.device, since=gone_at + 1.0))
        self.profile_silent.raise_priority(StreamRef(event.device, event.stream), raised.priority)
        return raised

    def _battery_only(self, event: AlarmEvent, now_monotonic: float) -> AlarmEvent:
        """A device_lost START of a device whose battery level came during the silence says so: "no data"
        was untrue of a strap that answers and notifies its battery while its measurement profiles are
        silent (review "ble", left over)."""
        if event.phase is not Phase.START:
            return event
        refs = zip(self.cfg.devices, self.device_refs, strict=True)
        device = next((d.id for d, ref in refs if ref.device_pseudonym == event.device), None)
        if device is None or not self.health.only_battery(device, now_monotonic):
            return event
        text = event.explanation.text.replace(
            "no data from the device", "only the battery level came from the device", 1
        )
        text += "; no measurement profile is sending"
        return dataclasses.replace(event, explanation=dataclasses.replace(event.explanation, text=text))

    def _check_rr_invalid(self, now: float, now_monotonic: float) -> list[AlarmEvent]:
        """Step rr_invalid for every BLE heart-rate device (`rr_validity.judged`); a START takes the
        priority of the device's RR-stream episodes left without a verdict since its onset."""
        if not self.rr_refs:
            return []
        refs, values, limits = [], [], []
        for device, ref in self.rr_refs.items():
            active = self.rr_invalid.state_of(ref) in (AlarmState.ACTIVE, AlarmState.CLEARING)
            judged = rr_validity.judged(self.health.rr_seen(device), now_monotonic, active)
            if judged is not None:  # no RR intervals lately: held as it is
                refs.append(ref)
                values.append(judged[0])
                limits.append(judged[1])
        events = []
        for event in self.rr_invalid.check(refs, values, limits, now):
            if event.phase is Phase.START:
                hidden = self.pipeline.unjudged_episodes(event.device, event.stream, event.onset_time)
                raised = blinding(event, hidden)
                self.rr_invalid.raise_priority(StreamRef(event.device, event.stream), raised.priority)
                event = raised
            events.append(event)
        return events

    def _blind_named(self, event: AlarmEvent) -> AlarmEvent:
        """A channel_missing event's text names the detectors, channels and what the device sends; its
        START takes the highest priority of the blinded detectors' rules (and of open episodes of the
        stream it leaves unjudged: `technical.blinding`)."""
        ref = StreamRef(event.device, event.stream)
        blind = self.pipeline.blind.of(ref)
        if blind:
            self.blind_texts[ref] = "; ".join(b.text() for b in blind)
        named = self.blind_texts.get(ref)
        if named is not None:
            generic = DESCRIPTIONS["channel_missing"](event.value, event.threshold)
            text = event.explanation.text.replace(generic, named)
            event = dataclasses.replace(event, explanation=dataclasses.replace(event.explanation, text=text))
        if event.phase is not Phase.START:
            return event
        priority = self.pipeline.blind.priority(ref)
        if priority.rank < event.priority.rank:
            event = dataclasses.replace(event, priority=priority)
        raised = blinding(event, self.pipeline.unjudged_episodes(event.device, event.stream))
        self.channel_missing.raise_priority(ref, raised.priority)
        return raised

    def _step_blind(self, now: float, now_monotonic: float) -> list[AlarmEvent]:
        """Step channel_missing for every watched device stream seen this session. An episode still open
        from before a reload or restart goes on, without a new grace, while the stream is still blind."""
        refs, values, limits = self.pipeline.blind.check(now_monotonic)
        for i, ref in enumerate(refs):
            if values[i] > 0 and self.channel_missing.state_of(ref) is not AlarmState.NORMAL:
                values[i] = max(values[i], limits[i] + 1.0)
        return [self._blind_named(e) for e in self.channel_missing.check(refs, values, limits, now)]

    def unsteppable(self, key: str, ref: StreamRef) -> str | None:
        """Why this session can never step saved alarm row `ref` of book `key` (None: it can), so an
        episode open there is ended at restore (`agent.restored_episodes`)."""
        if key not in {alarm.key for alarm in self.gateway_alarms}:
            return self.pipeline.unsteppable(key, ref)
        if key == self.channel_missing.key:
            if ref.device_pseudonym not in {r.device_pseudonym for r in self.device_refs}:
                return "its device is no longer configured"
            if not self.pipeline.blind.watches(ref.stream):
                return f"no detector watches its stream {ref.stream!r} any more"
            return None
        if ref.stream == "device" and ref not in self.device_refs:
            return "its device is no longer configured"
        if key == self.rr_invalid.key and ref not in self.rr_refs.values():
            return "its device or its BLE heart_rate profile is no longer configured"
        if ref.stream.startswith("profile:") and ref not in self.profile_refs.values():
            return "its device or BLE profile is no longer configured"
        if ref.stream.startswith("detector:") and ref not in self.detector_refs.values():
            return "its detector is no longer configured"
        if ref.stream == "uplink" and ref != self.gateway_ref:
            return "the gateway's id changed"
        return None

    def load_gateway_alarms(
        self, alarms: dict[str, Any], now: float | None = None, now_monotonic: float | None = None
    ) -> None:
        """Restore the gateway alarms of `alarm_state()`: an episode open at a restart or a reload keeps
        its id and ends when its condition clears, rather than being raised again under a new one.
        The conditions this session measures from its own start go on from the saved episodes: the
        silences of device_lost and profile_silent (`agent.resumed_silence`), and uplink_failing,
        held until the new uplink connects (its network thread has not died yet, nor connected)."""
        for alarm in self.gateway_alarms:
            if alarm.key in alarms:
                alarm.load_state(alarms[alarm.key])
        now = time.time() if now is None else now
        now_monotonic = time.monotonic() if now_monotonic is None else now_monotonic
        devices = {ref: d.id for ref, d in zip(self.device_refs, self.cfg.devices, strict=True)}
        for ref, silent_s in open_silences(alarms.get(self.device_lost.key), now):
            if ref in devices:
                self.health.resume_silence(devices[ref], silent_s, now_monotonic)
        profiles = {ref: key for key, ref in self.profile_refs.items()}
        for ref, silent_s in open_silences(alarms.get(self.profile_silent.key), now):
            if ref in profiles:
                device_id, profile = profiles[ref]
                self.health.resume_profile_silence(device_id, profile, silent_s, now_monotonic)
        self._uplink_failing_held = self.uplink_failing.state_of(self.gateway_ref) is not AlarmState.NORMAL

    def silence_handover(self, now_monotonic: float) -> dict[str, float]:
        """Device pseudonym -> the monotonic time its silence began (its last reading, or this session's
        start), for the next session of a reload (`resume_silences`): only devices silent for at least
        `HANDED_OVER_SILENCE_S`. One that spoke just before is not: the reload's own gap (the new
        session's models, a BLE link made again) would count against its `lost_after_s`, which a restart
        does not do either (the diff review of 2026-12-01); it counts from the new session's start."""
        handed = {}
        for d, ref in zip(self.cfg.devices, self.device_refs, strict=True):
            since = self.health.silent_since(d.id)
            if now_monotonic - since >= HANDED_OVER_SILENCE_S:
                handed[ref.device_pseudonym] = since
        return handed

    def resume_silences(self, handed: Mapping[str, float], now_monotonic: float) -> None:
        """Go on counting the silences the previous session of a reload counted (`silence_handover`), for
        the devices it had (by pseudonym): a device silent for 25 s of a 30 s `lost_after_s` at the
        reload is lost 5 s later, not 30 s (new-user review of 2026-12-01). A device that talks again
        ends it as ever; a new device counts from this session's start."""
        for d, ref in zip(self.cfg.devices, self.device_refs, strict=True):
            since = handed.get(ref.device_pseudonym)
            if since is not None:
                self.health.resume_silence(d.id, max(0.0, now_monotonic - since), now_monotonic)

    def resume_timelines(self, alarms: dict[str, Any]) -> None:
        """Note where each simulated device's timeline is to start: after the newest instant of its
        restored alarm rows (`agent.simulation.resumed_timeline`)."""
        newest = newest_instants(alarms, skip={a.key for a in self.gateway_alarms})
        self.timeline_starts = {
            d.id: newest[ref.device_pseudonym]
            for d, ref in zip(self.cfg.devices, self.device_refs, strict=True)
            if d.transport == "simulator" and ref.device_pseudonym in newest
        }

    def _timeline_start(self, device: DeviceConfig) -> float | None:
        """The start of `device`'s simulated timeline: None (the wall clock) unless its restored rows
        hold a time ahead of it (a sped-up simulator's), which it then goes on from."""
        start = self.timeline_starts.get(device.id)
        if start is None or start <= time.time():
            return None
        log.info(
            "the simulator of %s goes on %.0f s ahead of the wall clock, after the newest time its "
            "restored alarm state holds (its timeline does not go back)",
            self.device_refs[self.cfg.devices.index(device)].device_pseudonym,
            start - time.time(),
        )
        return start

    async def _monitor(self) -> None:
        """Gateway-side technical alarms and the sources' counters, checked once a second."""
        last_tick = time.monotonic()
        while True:
            await asyncio.sleep(MONITOR_PERIOD_S)
            for device_id in self.sources:
                self._copy_source_stats(device_id)
            now, now_monotonic = time.time(), time.monotonic()
            stalled = now_monotonic - last_tick > MONITOR_PERIOD_S + LOOP_STALL_S
            last_tick = now_monotonic
            self.follow_clock(now, now_monotonic)
            self.check_gateway(now, now_monotonic, loop_stalled=stalled)

    def follow_clock(self, now: float, now_monotonic: float) -> None:
        """Move the gateway alarms' timers (kept in wall time) with a step of the wall clock noticed
        since the previous call, so a step is neither a cooldown that never ends nor one run out; and
        the alarm events this run queued before the step, so they are sent in the corrected clock."""
        stepped = self._clock_steps.step(now, now_monotonic)
        try:
            moved = self.outbox.follow_clock(stepped, now)
        except WRITE_ERRORS as exc:  # a full or failing disk: they are sent as stamped, never lost
            log.error("queued alarm events keep their times: the outbox cannot be written (%s)", exc)
            moved = 0
        if stepped:
            log.warning(
                "the gateway clock stepped by %+.0f s: the gateway alarms' timers follow it, and %d alarm "
                "event(s) queued before it were moved by it",
                stepped,
                moved,
            )
            for alarm in self.gateway_alarms:
                alarm.shift_times(stepped)

    def check_gateway(self, now: float, now_monotonic: float, *, loop_stalled: bool = False) -> None:
        """Step the gateway's technical alarms (silent devices, the outbox) and commit their events.
        `loop_stalled`: the loop just came back from a stall, so the devices' silence is not judged on this
        tick (their data may wait unread: a 10 s SIGSTOP raised a device_lost that ended 1 s later)."""
        devices = self.cfg.devices
        events = []
        if not loop_stalled:
            events = [
                self._blinding(self._battery_only(event, now_monotonic))
                for event in self.device_lost.check(
                    self.device_refs,
                    [self.health.silence_s(d.id, now_monotonic) for d in devices],
                    [d.lost_after_s for d in devices],
                    now,
                )
            ]
            lost_after = {d.id: d.lost_after_s for d in devices}
            silent = self.profile_silent.check(
                list(self.profile_refs.values()),
                [self.health.profile_silence_s(d, name, now_monotonic) for d, name in self.profile_refs],
                [lost_after[d] for d, _ in self.profile_refs],
                now,
            )
            events += [self._silent_blinding(_name_profile(event)) for event in silent]
            events += self._check_rr_invalid(now, now_monotonic)
        events += self._step_blind(now, now_monotonic)
        outbox = self.outbox
        events += self.outbox_filling.check(
            [self.gateway_ref], [outbox.alarm_fill_fraction()], [self.cfg.outbox.warn_fraction], now
        )
        events += self.publish_refused.check([self.gateway_ref], [float(outbox.refused_count())], [0.5], now)
        events += self.outbox_unreadable.check(
            [self.gateway_ref], [float(outbox.undecryptable_count())], [0.5], now
        )
        # Once: the alarm starts at the first check and ends at the next (it reports what this start did).
        replaced, self.outbox_was_replaced = self.outbox_was_replaced, False
        events += self.outbox_damaged.check([self.gateway_ref], [float(replaced)], [0.5], now)
        # Raised while alarm events wait in memory or a heartbeat could not be written; committed once
        # the outbox takes writes again, and meanwhile sent directly (`_send_held_directly`).
        unwritable = float(not self.outbox_writable)
        events += self.outbox_unwritable.check([self.gateway_ref], [unwritable], [0.5], now)
        failures = self.pipeline.detector_failures()
        new_failures = [float(failures[d] - self._failures_seen.get(d, 0)) for d in self.detector_refs]
        self._failures_seen = failures
        events += self.detector_failing.check(
            list(self.detector_refs.values()), new_failures, [0.5] * len(new_failures), now
        )
        refs = [self.detector_refs[d.id] for d in self.pipeline.detectors]
        events += self.model_fallback.check(refs, self._fallbacks, [0.5] * len(refs), now)
        # A death and the reconnect within one check still raise it (and end it at the next).
        deaths = self.uplink.network_deaths
        if self._uplink_failing_held and self.uplink.counters().connected:
            self._uplink_failing_held = False  # the restored episode ends when the new uplink connects
        failing = float(
            self.uplink.network_failed or deaths > self._network_deaths_seen or self._uplink_failing_held
        )
        self._network_deaths_seen = deaths
        events += self.uplink_failing.check([self.gateway_ref], [failing], [0.5], now)
        self.publish(events, retry_held=True)

    async def _watchdog(self) -> None:
        """Feed systemd's watchdog only while the pipeline loop turns: a stall means a restart."""
        period = watchdog_period_s()
        if period is None:
            await asyncio.Event().wait()  # not under a systemd watchdog: nothing to feed
            return
        while True:
            # First at the session's start: after a reload the previous session's last ping may be a
            # whole period old already, and the switch took some more (ops review F1).
            stalled_for = time.monotonic() - self.pipeline_tick
            if stalled_for < STALL_AFTER_S:
                notify("WATCHDOG=1")
            else:
                log.error("pipeline stalled for %.0f s: not feeding the watchdog", stalled_for)
            await asyncio.sleep(period)

    def state_snapshot(self, with_shares: bool = False) -> StateSnapshot:
        """What `pipeline.json` saves, copied on the event loop (see `agent.state_saver`). `with_shares`:
        the quality alarms' intermittent-rule trackers too (`agent.pipeline.bad_share`), only at the
        start's and the stop's (or reload's) save: copying them costs ~1.7 us each on the loop (130 ms
        of CPU at 75,000 streams with quality flags), too much for every heartbeat in a storm, and a
        restart or reload (a stop's save) is what they are for; after a crash they start afresh."""
        gateway = {a.key: [a.snapshot()] for a in self.gateway_alarms}
        alarms = self.pipeline.alarm_snapshot() | gateway
        shares = self.pipeline.bad_shares_copied() if with_shares else None
        return self.saver.snapshot(self.pipeline.detector_state(), alarms, self._saved_shapes(), shares)

    def save_state(self) -> None:
        """Save `pipeline.json` now, on the event loop (start-up and shutdown), with the trackers."""
        self.saver.save(self.state_snapshot(with_shares=True))

    def snapshot(self) -> dict[str, Any]:
        """What `edge-agent status` shows: the last heartbeat plus live uplink and outbox figures."""
        counters = self.uplink.counters()
        stats = self.outbox.stats()
        return {
            # Before the session's first heartbeat: the same figures, looked at now.
            "heartbeat": self.last_heartbeat or self._heartbeat(reset=False).to_payload(),
            "calibration": self.pipeline.calibration_status(),  # live, between heartbeats too
            "clock_synced": self.clock_synced(),  # live too: NTP's first sync may come between heartbeats
            "uplink": {
                "connected": counters.connected,
                "delivered": counters.delivered,
                "refused": counters.refused,
                "reconnects": counters.reconnects,
                "inflight": counters.inflight,
                "problem": counters.problem,  # why the broker cannot be reached, while it cannot
                "first_problem": counters.first_problem,  # the outage's first cause, when another came since
                "failed_attempts": counters.failed_attempts,
                "down_for_s": counters.down_for_s,
                "takeover": counters.takeover,  # another client seems to use our client id
            },
            # A command flood's cost, bounded: what was dropped or left unanswered (remote-management.md).
            "commands": {
                "dropped": counters.commands_dropped,
                "unanswered": self.remote.answers.unanswered if self.remote is not None else 0,
                "answers_dropped": counters.answers_dropped,
                "answers_refused": counters.answers_refused,
            },
            "outbox": {
                "depth": stats.depth,
                "refused": stats.refused,
                "size_bytes": stats.size_bytes,
                "evicted": stats.evicted,
                "held_in_memory": self.held.count,  # alarm events the outbox could not take yet
                # committed transactions the outbox's WAL lost before this start (a card that lost data)
                "wal_lost_at_start": torn.lost_transactions if (torn := self.outbox.torn_wal) else 0,
                "writable": self.outbox_writable,
            },
            # "pseudonym/stream" -> operating state of machines with `running_when` (off / settling / running)
            "running": self.pipeline.running_status(),
            # detector id -> {of_s, learnt_s: {"pseudonym/stream": s}}: streams still learning, no verdict yet
            "learning": self.pipeline.learning_status(),
            "missing_channels": self.pipeline.missing_channels(),  # detector id -> channels never fed
            # "pseudonym/stream" -> detectors it blinds (channel_missing): channel, what the device sends
            "blind_streams": self.pipeline.blind.listed(),
            # "pseudonym/stream" -> channels detectors read elsewhere, sent where none watches
            "unwatched_streams": dict(self.pipeline.unwatched.listed),
            "queue": self.queue.qsize(),
            "pipeline_tick_age_s": round(time.monotonic() - self.pipeline_tick, 3),
        }


def _name_profile(event: AlarmEvent) -> AlarmEvent:
    """A profile_silent event's text names its profile and channels (its stream is "profile:<name>")."""
    profile = PROFILES.get(event.stream.removeprefix("profile:"))
    if profile is None:
        return event
    channels = ", ".join(profile.channels) or profile.stream
    named = f"BLE profile {profile.name} ({profile.title}; {channels})"
    text = event.explanation.text.replace("the BLE profile", named)
    return dataclasses.replace(event, explanation=dataclasses.replace(event.explanation, text=text))
