"""The pipeline of DESIGN.md from readings to alarm events, built from the configuration.

Readings → quality gate → per-stream windows → detectors (vectorised over streams) → alarm books.
One `StreamPipeline` per stream name that some detector watches; readings of streams nobody
watches are only counted. Building it runs every detector's own parameter checks, so a bad
detector table is refused at start-up (and by `check-config`) with its key path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from agent.alarms import AlarmBook
from agent.config.schema import AgentConfig
from agent.detectors.base import Detector
from agent.detectors.registry import build_detector
from agent.errors import ConfigError, InvalidConfigError
from agent.events import AlarmEvent
from agent.inference.detector import AutoencoderDetector
from agent.pipeline.stream import StreamPipeline
from agent.pipeline.technical import QualityAlarms
from agent.readings import Reading


def model_version(detector: Detector) -> str:
    """ "1.0.0 3fa9c1e2b7d0" for a learned detector (card version, artifact sha256 prefix); "" otherwise."""
    if not isinstance(detector, AutoencoderDetector):
        return ""
    card = detector.model.card
    return f"{card.version} {card.artifact(detector.model.artifact_key).sha256[:12]}"


def build_detectors(config: AgentConfig) -> list[Detector]:
    """Every configured detector, or `InvalidConfigError` with all of their parameter problems."""
    detectors: list[Detector] = []
    problems: list[ConfigError] = []
    for spec in config.detectors:
        try:
            detectors.append(build_detector(spec, spec.rate_hz))
        except ConfigError as exc:
            problems.append(exc)
    if problems:
        raise InvalidConfigError(str(config.source_path or "<config>"), problems)
    return detectors


class Pipeline:
    def __init__(self, config: AgentConfig, pseudonym: Callable[[str], str]) -> None:
        self.config = config
        config_hash = config.digest[:16]
        gateway = config.gateway.id
        detectors = build_detectors(config)
        books: dict[str, list[AlarmBook]] = {d.id: [] for d in detectors}
        self._books: dict[str, AlarmBook] = {}
        for rule in config.alarms:
            detector = next(d for d in detectors if d.id == rule.detector)
            book = AlarmBook(
                rule,
                gateway,
                config_hash,
                detector.channels,
                quantity=detector.quantity,
                model_hash=model_version(detector).rsplit(" ", 1)[-1],
            )
            books[rule.detector].append(book)
            self._books[f"{rule.detector}/{rule.condition}"] = book
        by_stream: dict[str, list[tuple[Detector, list[AlarmBook]]]] = {}
        rates: dict[str, float] = {}
        for spec, detector in zip(config.detectors, detectors, strict=True):
            by_stream.setdefault(spec.stream, []).append((detector, books[detector.id]))
            rates[spec.stream] = max(rates.get(spec.stream, 0.0), spec.rate_hz)
        self.streams = {
            name: StreamPipeline(
                name, watched, QualityAlarms(gateway, config_hash), pseudonym, 1.0 / rates[name]
            )
            for name, watched in by_stream.items()
        }
        self.detectors = detectors
        self.unwatched_samples = 0

    def ingest(self, readings: Iterable[Reading]) -> list[AlarmEvent]:
        """Feed readings in arrival order; returns the alarm events they caused, in order for each
        stream name (each stream name's readings are taken as one batch, in their arrival order)."""
        batches: dict[str, list[Reading]] = {}
        for reading in readings:
            name = reading.stream.split("/", 1)[-1]
            batch = batches.get(name)
            if batch is None:
                if name not in self.streams:
                    self.unwatched_samples += reading.n_samples
                    continue
                batch = batches[name] = []
            batch.append(reading)
        events: list[AlarmEvent] = []
        for name, batch in batches.items():
            events += self.streams[name].ingest_many(batch)
        for stream in self.streams.values():
            events += stream.flush()
        return events

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
        """Calibrated thresholds and baselines of every detector, to persist across restarts."""
        return {d.id: d.state() for d in self.detectors}

    def alarm_state(self) -> dict[str, Any]:
        """Open alarm episodes (and cooldowns) per rule, keyed "detector/condition"."""
        return {key: book.state() for key, book in self._books.items()}

    def load_state(self, detectors: dict[str, Any], alarms: dict[str, Any]) -> None:
        """Restore `detector_state()` and `alarm_state()`; entries of rules that no longer exist are
        dropped, so an active episode continues with its id only while its rule does."""
        for detector in self.detectors:
            if detector.id in detectors:
                detector.load_state(detectors[detector.id])
        for key, book in self._books.items():
            if key in alarms:
                book.load_state(alarms[key])
