"""Remote commands: authenticate, check, dispatch and answer each message of `{root}/cmd/<name>`.

Strategy: `RemoteCommands.submit` is the uplink's `on_command` (called on the asyncio loop). It starts
one task per command (at most MAX_PENDING at once, and one payload over MAX_COMMAND_BYTES, a bundle; more
are answered "busy"), so a snippet that waits for data or a bundle being verified never holds up the
pipeline, and bundles are checked one at a time (each holds several copies of up to 16 MB). Each task
runs the same gauntlet: the topic must be this gateway's command topic with a known name, the payload
within that command's size (`payload_limit`: checked on the raw bytes, before any parsing, since the
signature can only be checked after the envelope's JSON is parsed, and 16 MB of small JSON values cost
about 400 MB), the envelope's signature valid (`agent.remote.envelope`), the body aimed at this gateway
and this command (and to its ResponseTopic, when it names its `reply_to`), the command in
`remote.allowed_commands`, and the command fresh and never seen before (its nonce is spent once it
verified, whatever follows), and a state-changing one not issued before the last one taken up
(`superseded`: `ReplayGuard.admit`; they are admitted in their order of arrival). Only then is it
dispatched. Every outcome is answered on the request's ResponseTopic (or `{root}/cmd/response`; always
there for a command whose signature never verified) with its CorrelationData,
as an `edge-agent/response/1` document (one the broker would not take, over its Maximum Packet Size,
is replaced by a `too_large` error); a ResponseTopic inside the fleet's topic tree (the gateway's own
alarm, heartbeat, status topics) is refused (`Topics.may_answer_on`). Each command is logged once, when
its outcome is known: `accepted` once it ran, or `refused` with its code and the refusal's `reason`
(never a value of the payload: no identifiers, topics or file names reach the log), as a warning when the
refusal tells of forgery or tampering (`CommandRefusedError.security_event`: a bad signature, a replay,
an altered bundle), as info otherwise; `failed` (an error) or `interrupted`. Past a budget
(`agent.remote.answer_budget`) refusals are counted instead of answered, and logged all the same (the
log's rate limit sums up a flood's lines).

Reloads take the SIGHUP road: the new file is checked here first (so problems can be answered, and
logged as a refused SIGHUP reload's are), then the agent's reload event is set and the session's own
`try_reload` switches over. Model installs and activations are `agent.remote.activation`'s: each, with
its reload check, whole in one worker thread under the store's lock; a session end waits for a running
one, so its answer says what the disk holds.
Slow or blocking work (JSON of a large bundle, signatures, file writes, the reload check, which loads
models) runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agent.config.schema import REMOTE_COMMANDS, AgentConfig
from agent.errors import ConfigError, ModelError
from agent.inference.signing import load_public_key
from agent.readings import Reading
from agent.remote.activation import ModelChanges
from agent.remote.answer_budget import AnswerBudget
from agent.remote.bundles import ModelStore
from agent.remote.heap_trim import trim_heap

if TYPE_CHECKING:  # cryptography is imported where keys are used (see agent.inference.signing)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from agent.remote.envelope import (
    CommandRefusedError,
    ReplayGuard,
    check_body,
    check_reply_to,
    open_envelope,
    response,
)
from agent.remote.snippets import SnippetTaps
from agent.uplink.mqtt import AnswerTooLargeError, Command
from agent.uplink.topics import Topics

log = logging.getLogger(__name__)

MAX_PENDING = 4  # commands running at once (snippets wait for data); more are answered "busy"
# Every command but a bundle is a signed envelope of a few hundred bytes (about 450 with the signature):
# a payload over this is refused unread.
MAX_COMMAND_BYTES = 32 * 1024
BUNDLE_COMMAND = "models/install"  # the only command that carries a large payload: a model bundle
# A bundle's payload is the bundle's JSON plus its envelope: the other fields, the signature and the
# escaping of the bundle's quotes in the signed text (about 450 bytes for the shipped models).
BUNDLE_ENVELOPE_BYTES = MAX_COMMAND_BYTES
# Commands that change the config or the models: one issued before the last of them the gateway took up
# is refused `superseded` (ReplayGuard.admit).
CHANGES_STATE = frozenset({"reload", "models/activate", "models/install"})
# Of the seconds a too-large snippet's answer shows would fit, the share suggested: values' JSON lengths vary.
FIT_MARGIN = 0.9


class Respond(Protocol):
    """The uplink's `respond`: `authenticated` answers are never dropped (`MqttUplink.respond`)."""

    def __call__(self, command: Command, payload: bytes, *, authenticated: bool) -> None: ...


