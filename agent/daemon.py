"""The running agent: sessions one after the other, signals, and config reloads.

Strategy: `Agent` runs one session (`agent.session`: the tasks and the state they share) at a time;
each accepted reload ends the running session (its MQTT client too: a clean "offline" status with
reason "reload", then the next session's "online") and starts a new one, carrying active alarm episodes
over by rule.

Signals: SIGTERM/SIGINT stop (sources close, queued readings are processed, alarms committed,
state saved, a clean "offline" status published, exit 0). SIGHUP reloads the config file: a bad
file is refused with a log line per problem and the running config stays; a good one replaces
the session. `preflight` (agent.preflight) finds what a start or a reload would refuse without
starting anything (`check-config`, and each reload). Should a reloaded config still fail while its
session is set up (before it serves), the agent logs why and runs the previous config again; only
the first start ends the process on such a failure. Each stop ends with one log line: clean, with
the outbox's figures, or the error.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent import state_journal
from agent.config.exposure import exposure_warnings
from agent.config.loader import config_from_bytes, read_config_file
from agent.config.schema import AgentConfig
from agent.config.withheld import with_hint, without_values
from agent.ecg import kept_shapes
from agent.ecg.kept_shapes import Handed, KeptShapes
from agent.errors import AgentError, ConfigError, InvalidConfigError
from agent.gc_pacing import CollectorPacer
from agent.logs import redact_identifiers, scrub_identifiers
from agent.outbox import Outbox
from agent.outbox.wal_tail import WalTail
from agent.pipeline import Pipeline, bad_share
from agent.pipeline.stuck_alarms import nothing_can_alarm
from agent.preflight import DEFAULT_PRIVACY_KEY, preflight
from agent.privacy import Pseudonymizer, SiteKey, stand_ins
from agent.remote import RemoteCommands
from agent.restored_episodes import add_downtime, retire, shift_timers
from agent.session import _Session
from agent.state import ensure_state_dir, next_session
from agent.state_file import read_state, set_aside_state
from agent.state_lock import StateLock
from agent.uplink.mqtt import MqttUplink
from agent.uplink.topics import Topics

__all__ = ["Agent", "preflight"]

log = logging.getLogger("agent")
CLOCK_BEHIND_SLACK_S = 1.0  # a start this far behind the state's save time found the clock stepped back


def _log_refused_reload(path: Path | None, problems: list[str]) -> None:
    """A reload's refusal in the log, whether SIGHUP or a remote `reload` asked for it: each problem
    (the refused file's values already withheld, `without_values`: the log's redaction knows the running
    file's identifiers only, and a path naming a patient in the refused file was logged whole) with the
    file's full path (`path` None: the running config did not come from a file)."""
    if path is None:
        log.error("reload refused: the running config did not come from a file")
    for problem in problems:
        # The operator's way to the values: the console, not the log.
        log.error("reload refused, keeping the running config: %s: %s", path, with_hint(problem, path))


def failure_line(exc: BaseException) -> str:
    """A failed reload, set-up or stop in one line: the key or file, then the problem."""
    if isinstance(exc, InvalidConfigError):
        return "; ".join(str(problem) for problem in exc.errors)
    if isinstance(exc, AgentError):
        return str(exc)  # a ConfigError reads "key: problem", a ModelError "model name: problem"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


def _kept_shapes(
    run: _Session, saved: dict[str, Any], handed: dict[str, Handed] | None
) -> dict[str, KeptShapes]:
    """The beat-shape templates `run`'s ECG devices go on with: a reload's `handed`, or at a start those
    `saved` holds, younger than `KEEP_SHAPES_S` (agent.ecg.kept_shapes)."""
    if handed is not None:
        return kept_shapes.adopted(
            handed, run.beat_signatures, run.beat_names, "the previous session had none"
        )
    entries = kept_shapes.restored(saved.get(kept_shapes.SAVED_KEY), run.beat_names)
    return kept_shapes.adopted(entries, run.beat_signatures, run.beat_names, "none saved", now=time.time())


class Agent:
    def __init__(self, config: AgentConfig, *, sim_start_time: float | None = None) -> None:
        self.config = config
        self._sim_start_time = sim_start_time
        self.stopping = asyncio.Event()
        self.reloading = asyncio.Event()
        self.failed: str | None = None  # the worker that ended on its own: the process exits non-zero
        self.gc_pacer: CollectorPacer | None = None  # process-wide: only the daemon process turns it on
        self._state_lock: StateLock | None = None  # held from the first session's start to the stop
        self._site_key: SiteKey | None = None  # the last session's pseudonym key
        self._torn_wal: WalTail | None = None  # what a torn WAL lost, found at the process's first open

    async def run_until_signalled(self) -> None:
        self.gc_pacer = CollectorPacer()  # this process is the daemon: keep full GC passes off alarms
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reloading.set)
        await self.run()

    async def run(self) -> None:
        """Run sessions until stopped; each accepted reload starts a new session. A reloaded config
        whose session fails during its set-up gives way to the config that ran before it."""
        carried: dict[str, Any] = {}
        handed: dict[str, Handed] | None = None  # the beat-shape templates of a reload (None: a start)
        silences: dict[str, float] = {}  # a reload's: when each device's silence began (`_Session`)
        running: AgentConfig | None = None  # the config of the last session that started
        try:
            while True:
                self.reloading.clear()
                try:
                    run = self._start(self.config, carried, handed, silences)
                except Exception as exc:
                    if running is None or running is self.config:
                        raise  # the first start (or the previous config itself) fails: nothing to go back to
                    log.error(
                        "reload failed at start: %s; going back to the previous config", failure_line(exc)
                    )
                    self.config = running
                    continue
                running = self.config
                carried = await self._serve(run)
                if self.stopping.is_set():
                    return
                handed = run.beat_handover()
                silences = run.silence_handover(time.monotonic())
        finally:
            if self._state_lock is not None:
                self._state_lock.release()
                self._state_lock = None

    def _lock(self, state_dir: Path) -> None:
        """Hold `state_dir`'s lock (one agent per state folder), letting go of another folder's."""
        if self._state_lock is not None and self._state_lock.state_dir == state_dir:
            return
        lock = StateLock(state_dir)  # ConfigError naming the folder when another agent holds it
        if self._state_lock is not None:
            self._state_lock.release()
        self._state_lock = lock

    def _pseudonym_key(self, path: Path) -> SiteKey:
        """The pseudonym key at `path`. One kept in memory (a full or read-only disk refused its file)
        serves the next session too: a reload must not change every pseudonym."""
        kept = self._site_key
        if kept is None or kept.path != path or not kept.unsaved:
            kept = self._site_key = SiteKey(path)
        return kept

    def _start(
        self,
        cfg: AgentConfig,
        carried_alarms: dict[str, Any],
        handed: dict[str, Handed] | None = None,
        silences: Mapping[str, float] | None = None,
    ) -> _Session:
        """Set up a session (state, keys, outbox, uplink, pipeline) without serving it yet; `silences`:
        the previous session's (a reload), which its devices' silences go on from."""
        state_dir = ensure_state_dir(cfg.gateway.state_dir)
        self._lock(state_dir)
        session = next_session(state_dir)
        site_key = self._pseudonym_key(cfg.privacy.key_file or state_dir / DEFAULT_PRIVACY_KEY)
        pseudonym = Pseudonymizer(site_key.key)
        redact_identifiers(stand_ins(cfg.devices, pseudonym))  # a safety net: no id in any log line
        topics = Topics(cfg.mqtt.topic_prefix, cfg.gateway.site, cfg.gateway.id)
        outbox, damaged_outbox = Outbox.open_or_replace(cfg.outbox, save_first=site_key.save)
        # What the process's first open found a torn WAL had lost stays in status for the process's
        # life: a reload's open finds the WAL already replayed (the diff review of 2026-12-01).
        self._torn_wal = outbox.torn_wal = outbox.torn_wal or self._torn_wal
        try:
            run = self._restore(cfg, carried_alarms, state_dir, session, pseudonym, topics, outbox, handed)
            run.resume_silences(silences or {}, time.monotonic())
        except BaseException:
            outbox.close()  # a failed set-up leaves no file open: the previous config opens it again
            raise
        run.outbox_was_replaced = damaged_outbox is not None  # raised as outbox_damaged
        log.info(
            "session %d: %d device(s), %d detector(s), uplink %s:%d",
            session,
            len(cfg.devices),
            len(run.pipeline.detectors),
            cfg.mqtt.host,
            cfg.mqtt.port,
        )
        if (nothing := nothing_can_alarm(cfg)) is not None:  # a start or a reload (review M2)
            log.warning("session %d: %s", session, nothing)
        for exposure in exposure_warnings(cfg):  # privacy review M2, m3
            log.warning("session %d: %s", session, exposure)
        return run

    def _restore(
        self,
        cfg: AgentConfig,
        carried_alarms: dict[str, Any],
        state_dir: Path,
        session: int,
        pseudonym: Pseudonymizer,
        topics: Topics,
        outbox: Outbox,
        handed: dict[str, Handed] | None = None,
    ) -> _Session:
        """`handed`: the previous session's beat-shape templates (a reload); None: a start, which takes
        those saved in the state."""
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
            run = _Session(
                cfg, topics, pipeline, outbox, uplink, session, pseudonym, state_dir, remote, self.gc_pacer
            )
            now = time.time()
            saved_at = saved.get(state_journal.SAVED_AT)
            if not carried_alarms and isinstance(saved_at, int | float):  # a start, not a reload
                if now < saved_at - CLOCK_BEHIND_SLACK_S:  # the clock went back while no agent ran
                    log.warning(
                        "the gateway clock is %.0f s behind the time the state was saved: the saved"
                        " alarm timers (durations, cooldowns) move back with it",
                        saved_at - now,
                    )
                    alarms = shift_timers(alarms, now - saved_at)
                else:
                    alarms = add_downtime(alarms, saved_at, now)
            # Episodes of rules, devices or streams no longer configured end now, not never; after the
            # downtime is added, so their END says it as a still-configured episode's would.
            alarms, ended = retire(alarms, run.unsteppable, cfg.gateway.id, cfg.digest[:16], now)
            pipeline.load_state(saved.get("detectors", {}), alarms)
            pipeline.load_bad_shares(saved.get(bad_share.SAVED_KEY), now)  # after the books: see there
            run.load_gateway_alarms(alarms)
            run.resume_timelines(alarms)
            # Later notes are numbered above those `saved` includes, even in a replaced, empty outbox.
            outbox.number_notes_after(state_journal.NOTE, state_journal.notes_included(saved))
            run.publish(ended)
            return run

        try:
            # Episodes committed with events since the last full save live in the outbox (state_journal).
            alarms = carried_alarms or state_journal.saved_alarms(saved, outbox.notes(state_journal.NOTE))
            run = restored(saved, alarms)
            run.kept_shapes = _kept_shapes(run, saved, handed)
        except Exception as exc:  # JSON of the wrong shape (a version change, a hand edit): start fresh
            # rather than never start; the file is kept aside for whoever wants to look at it.
            # The key of what failed, never the message: it may quote a saved (patient) value.
            # Only once a fresh start works: should the config itself fail (a model, after a reload),
            # the file is not to blame and the previous config restores it.
            where = f" at {exc.path}" if isinstance(exc, ConfigError) else ""
            run = restored({}, {})
            set_aside_state(state_path, f"it cannot be restored ({type(exc).__name__}{where})")
            run.kept_shapes = _kept_shapes(run, {}, handed)
        run.save_state()  # folds the outbox's episode notes into pipeline.json and drops them
        return run

    async def _serve(self, run: _Session) -> dict[str, Any]:
        """Serve a set-up session until a stop or an accepted reload; its alarm episodes to carry over."""
        ending: str | None = None
        try:
            try:
                await run.serve(self, self._sim_start_time)
            finally:
                ending = self._end(run)
        except Exception as exc:
            if self.stopping.is_set():
                log.error("stop failed: %s", failure_line(exc))
            raise
        if ending is not None:
            log.log(
                logging.INFO if self.failed is None and not run.held.count else logging.ERROR, "%s", ending
            )
        return run.alarm_state()

    def _end(self, run: _Session) -> str | None:
        """Save the session's state and close its outbox (always); the stop's log line when stopping."""
        try:
            run.save_state()
            return self._ending(run) if self.stopping.is_set() else None
        finally:
            run.outbox.close()

    def _ending(self, run: _Session) -> str:
        """The stop's log line: what the session delivered and what waits on disk for the next start."""
        stats = run.outbox.stats()
        figures = (
            f"session {run.session}, {run.uplink.counters().delivered} message(s) delivered, "
            f"outbox depth {stats.depth} ({stats.refused} refused)"
        )
        if run.held.count:
            return (
                f"stopped with {run.held.count} alarm event(s) the outbox could not take: they are lost; "
                + figures
            )
        if self.failed is not None:
            return f"stopped after task {self.failed} ended unexpectedly; {figures}"
        return f"stopped cleanly: {figures}"

    def check_reload(self, *, log_refusal: bool = False) -> list[str]:
        """What `try_reload` would refuse in the config file now, one line each; nothing is switched.
        The lines go off the gateway (a remote `reload`'s answer): each names the file by its name only,
        then the key and the kind of problem, the values withheld (`agent.config.withheld`), and is
        scrubbed as a log line is (the running config's identifiers by their pseudonyms). With
        `log_refusal` (a remote `reload`), the lines are also logged as `try_reload` logs them."""
        path = self.config.source_path
        if path is None:
            if log_refusal:
                _log_refused_reload(None, [])
            return ["the running config did not come from a file"]
        _new, problems, text = self._reload_candidate(path)
        lines = without_values(problems, text)
        if log_refusal:
            _log_refused_reload(path, lines)
        return [f"{path.name}: {scrub_identifiers(line)}" for line in lines]

    def try_reload(self) -> bool:
        """Load and check the config file again; keep the running one if the new one is bad."""
        path = self.config.source_path
        if path is None:
            _log_refused_reload(None, [])
            return False
        new, problems, text = self._reload_candidate(path)
        _log_refused_reload(path, without_values(problems, text))
        if new is None:
            return False
        log.info("reloading config %s (sha256 %s)", path, new.digest[:16])
        self.config = new
        return True

    def _reload_candidate(self, path: Path) -> tuple[AgentConfig | None, list[ConfigError], bytes]:
        """The file at `path` read once, loaded and checked as a start would check it: (the config, [],
        its bytes), or (None, its problems, its bytes: b"" if unreadable)."""
        text = b""
        try:
            text = read_config_file(path)
            new = config_from_bytes(text, path)
            preflight(new)
        except InvalidConfigError as exc:
            return None, exc.errors, text
        except ConfigError as exc:
            return None, [exc], text
        except Exception as exc:  # whatever the check meets is a refusal, never an end of the agent
            return None, [ConfigError("", failure_line(exc))], text
        return new, [], text
