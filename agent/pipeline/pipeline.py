"""The pipeline of DESIGN.md from readings to alarm events, built from the configuration.

Readings → quality gate → per-stream windows → detectors (vectorised over streams) → alarm books.
One `StreamPipeline` per stream name that some detector watches; readings of streams nobody
watches are only counted. Building it runs every detector's own parameter checks, so a bad
detector table is refused at start-up (and by `check-config`) with its key path.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from agent.alarms import AlarmBook, BookSnapshot, StreamRef, merged_state
from agent.clock import CLOCK_STEP_S
from agent.config.alarm_hierarchy import superseding_conditions
from agent.config.schema import AgentConfig, AlarmRuleConfig, RunningWhenConfig
from agent.detectors.base import Detector, StreamingDetector
from agent.detectors.limit import LimitDetector
from agent.detectors.registry import build_detector
from agent.errors import ConfigError, InvalidConfigError, ModelError
from agent.events import AlarmEvent, AlarmKind, Phase, Priority
from agent.inference.detector import AutoencoderDetector
from agent.pipeline import bad_share
from agent.pipeline.blind import BlindDetectors
from agent.pipeline.calibration import LiveCalibration, calibration_problem, config_digest
from agent.pipeline.quality import unreachable_limit
from agent.pipeline.stream import StreamPipeline
from agent.pipeline.stuck_alarms import always_alarming, gate_spans, unclearable_rules
from agent.pipeline.technical import BLINDING, QUALITY_KEYS, QualityAlarms, blinding, unusable
from agent.pipeline.wiring import UnwatchedStreams, produces
from agent.readings import MAX_STREAM_IDS, Reading

log = logging.getLogger(__name__)


def model_version(detector: Detector) -> str:
    """ "1.0.0 3fa9c1e2b7d0" for a learned detector (card version, artifact sha256 prefix); "" otherwise."""
    if not isinstance(detector, AutoencoderDetector):
        return ""
    card = detector.model.card
    return f"{card.version} {card.artifact(detector.model.artifact_key).sha256[:12]}"


def build_detectors(config: AgentConfig) -> list[Detector]:
    """Every configured detector, or `InvalidConfigError` with all of their parameter and
    calibration problems and the rules they could never end (`stuck_alarms.unclearable`)."""
    detectors: list[StreamingDetector] = []
    problems: list[ConfigError] = []
    for spec in config.detectors:
        try:
            detector = build_detector(spec, spec.rate_hz)
        except ConfigError as exc:
            problems.append(exc)
            continue
        except ModelError as exc:  # a missing or wrong model: listed like a bad key, and a reload refused
            problems.append(ConfigError(f"detectors.{spec.id}.params.model", str(exc)))
            continue
        _warn_limit_mistakes(detector, config, spec.stream)
        problem = calibration_problem(spec, detector)
        if problem is not None:
            problems.append(problem)
        detectors.append(detector)
    problems += unclearable_rules(config, detectors)
    if problems:
        raise InvalidConfigError(str(config.source_path or "<config>"), problems)
    return list(detectors)


def _warn_limit_mistakes(detector: Detector, config: AgentConfig, stream: str) -> None:
    """Warn about a `limit` detector whose limit the quality gate never lets a value reach (every value
    beyond it is made missing as a sensor fault, so its alarm can never start; equipment review F5), or
    one that alarms on every reading or on the channel's whole normal range (`stuck_alarms`), under
    each range the gate applies to the channel: a device's own span (`ranges`) for that device.
    A warning, not a refusal: a limit far out of reach is also how a configuration switches a rule off,
    and refusing it would stop an agent that started yesterday (check-config, start and reload log it)."""
    if not isinstance(detector, LimitDetector):
        return
    channel = detector.channels[0]
    told: dict[str, None] = {}  # each line once (the normal range's is the same under every span)
    for span in gate_spans(config, stream, channel):
        unreachable = unreachable_limit(channel, detector.above, detector.below, span.ranges, span.set_by)
        if unreachable is not None:
            key, why = unreachable
            told[f"detectors.{detector.id}.params.{key}: {why}: it can never alarm"] = None
        always = always_alarming(channel, detector.above, detector.below, span.ranges, span.set_by)
        if always is not None:  # the opposite slip (review S4): a warning too, for the same reason
            key, why = always
            told[f"detectors.{detector.id}.params.{key}: {why}"] = None
    for line in told:
        log.warning("%s", line)


def verdict_digest(detector_digest: str, rule: AlarmRuleConfig) -> str:
    """What decides whether `rule` finds its condition on a hop: its detector (configuration and model)
    and its hysteresis. An episode restored under another digest is marked (agent.alarms.book)."""
    return hashlib.sha256(f"{detector_digest} {rule.hysteresis!r}".encode()).hexdigest()[:16]


class Pipeline:
    def __init__(
        self,
        config: AgentConfig,
        pseudonym: Callable[[str], str],
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._clock = clock  # the gateway's wall and monotonic clocks: see `StreamPipeline._clock_stepped`
        self._monotonic = monotonic
        config_hash = config.digest[:16]
        gateway = config.gateway.id
        detectors = build_detectors(config)
        books: dict[str, list[AlarmBook]] = {d.id: [] for d in detectors}
        self._books: dict[str, AlarmBook] = {}
        # Each detector's configuration digest and configured threshold: a saved threshold is only
        # taken back for the same configuration. Detectors with a `calibration` table learn live.
        self._digests = {
            spec.id: config_digest(spec, model_version(detector))
            for spec, detector in zip(config.detectors, detectors, strict=True)
        }
        superseding = superseding_conditions(config.alarms, config.detectors)
        for rule, above in zip(config.alarms, superseding, strict=True):
            detector = next(d for d in detectors if d.id == rule.detector)
            book = AlarmBook(
                rule,
                gateway,
                config_hash,
                detector.channels,
                quantity=detector.quantity,
                model_hash=model_version(detector).rsplit(" ", 1)[-1],
                superseding=above,
                verdict_digest=verdict_digest(self._digests[rule.detector], rule),
            )
            books[rule.detector].append(book)
            self._books[f"{rule.detector}/{rule.condition}"] = book
        self._configured = {d.id: d.threshold for d in detectors if isinstance(d, StreamingDetector)}
        self.calibrations = {
            spec.id: LiveCalibration(detector, spec.calibration, spec.rate_hz, self._digests[spec.id])
            for spec, detector in zip(config.detectors, detectors, strict=True)
            if spec.calibration is not None and isinstance(detector, StreamingDetector)
        }
        # What can step a saved alarm row (`unsteppable`): each rule's stream, the devices' pseudonyms.
        stream_of = {spec.id: spec.stream for spec in config.detectors}
        self._book_streams = {key: stream_of[book.rule.detector] for key, book in self._books.items()}
        self._devices = {pseudonym(d.id) for d in config.devices}
        by_stream: dict[str, list[tuple[Detector, list[AlarmBook]]]] = {}
        rate_of = {spec.id: spec.rate_hz for spec in config.detectors}
        rates: dict[str, float] = {}
        for spec, detector in zip(config.detectors, detectors, strict=True):
            by_stream.setdefault(spec.stream, []).append((detector, books[detector.id]))
            rates[spec.stream] = max(rates.get(spec.stream, 0.0), spec.rate_hz)
        # Each stream name's gated machines: device id -> its operating-state gate (agent.pipeline.running)
        gates: dict[str, dict[str, RunningWhenConfig]] = {name: {} for name in by_stream}
        for device in config.devices:
            if device.running_when is not None:
                output = produces(device)
                for name, held in gates.items():
                    if output.open or device.running_when.channel in output.streams.get(name, ()):
                        held[device.id] = device.running_when
        # What each watched stream name has delivered of its detectors' channels: the late ones warned
        # about, the device streams blinded by a missing one (channel_missing, stepped by the session).
        self.blind = BlindDetectors(config, detectors, pseudonym)
        self.streams = {
            name: StreamPipeline(
                name,
                watched,
                QualityAlarms(gateway, config_hash),
                pseudonym,
                1.0 / rates[name],
                self.calibrations,
                rate_of,
                gates[name],
                ranges={device.id: dict(device.ranges) for device in config.devices if device.ranges},
            )
            for name, watched in by_stream.items()
        }
        self.detectors = detectors
        self.unwatched_samples = 0
        read_on: dict[str, dict[str, list[str]]] = {}
        for spec in config.detectors:
            for channel in spec.channels:
                read_on.setdefault(channel, {}).setdefault(spec.stream, []).append(spec.id)
        # A stream the config says a device sends (a simulator's or BLE profile's, a CSV device's) is
        # unwatched by design; only streams a device names at run time (a serial HELLO) are looked at.
        declared = {(d.id, s) for d in config.devices for s in produces(d).streams}
        self.unwatched = UnwatchedStreams(read_on, pseudonym, declared)
        self._gateway_offset = float("nan")  # the gateway's wall - monotonic at the last ingest
        # device stream id -> its stream name: a dictionary look-up costs a third of the split it saves
        self._names: dict[str, str] = {}

    def ingest(self, readings: Iterable[Reading]) -> list[AlarmEvent]:
        """Feed readings in arrival order; returns the alarm events they caused, in order for each
        stream name (each stream name's readings are taken as one batch, in their arrival order)."""
        batches: dict[str, list[Reading]] = {}
        names = self._names
        for reading in readings:
            name = names.get(reading.stream)
            if name is None:  # a device stream's first reading (or after the memo was full)
                if len(names) >= MAX_STREAM_IDS:
                    names.clear()
                name = names[reading.stream] = reading.stream.split("/", 1)[-1]
            batch = batches.get(name)
            if batch is None:
                if name not in self.streams:
                    self.unwatched_samples += reading.n_samples
                    self.unwatched.arrived(reading)
                    continue
                batch = batches[name] = []
            batch.append(reading)
        events: list[AlarmEvent] = []
        monotonic = self._monotonic()
        offset = self._clock() - monotonic
        if abs(offset - self._gateway_offset) > CLOCK_STEP_S:  # the gateway clock stepped since the last
            for stream in self.streams.values():
                stream.gateway_stepped_at = monotonic
        self._gateway_offset = offset
        steps = self.clock_steps()
        for name, batch in batches.items():
            stream = self.streams[name]
            stream.gateway_offset = offset
            self.blind.saw(name, batch)
            events += stream.ingest_many(batch)
        if self.clock_steps() > steps:
            log.warning(
                "the gateway clock stepped: the alarm timers and windows of %d stream(s) moved with it",
                self.clock_steps() - steps,
            )
        for stream in self.streams.values():
            events += stream.flush()
        return [self._blinding(event) for event in events] if events else events

    def clock_steps(self) -> int:
        """Streams whose times were moved for a step of the gateway clock, since start."""
        return sum(s.clock_steps for s in self.streams.values())

    def detector_failures(self) -> dict[str, int]:
        """Detector id -> scoring calls that raised since start (every detector, zeros included)."""
        totals = {d.id: 0 for d in self.detectors}
        for stream in self.streams.values():
            for detector_id, count in stream.detector_failures.items():
                totals[detector_id] += count
        return totals

    def missing_channels(self) -> dict[str, list[str]]:
        """Detector id -> its channels that no reading of its stream has had since start (each logged
        once; `agent.pipeline.blind`). Empty when every detector's channels have all arrived."""
        return self.blind.missing_channels()

    def running_status(self) -> dict[str, dict[str, Any]]:
        """The operating state of every stream of a device with `running_when`, by "pseudonym/stream"."""
        out: dict[str, dict[str, Any]] = {}
        for stream in self.streams.values():
            out |= stream.running_status()
        return out

    def learning_status(self) -> dict[str, dict[str, Any]]:
        """Detector id -> {"of_s", "learnt_s": {"pseudonym/stream": seconds}} of the streams still learning
        their own baseline (no verdict yet); empty once every stream judges. A detector watches one
        stream name, so one stream pipeline gives each detector's entry."""
        out: dict[str, dict[str, Any]] = {}
        for stream in self.streams.values():
            out |= stream.learning_status()
        return out

    def active_alarms(self) -> int:
        return sum(
            book.active_count() for s in self.streams.values() for w in s.watches for book in w.books
        ) + sum(s.quality_alarms.active_count() for s in self.streams.values())

    def models(self) -> dict[str, str]:
        """Model name -> "version sha256-prefix" of every learned detector, for the heartbeat."""
        return {
            d.model.card.name: model_version(d) for d in self.detectors if isinstance(d, AutoencoderDetector)
        }

    def detector_state(self) -> dict[str, Any]:
        """Calibrated thresholds and baselines of every detector, to persist across restarts, each
        with its configuration digest and, once calibrated live, the calibration result."""
        out: dict[str, Any] = {}
        for d in self.detectors:
            entry = d.state() | {"config_digest": self._digests[d.id]}
            calibration = self.calibrations.get(d.id)
            if calibration is not None and (result := calibration.state()) is not None:
                entry["calibration"] = result
            out[d.id] = entry
        return out

    def calibration_status(self) -> dict[str, dict[str, Any]]:
        """Detector id -> live calibration progress or result, for the heartbeat and `status`."""
        return {key: calibration.status() for key, calibration in self.calibrations.items()}

    def alarm_state(self) -> dict[str, Any]:
        """Open alarm episodes (and cooldowns) per rule, keyed "detector/condition", with the signal-
        quality alarms of every stream name (one key per condition, rows of all stream names)."""
        return merged_state(self.alarm_snapshot())

    def alarm_snapshot(self) -> dict[str, list[BookSnapshot]]:
        """`alarm_state()` before its conversion to JSON: cheap copies to convert off the event loop."""
        books = {key: [book.snapshot()] for key, book in self._books.items()}
        for stream in self.streams.values():
            for key, book in stream.quality_alarms.snapshot().items():
                books.setdefault(key, []).append(book)
        return books

    def unsteppable(self, key: str, ref: StreamRef) -> str | None:
        """Why this configuration can never step the saved alarm row `ref` of book `key` (None: it can),
        so an episode open there is ended at restore (`agent.restored_episodes`)."""
        stream = self._book_streams.get(key)
        if stream is None and key not in QUALITY_KEYS:
            return "its rule is no longer configured (removed, or its detector or condition renamed)"
        if ref.device_pseudonym not in self._devices:
            return "its device is no longer configured"
        if stream is None and ref.stream not in self.streams:  # a signal-quality book: any watched stream
            return f"no detector watches its stream {ref.stream!r} any more"
        if stream is not None and ref.stream != stream:
            return f"its detector now watches stream {stream!r}"
        return None

    def unjudged_episodes(
        self, device: str, stream: str | None = None, since: float = math.inf
    ) -> list[tuple[str, Priority]]:
        """Condition and priority of every confirmed open episode of device pseudonym `device` (of
        stream name `stream`, default all) without a verdict since `since` (default: any open one)."""
        found = []
        for key, book in self._books.items():
            name = self._book_streams[key]
            if stream is None or name == stream:
                priority = book.unjudged_priority(StreamRef(device, name), since)
                if priority is not None:
                    found.append((book.rule.condition, priority))
        return found

    def _blinding(self, event: AlarmEvent) -> AlarmEvent:
        """A signal-quality START whose condition kept open physiological episodes of its stream from
        being judged since its onset takes their highest priority and names them (`technical.blinding`).
        Only those without a verdict since: a "no value" on one channel does not blind a rule on another."""
        if event.phase is not Phase.START or event.condition not in BLINDING:
            return event
        ref = StreamRef(event.device, event.stream)
        named = event
        if event.condition == "signal_poor":
            stream = self.streams[event.stream]
            channels = stream.unusable_channels(ref)
            moving = stream.quality_alarms.device_flagged(ref)
            named = unusable(event, channels, self._rules_of_channels(event.stream), moving)
        hidden = self.unjudged_episodes(event.device, event.stream, event.onset_time)
        raised = blinding(named, hidden)
        if raised.priority is not event.priority:
            self.streams[event.stream].quality_alarms.raise_priority(event.condition, ref, raised.priority)
        return raised

    def _rules_of_channels(self, stream: str) -> dict[str, list[tuple[str, Priority]]]:
        """Channel of stream name `stream` -> condition and priority of the physiological rules reading it."""
        rules: dict[str, list[tuple[str, Priority]]] = {}
        for key, book in self._books.items():
            if self._book_streams[key] == stream and book.rule.kind is AlarmKind.PHYSIOLOGICAL:
                for channel in book.channels:
                    rules.setdefault(channel, []).append((book.rule.condition, book.rule.priority))
        return rules

    def load_state(self, detectors: dict[str, Any], alarms: dict[str, Any]) -> None:
        """Restore `detector_state()` and `alarm_state()`; entries of rules that no longer exist are
        dropped, so an active episode continues with its id only while its rule does. Each detector is
        restored on its own (`_restore_detector`): one that changed, or whose saved state does not fit
        it, starts fresh while the others and every alarm episode are taken back."""
        for detector in self.detectors:
            saved = detectors.get(detector.id)
            if saved is None:
                continue
            self._restore_detector(detector, saved)
            calibration = self.calibrations.get(detector.id)
            if calibration is not None:
                calibration.restore(saved.get("calibration") if isinstance(saved, dict) else None)
        for key, book in self._books.items():
            if key in alarms:
                book.load_state(alarms[key])
        for name, stream in self.streams.items():
            stream.quality_alarms.load_state(alarms, name)

    def bad_shares_copied(self) -> list[tuple[str, str, str, bad_share.Copy]]:
        """The signal-quality alarms' intermittent-rule trackers of every stream name, copied
        (`QualityAlarms.shares_copied`), for `pipeline.json`'s `bad_share.SAVED_KEY`."""
        return [copy for stream in self.streams.values() for copy in stream.quality_alarms.shares_copied()]

    def load_bad_shares(self, saved: Any, now: float) -> None:
        """Take back the trackers saved (`{"taken_at": wall time, "rows": bad_share.saved_rows(...)}`)
        when they were copied less than `bad_share.WINDOW_S` before `now`, for the configured devices and
        watched stream names (as the quality books are); otherwise they start afresh, saying why (INFO)."""
        if not isinstance(saved, dict) or not saved.get("rows"):
            return
        taken_at, rows = saved.get("taken_at"), saved["rows"]
        if isinstance(taken_at, bool) or not isinstance(taken_at, int | float) or not isinstance(rows, list):
            log.info("the saved intermittent-quality trackers do not parse: they start afresh")
            return
        if not 0.0 <= now - taken_at < bad_share.WINDOW_S:
            log.info(
                "the intermittent-quality trackers were saved %.0f s before this start (kept under %.0f s):"
                " the share of the last minute with bad signal quality is measured afresh",
                now - taken_at,
                bad_share.WINDOW_S,
            )
            return
        by_name: dict[str, list[Any]] = {}
        damaged = 0
        for row in rows:
            if isinstance(row, list) and len(row) == 6 and isinstance(row[2], str):
                by_name.setdefault(row[2], []).append(row)
            else:
                damaged += 1
        taken = 0
        for name, stream in self.streams.items():
            damaged += stream.quality_alarms.load_shares(by_name.get(name, []), name, self._devices)
            taken += stream.quality_alarms.shares_count()
        log.info(
            "%d intermittent-quality tracker(s) (signal-quality alarms) go on from the state saved %.0f s"
            " before this start",
            taken,
            now - taken_at,
        )
        if damaged:
            log.info("%d saved intermittent-quality tracker(s) do not parse: they start afresh", damaged)

    def _restore_detector(self, detector: Detector, saved: Any) -> None:
        """Take one detector's saved threshold and per-stream state back, only under the configuration
        (and model version) it was saved with. After a change — a margin, the channels, a new model
        activated — each stream's adapted mean, scale, threshold and subspace belong to the old one: kept,
        a new model was judged against a quantile of the previous model's scores and a new margin never
        took effect (audit audml, finding 1), so the detector starts again and its streams adapt anew.
        Saved state that does not fit (a hand edit, another version's layout) costs this detector only;
        before, its error set the whole file aside, every other baseline and open episode with it."""
        assert isinstance(detector, StreamingDetector)  # every registered type is one
        digest = saved.get("config_digest") if isinstance(saved, dict) else None
        if digest is not None and digest != self._digests[detector.id]:
            log.info(
                "detector %s: its configuration or model changed since the state was saved; its saved"
                " threshold and per-stream baselines are dropped and every stream starts again",
                detector.id,
            )
            return
        try:
            if not isinstance(saved, dict):
                raise TypeError("not a table")
            detector.load_state(saved)
        except (ConfigError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            detector.reset_streams()
            detector.threshold = self._configured[detector.id]
            # The key or kind of the problem, never its message: it may quote a saved (patient) value.
            where = f" at {exc.path}" if isinstance(exc, ConfigError) else ""
            log.warning(
                "detector %s: its saved state does not fit it (%s%s); it starts fresh, the other"
                " detectors and the alarm episodes are restored",
                detector.id,
                type(exc).__name__,
                where,
            )
