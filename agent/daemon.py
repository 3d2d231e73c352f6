"""The running agent: sessions one after the other, signals, and config reloads.

Strategy: `Agent` runs one session (`agent.session`: the tasks and the state they share) at a time;
each accepted reload ends the running session and starts a new one, carrying active alarm episodes
over by rule.

Signals: SIGTERM/SIGINT stop (sources close, queued readings are processed, alarms committed,
state saved, a clean "offline" status published, exit 0). SIGHUP reloads the config file: a bad
file is refused with a log line per problem and the running config stays; a good one replaces
the session. `preflight` finds what a start or a reload would refuse without starting anything
(`check-config`, and each reload).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from agent import state_journal
from agent.config import load_config
from agent.config.schema import AgentConfig
from agent.errors import ConfigError, InvalidConfigError
from agent.gc_pacing import CollectorPacer
from agent.logs import redact_identifiers
from agent.outbox import Outbox
from agent.pipeline import Pipeline, build_detectors
from agent.privacy import Pseudonymizer, load_or_create_key, stand_ins
from agent.remote import RemoteCommands, check_remote
from agent.session import _Session
from agent.sources import check_transport
from agent.state import ensure_state_dir, next_session
from agent.state_file import read_state, set_aside_state
from agent.uplink.mqtt import MqttUplink
from agent.uplink.topics import Topics

__all__ = ["Agent", "preflight"]

log = logging.getLogger("agent")


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
    problems += check_remote(config)
    if problems:
        raise InvalidConfigError(str(config.source_path or "<config>"), problems)


class Agent:
    def __init__(self, config: AgentConfig, *, sim_start_time: float | None = None) -> None:
        self.config = config
        self._sim_start_time = sim_start_time
        self.stopping = asyncio.Event()
        self.reloading = asyncio.Event()
        self.failed: str | None = None  # the worker that ended on its own: the process exits non-zero
        self.gc_pacer: CollectorPacer | None = None  # process-wide: only the daemon process turns it on

    async def run_until_signalled(self) -> None:
        self.gc_pacer = CollectorPacer()  # this process is the daemon: keep full GC passes off alarms
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reloading.set)
        await self.run()

    async def run(self) -> None:
        """Run sessions until stopped; each accepted reload starts a new session."""
        carried: dict[str, Any] = {}
        while True:
            self.reloading.clear()
            carried = await self._session(self.config, carried)
            if self.stopping.is_set():
                return

    async def _session(self, cfg: AgentConfig, carried_alarms: dict[str, Any]) -> dict[str, Any]:
        state_dir = ensure_state_dir(cfg.gateway.state_dir)
        session = next_session(state_dir)
        pseudonym = Pseudonymizer(load_or_create_key(cfg.privacy.key_file or state_dir / "pseudonym.key"))
        redact_identifiers(stand_ins(cfg.devices, pseudonym))  # a safety net: no id in any log line
        topics = Topics(cfg.mqtt.topic_prefix, cfg.gateway.site, cfg.gateway.id)
        outbox, damaged_outbox = Outbox.open_or_replace(cfg.outbox)
        state_path = state_dir / state_journal.STATE_FILE
        saved = read_state(state_path, outbox.sealer) or {}
        remote = None
        if cfg.remote.enabled:  # remote management (agent.remote): commands on {root}/cmd/<name>
            remote = RemoteCommands(
                cfg,
                topics,
                state_dir,
                pseudonym,
                check_reload=self.check_reload,
                request_reload=self.reloading.set,  # the SIGHUP road
            )
        uplink = MqttUplink(
            cfg.mqtt, topics, outbox, session, on_command=remote.submit if remote is not None else None
        )

        def restored(saved: dict[str, Any], alarms: dict[str, Any]) -> _Session:
            pipeline = Pipeline(cfg, pseudonym)
            pipeline.load_state(saved.get("detectors", {}), alarms)
            run = _Session(
                cfg, topics, pipeline, outbox, uplink, session, pseudonym, state_dir, remote, self.gc_pacer
            )
            run.load_gateway_alarms(alarms)
            # Later notes are numbered above those `saved` includes, even in a replaced, empty outbox.
            outbox.number_notes_after(state_journal.NOTE, state_journal.notes_included(saved))
            run.outbox_was_replaced = damaged_outbox is not None  # raised as outbox_damaged
            return run

        try:
            # Episodes committed with events since the last full save live in the outbox (state_journal).
            alarms = carried_alarms or state_journal.saved_alarms(saved, outbox.notes(state_journal.NOTE))
            run = restored(saved, alarms)
        except Exception as exc:  # JSON of the wrong shape (a version change, a hand edit): start fresh
            # rather than never start; the file is kept aside for whoever wants to look at it.
            # The key of what failed, never the message: it may quote a saved (patient) value.
            where = f" at {exc.path}" if isinstance(exc, ConfigError) else ""
            set_aside_state(state_path, f"it cannot be restored ({type(exc).__name__}{where})")
            run = restored({}, {})
        pipeline = run.pipeline
        run.save_state()  # folds the outbox's episode notes into pipeline.json and drops them
        log.info(
            "session %d: %d device(s), %d detector(s), uplink %s:%d",
            session,
            len(cfg.devices),
            len(pipeline.detectors),
            cfg.mqtt.host,
            cfg.mqtt.port,
        )
        try:
            await run.serve(self, self._sim_start_time)
        finally:
            run.save_state()
            outbox.close()
        return run.alarm_state()

    def check_reload(self) -> list[str]:
        """What `try_reload` would refuse in the config file now, one line each; nothing is switched."""
        path = self.config.source_path
        if path is None:
            return ["the running config did not come from a file"]
        try:
            preflight(load_config(path))
        except InvalidConfigError as exc:
            return [f"{path}: {problem}" for problem in exc.errors]
        except ConfigError as exc:
            return [f"{path}: {exc}"]
        return []

    def try_reload(self) -> bool:
        """Load and check the config file again; keep the running one if the new one is bad."""
        path = self.config.source_path
        if path is None:
            log.error("reload refused: the running config did not come from a file")
            return False
        try:
            new = load_config(path)
            preflight(new)
        except InvalidConfigError as exc:
            for problem in exc.errors:
                log.error("reload refused, keeping the running config: %s: %s", path, problem)
            return False
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s: %s", path, exc)
            return False
        log.info("reloading config %s (sha256 %s)", path, new.digest[:16])
        self.config = new
        return True