Snapshot = Callable[[], dict[str, Any]]


class CheckReload(Protocol):
    """`Agent.check_reload`: what a reload would refuse in the config file now, one line each for the
    answer; with `log_refusal`, also logged as a refused SIGHUP reload's are (the file's full path)."""

    def __call__(self, *, log_refusal: bool = False) -> list[str]: ...


class RemoteCommands:
    """The command handler of one session. `bind` the uplink's `respond` and the status snapshot."""

    def __init__(
        self,
        cfg: AgentConfig,
        topics: Topics,
        state_dir: Path,
        pseudonym: Callable[[str], str],
        *,
        check_reload: CheckReload,
        request_reload: Callable[[], None],
    ) -> None:
        remote = cfg.remote
        self.cfg = cfg
        self.topics = topics
        self.key: Ed25519PublicKey | None = (
            _load_key(remote.public_key_file) if remote.public_key_file is not None else None
        )
        self.store = ModelStore(
            remote.models_dir or state_dir / "models", remote.model_public_key_file or remote.public_key_file
        )
        for leftover in self.store.remove_leftovers_if_idle():  # a crash during an install (kill -9)
            log.info("remote: removed %s left in the models folder by an install cut off", leftover)
        self.guard = ReplayGuard(state_dir, remote.max_age_s)
        self.snippets = SnippetTaps(cfg, pseudonym)
        self._check_reload = check_reload
        self.changes = ModelChanges(self.store, check_reload)
        self._request_reload = request_reload
        self._respond: Respond | None = None
        self._snapshot: Snapshot | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._large: set[asyncio.Task[None]] = set()  # those with a payload over MAX_COMMAND_BYTES
        # Set once the last state-changing command to arrive is past its admission (or ended): the next
        # one waits for it, so they are admitted in the order they arrived, whatever their signature
        # checks take, and two sent in the order signed are never `superseded` by each other.
        self._last_turn: asyncio.Event | None = None
        self.answers = AnswerBudget()
        self._prefix = f"{topics.root}/cmd/"

    def bind(self, respond: Respond, snapshot: Snapshot) -> None:
        self._respond = respond
        self._snapshot = snapshot

    def feed(self, readings: list[Reading]) -> None:
        """Every batch the pipeline saw (for snippets); nearly free when no snippet is open."""
        self.snippets.feed(readings)

    def submit(self, command: Command) -> None:
        """The uplink's `on_command` (asyncio loop thread): run the command in its own task."""
        large = len(command.payload) > MAX_COMMAND_BYTES
        if len(self._tasks) >= MAX_PENDING or (large and self._large):
            why = "a bundle is being checked" if large and self._large else "too many commands in progress"
            self._refuse(command, None, CommandRefusedError("busy", why), authenticated=False)
            return
        previous, turn = None, None
        if command.topic.removeprefix(self._prefix) in CHANGES_STATE:
            previous, turn = self._last_turn, asyncio.Event()
            self._last_turn = turn
        handle = self._handle(command, previous, turn)
        task = asyncio.get_running_loop().create_task(handle, name="remote command")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if large:
            self._large.add(task)
            task.add_done_callback(self._large.discard)
            task.add_done_callback(lambda _task: trim_heap())  # its copies freed: give them back

    async def close(self) -> None:
        """End with the session: running commands are answered "interrupted" (a model change that
        is under way is finished and answered as it ended; one not yet begun is refused)."""
        self.changes.closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- the gauntlet -----------------------------------------------------------------------------

    async def _handle(
        self, command: Command, previous: asyncio.Event | None = None, turn: asyncio.Event | None = None
    ) -> None:
        """Run the gauntlet; a state-changing command is admitted after `previous` (the one that
        arrived before it) and sets `turn` once admitted or ended."""
        try:
            await self._gauntlet(command, previous, turn)
        finally:
            if turn is not None:
                turn.set()

    async def _gauntlet(
        self, command: Command, previous: asyncio.Event | None, turn: asyncio.Event | None
    ) -> None:
        name: str | None = None
        authenticated = False
        try:
            if command.response_topic and not self.topics.may_answer_on(command.response_topic):
                raise CommandRefusedError(
                    "bad_request",
                    "the ResponseTopic must be this gateway's cmd/response or a topic outside the "
                    "fleet's topic tree, without wildcards (answered on cmd/response instead)",
                )
            name = self._name(command.topic)
            limit = payload_limit(name, self.cfg.remote.max_bundle_bytes)
            if len(command.payload) > limit:
                raise CommandRefusedError("too_large", f"payload over {limit} bytes")
            doc, signed = await asyncio.to_thread(open_envelope, command.payload, self.key)
            if not signed and not self.cfg.remote.allow_unsigned:
                raise CommandRefusedError("bad_signature", "unsigned commands are not accepted")
            authenticated = True  # signed, or unsigned where allow_unsigned accepts that
            nonce, issued_at, args = check_body(doc, target=self.topics.root, command=name)
            try:  # before its nonce is spent: the operator's own copy still runs
                check_reply_to(doc, command.response_topic)
            except CommandRefusedError:
                command = replace(command, response_topic=None)  # the refusal too: never to that topic
                raise
            allowed = name in self.cfg.remote.allowed_commands
            # The nonce is spent here whatever follows (a not_allowed one stays spent after a reload
            # allows it); a state-changing command issued before the last one taken up is refused.
            if previous is not None:
                await previous.wait()
            try:
                self.guard.admit(nonce, issued_at, changes_state=allowed and name in CHANGES_STATE)
            finally:
                if turn is not None:
                    turn.set()
            if not allowed:
                raise CommandRefusedError("not_allowed", "this command is not allowed on this gateway")
            result = await self._dispatch(name, args)
        except CommandRefusedError as exc:
            self._refuse(command, name, exc, authenticated=authenticated)
            return
        except asyncio.CancelledError:
            interrupted = CommandRefusedError("interrupted", "the session ended first")
            log.info("remote command %s interrupted: %s", name or "(unknown)", interrupted.reason)
            self._answer(command, name, authenticated, error=interrupted)
            raise
        except Exception as exc:  # a command must never take the session down
            why = failure_text(exc)
            log.error("remote command %s failed: %s", name or "(unknown)", why)
            self._answer(command, name, authenticated, error=CommandRefusedError("failed", why))
            return
        log.info("remote command %s accepted", name)  # once it ran: a refusal is never "accepted" first
        self._answer(command, name, authenticated, result=result)

    def _name(self, topic: str) -> str:
        if not topic.startswith(self._prefix):
            raise CommandRefusedError("bad_topic", "not this gateway's command topic")
        name = topic[len(self._prefix) :]
        if name not in REMOTE_COMMANDS:
            raise CommandRefusedError("unknown_command", f"known commands: {', '.join(REMOTE_COMMANDS)}")
        return name

    def _refuse(
        self, command: Command, name: str | None, error: CommandRefusedError, *, authenticated: bool
    ) -> None:
        """Log a refusal, and answer it within the answer budget (past it, it is counted)."""
        level = logging.WARNING if error.security_event else logging.INFO
        log.log(level, "remote command %s refused: %s (%s)", name or "(unknown)", error.code, error.reason)
        if self.answers.allows(authenticated=authenticated):
            self._answer(command, name, authenticated, error=error)

    def _answer(
        self,
        command: Command,
        name: str | None,
        authenticated: bool,
        *,
        result: Any = None,
        error: CommandRefusedError | None = None,
    ) -> None:
        if self._respond is None:
            return
        if not authenticated:
            # Nobody proved to have sent it: on the request's ResponseTopic, with its CorrelationData, an
            # insider's `{}` copy of an operator's command put a refusal in the operator's tool (review
            # remote #3). On cmd/response the CorrelationData still tells a sender with the wrong key.
            command = replace(command, response_topic=None)
        try:
            payload = response(name, result=result, error=error)
            try:
                self._respond(command, payload, authenticated=authenticated)
            except AnswerTooLargeError as exc:
                too_large = answer_too_large(name, result, len(payload), exc)
                log.warning(
                    "remote command %s: its answer (%d bytes) is over the broker's maximum packet size "
                    "(%d bytes); answered too_large instead",
                    name or "(unknown)",
                    exc.size,
                    exc.limit,
                )
                self._respond(command, response(name, error=too_large), authenticated=authenticated)
        except AnswerTooLargeError as exc:  # not even the error fits: the broker's limit is absurd
            log.error("remote command %s: no answer fits in %d bytes", name or "(unknown)", exc.limit)
        except ValueError:  # a response topic paho will not publish to (wildcards)
            log.warning("remote command %s: response topic unusable", name or "(unknown)")

    # -- the commands -----------------------------------------------------------------------------

    async def _dispatch(self, name: str, args: Mapping[str, Any]) -> Any:
        if name == "status":
            return self._snapshot() if self._snapshot is not None else {}
        if name == "reload":
            await self._reload_checked()
            return {"accepted": True}
        if name == "models/list":
            entries = await asyncio.to_thread(self.store.entries)
            return {"models": [e.to_json() for e in entries]}
        if name == "models/activate":
            reload = args.get("reload", True) is not False
            change = partial(self.changes.activate, args.get("name"), args.get("version"), reload)
            return self._reload_after(await _finished(change), reload)
        if name == "models/install":
            activate, reload = bool(args.get("activate", False)), args.get("reload", True) is not False
            change = partial(self.changes.install, args.get("bundle"), activate, reload)
            return self._reload_after(await _finished(change), activate and reload)
        if name == "snippet":
            return await self.snippets.record(args)
        raise CommandRefusedError("unknown_command", "no handler")  # REMOTE_COMMANDS and this list disagree

    async def _reload_checked(self) -> None:
        problems = await asyncio.to_thread(partial(self._check_reload, log_refusal=True))
        if problems:
            raise CommandRefusedError(
                "refused", "the config file was refused; the running one stays", problems
            )
        self._request_reload()

    def _reload_after(self, result: dict[str, Any], reload: bool) -> dict[str, Any]:
        """An accepted model change: the reload it asks for (its check already passed)."""
        if reload and not self.changes.closing:
            self.changes.reload_requested()
            self._request_reload()
        return result


async def _finished(change: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a model change in a worker thread to its end. Cancelled (the session ends) while it runs,
    it is not abandoned: the answer must say what it left on disk, so it is awaited and answered."""
    future = asyncio.ensure_future(asyncio.to_thread(change))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if future.cancelled():
            raise
        return await future  # the task ends with the change's own answer


def answer_too_large(
    name: str | None, result: Any, size: int, exc: AnswerTooLargeError
) -> CommandRefusedError:
    """The error that replaces an answer of `size` payload bytes the broker would not take: the limit
    and the size, and for a snippet about how many seconds of its stream would fit."""
    detail: dict[str, Any] = {"limit": exc.limit, "size": exc.size}
    message = f"the answer is {exc.size} bytes, over the broker's maximum packet size of {exc.limit} bytes"
    if name == "snippet" and isinstance(result, dict) and (span := _snippet_span(result)) > 0:
        base = len(response(name, result={**result, "blocks": []}))  # the answer without its values
        room = exc.limit - exc.overhead - base
        fits = math.floor(span * max(0, room) / max(1, size - base) * FIT_MARGIN * 10) / 10
        detail["seconds_that_fit"] = fits
        message += f": about {fits:g} s of this stream would fit"
    return CommandRefusedError("too_large", message, detail=detail)


def _snippet_span(result: Mapping[str, Any]) -> float:
    """The seconds of stream a snippet's answer holds: the seconds asked, or less where it was cut."""
    blocks = result.get("blocks") or []
    if not blocks or not result.get("truncated"):
        return float(result.get("seconds") or 0.0)
    last = blocks[-1]
    return float(last["time"] + len(last["values"]) * last["period_s"] - blocks[0]["time"])


def failure_text(exc: Exception) -> str:
    """What a command's unexpected failure says, in its answer and the log: the exception's kind, and for
    an OSError its errno's text ("OSError: No space left on device"). Never the exception's message: an
    OSError's names the file, under a folder whose path may name a patient (`agent.config.withheld`)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{type(exc).__name__}: {os.strerror(exc.errno)}"
    return type(exc).__name__


def payload_limit(name: str, max_bundle_bytes: int) -> int:
    """The largest payload command `name` may have: a bundle of `max_bundle_bytes` in its envelope for
    the bundle command, `MAX_COMMAND_BYTES` for any other."""
    return max_bundle_bytes + BUNDLE_ENVELOPE_BYTES if name == BUNDLE_COMMAND else MAX_COMMAND_BYTES


def _load_key(path: Path, key: str = "remote.public_key_file") -> Ed25519PublicKey:
    try:
        return load_public_key(path, "remote commands")
    except ModelError as exc:
        raise ConfigError(key, exc.reason) from None


def check_remote(cfg: AgentConfig) -> list[ConfigError]:
    """The [remote] problems only visible by reading its key files (for preflight / check-config)."""
    problems: list[ConfigError] = []
    if not cfg.remote.enabled:
        return problems
    for key, path in (
        ("remote.public_key_file", cfg.remote.public_key_file),
        ("remote.model_public_key_file", cfg.remote.model_public_key_file),
    ):
        if path is not None:
            try:
                _load_key(path, key)
            except ConfigError as exc:
                problems.append(exc)
    return problems
