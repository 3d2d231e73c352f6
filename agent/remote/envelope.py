"""The wire format of remote commands: signed envelopes in, versioned responses out, replays refused.

Strategy: a command is a small JSON *body* ({"schema", "target", "command", "issued_at", "nonce",
"args"}). With a public key configured the payload is an envelope {"signed": <the body as a JSON text>,
"signature": <base64 Ed25519>} and the signature covers a domain tag plus the exact UTF-8 bytes of that
text, so no canonical JSON form is needed and any language can sign. The body binds itself to one gateway
(`target` is the topic root `{prefix}/{site}/{gateway}`) and to one command (it must name the command of
the topic it came on), so a signed command cannot be redirected to another gateway or turned into another
command; an optional `reply_to` binds it to the ResponseTopic it is published with (`check_reply_to`),
which the signature cannot cover itself. Freshness: `issued_at` must be within `max_age_s` of the gateway
clock and each `nonce` is accepted once; nonces are kept (atomically, in the state dir) for twice that
age, with the time before which they were forgotten (`complete_after`): a command issued at or before it
is refused, so neither a restart nor a reload, not even one that widens `max_age_s`, reopens the window
for a replay of a forgotten nonce.

With a key configured the envelope is read by a scanner that accepts only its shape, an object of the
two string members, and stops where the payload leaves it: nothing but those two strings is built
before the signature is checked (a JSON parser turns 16 MB of `{}` into about 400 MB). An envelope
with other members is refused.

Every refusal is a `CommandRefusedError` with a stable `code`; the messages never quote payload values.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.errors import AgentError
from agent.state import write_json

if TYPE_CHECKING:  # cryptography is imported where keys are used (see agent.inference.signing)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger(__name__)

COMMAND_SCHEMA = "edge-agent/command/1"
RESPONSE_SCHEMA = "edge-agent/response/1"
DOMAIN = b"edge-agent command v1\n"
NONCE_FILE = "remote-nonces.json"
MAX_NONCES = 4096  # accepted commands remembered at once; more within one window are refused
_NONCE_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_")
_ENVELOPE_KEYS = frozenset({"signed", "signature"})
_SPACE = re.compile(r"[ \t\n\r]*")  # JSON whitespace
_DECODER = json.JSONDecoder()
# Refusals that tell of a forged or captured command, whoever sent it: logged as warnings.
SECURITY_CODES = frozenset({"bad_signature", "replayed"})


class CommandRefusedError(AgentError):
    """A command the gateway will not run. `code` is the response's error code, `message` the answer's
    text; `reason` is what the gateway's log says (the message unless that may quote a value of the
    payload, a file name say), and `security_event` whether the refusal is a sign of forgery or tampering
    (logged as a warning, an ordinary refusal as info): a bad signature or a replay by default."""

    def __init__(
        self,
        code: str,
        message: str,
        problems: list[str] | None = None,
        *,
        detail: Mapping[str, Any] | None = None,
        reason: str | None = None,
        security_event: bool | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.problems = problems or []  # e.g. why a reload was refused, one line each
        self.detail = dict(detail or {})  # what did happen, e.g. {"installed": true} (error fields)
        self.reason = message if reason is None else reason
        self.security_event = code in SECURITY_CODES if security_event is None else security_event


@dataclass(frozen=True, slots=True)
class CommandBody:
    """An authenticated, fresh command, ready to dispatch."""

    command: str
    nonce: str
    issued_at: float
    args: Mapping[str, Any] = field(default_factory=dict)
    signed: bool = False


def sign_command(
    key: Ed25519PrivateKey,
    target: str,
    command: str,
    args: Mapping[str, Any] | None = None,
    *,
    issued_at: float | None = None,
    nonce: str | None = None,
    reply_to: str | None = None,
) -> bytes:
    """The payload to publish on `{target}/cmd/{command}` (operator side; the key never is on a gateway);
    with `reply_to`, the ResponseTopic it must be published with (`check_reply_to`)."""
    fields: dict[str, Any] = {
        "schema": COMMAND_SCHEMA,
        "target": target,
        "command": command,
        "issued_at": time.time() if issued_at is None else issued_at,
        "nonce": nonce or base64.urlsafe_b64encode(_random(18)).decode().rstrip("="),
        "args": dict(args or {}),
    }
    if reply_to is not None:
        fields["reply_to"] = reply_to
    body = json.dumps(fields, separators=(",", ":"))
    signature = key.sign(DOMAIN + body.encode("utf-8"))
    return json.dumps({"signed": body, "signature": base64.b64encode(signature).decode()}).encode()


def _random(n: int) -> bytes:
    import secrets

    return secrets.token_bytes(n)


def open_envelope(payload: bytes, key: Ed25519PublicKey | None) -> tuple[dict[str, Any], bool]:
    """The command body and whether it was signature-checked; unsigned bodies only when `key` is None."""
    if key is not None:
        text, encoded = _envelope_text(_envelope_members(payload))
        from cryptography.exceptions import InvalidSignature

        try:
            signature = base64.b64decode(encoded, validate=True)
            key.verify(signature, DOMAIN + text.encode("utf-8"))
        except (binascii.Error, ValueError, InvalidSignature):
            raise CommandRefusedError(
                "bad_signature", "the signature does not verify with the configured key"
            ) from None
        return _json_object(text, "signed"), True
    doc = _json_object(payload, "payload")
    if "signed" in doc or "signature" in doc:
        # No key to check with: the signature proves nothing, the body is taken as unsigned.
        return _json_object(_envelope_text(doc)[0], "signed"), False
    return doc, False


def _envelope_text(doc: Mapping[str, Any]) -> tuple[str, str]:
    """(signed text, encoded signature) of an envelope."""
    text, encoded = doc.get("signed"), doc.get("signature")
    if not isinstance(text, str) or not isinstance(encoded, str):
        raise CommandRefusedError("bad_request", "an envelope needs string fields 'signed' and 'signature'")
    return text, encoded


def _envelope_members(payload: bytes) -> dict[str, str]:
    """The members of an envelope, read without building anything else: refused where the payload stops
    being a JSON object of 'signed' and 'signature' strings."""
    try:
        text = payload.decode(json.detect_encoding(payload), "surrogatepass")  # as json.loads reads bytes
    except UnicodeDecodeError:
        raise CommandRefusedError("bad_request", "payload is not JSON") from None
    at = _skip(text, 0)
    if text[at : at + 1] != "{":
        raise CommandRefusedError("bad_request", "payload must be a JSON object")
    members: dict[str, str] = {}
    at = _skip(text, at + 1)
    end = at + 1 if text[at : at + 1] == "}" else None
    while end is None:
        name, at = _string(text, at)
        if name not in _ENVELOPE_KEYS:  # the rest is not read: it may not even be JSON
            raise CommandRefusedError(
                "bad_signature",
                "not a signed envelope (only 'signed' and 'signature'), and a public key is configured",
            )
        at = _skip(text, at)
        if text[at : at + 1] != ":":
            raise CommandRefusedError("bad_request", "payload is not JSON")
        at = _skip(text, at + 1)
        if text[at : at + 1] != '"':
            raise CommandRefusedError(
                "bad_request", "an envelope needs string fields 'signed' and 'signature'"
            )
        members[name], at = _string(text, at)
        at = _skip(text, at)
        if text[at : at + 1] == "}":
            end = at + 1
        elif text[at : at + 1] == ",":
            at = _skip(text, at + 1)
        else:
            raise CommandRefusedError("bad_request", "payload is not JSON")
    if _skip(text, end) != len(text):
        raise CommandRefusedError("bad_request", "payload is not JSON")
    if not members:
        raise CommandRefusedError("bad_signature", "unsigned command, and a public key is configured")
    return members


def _skip(text: str, at: int) -> int:
    """Past the JSON whitespace at `at`."""
    space = _SPACE.match(text, at)
    return at if space is None else space.end()


def _string(text: str, at: int) -> tuple[str, int]:
    """The JSON string at `at` and the index after it; only a string is decoded, never another value."""
    if text[at : at + 1] != '"':
        raise CommandRefusedError("bad_request", "payload is not JSON")
    try:
        value, end = _DECODER.raw_decode(text, at)
    except ValueError:  # a control character, a bad escape, no closing quote
        raise CommandRefusedError("bad_request", "payload is not JSON") from None
    return str(value), end


def _json_object(data: bytes | str, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):  # also bad UTF-8, a 5,000-digit number, deep nesting
        raise CommandRefusedError("bad_request", f"{what} is not JSON") from None
    if not isinstance(doc, dict):
        raise CommandRefusedError("bad_request", f"{what} must be a JSON object")
    return doc


def check_body(doc: Mapping[str, Any], *, target: str, command: str) -> tuple[str, float, Mapping[str, Any]]:
    """Schema, target, command and field types: (nonce, issued_at, args)."""
    if doc.get("schema") != COMMAND_SCHEMA:
        raise CommandRefusedError("bad_request", f"'schema' must be {COMMAND_SCHEMA!r}")
    if doc.get("target") != target:
        raise CommandRefusedError("bad_request", "'target' does not name this gateway")
    if doc.get("command") != command:
        raise CommandRefusedError("bad_request", "'command' does not match the topic it was sent on")
    issued_at = _unix_seconds(doc.get("issued_at"))
    nonce = doc.get("nonce")
    if not isinstance(nonce, str) or not 16 <= len(nonce) <= 128 or not set(nonce) <= _NONCE_CHARS:
        raise CommandRefusedError("bad_request", "'nonce' must be 16-128 characters of [A-Za-z0-9_-]")
    args = doc.get("args", {})
    if not isinstance(args, dict):
        raise CommandRefusedError("bad_request", "'args' must be a JSON object")
    return nonce, issued_at, args


def check_reply_to(doc: Mapping[str, Any], response_topic: str | None) -> None:
    """A body that names its `reply_to` came with that ResponseTopic, or is refused (a sign of a command
    read on its way and sent on with the reader's own ResponseTopic: privacy review m4). The signature
    covers the body, not the PUBLISH's properties; a body without `reply_to` is answered on any allowed
    ResponseTopic, as before."""
    if "reply_to" not in doc:
        return
    reply_to = doc["reply_to"]
    if not isinstance(reply_to, str) or not reply_to:
        raise CommandRefusedError("bad_request", "'reply_to' must be a topic")
    if reply_to != response_topic:
        raise CommandRefusedError(
            "bad_request",
            "'reply_to' is not the ResponseTopic the command came with (answered on cmd/response instead)",
            security_event=True,
        )


def _unix_seconds(value: object) -> float:
    """`issued_at` as a float; a JSON integer too large for one (10**400) is refused like any non-number
    (math.isfinite raised OverflowError on it, answered "failed")."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CommandRefusedError("bad_request", "'issued_at' must be Unix seconds")
    try:
        seconds = float(value)
    except OverflowError:
        raise CommandRefusedError("bad_request", "'issued_at' must be Unix seconds") from None
    if not math.isfinite(seconds):
        raise CommandRefusedError("bad_request", "'issued_at' must be Unix seconds")
    return seconds


class ReplayGuard:
    """Accepts each nonce once and only fresh commands; remembers nonces across restarts.

    The file is `{"complete_after": t, "nonces": {nonce: issued_at}, "last_change": c}`: every nonce
    admitted with an `issued_at` after `t` is in it. Nonces are forgotten `2 * max_age_s` after their
    `issued_at`, which moves `t` up; a command issued at or before `t` is refused as stale, whatever
    `max_age_s` is now. Pruning by the current window alone let a reload that widened it accept a
    captured command again (audit audsec, finding 4).

    A nonce is spent as soon as its signed command is fresh, whatever follows (not allowed,
    superseded, refused, failed). `c` is the `issued_at` of the last state-changing command admitted
    (a reload, a model install or activation): one issued before it is refused as `superseded`. A
    signed command dropped on arrival (the command gate during a flood, `busy`) was never verified, so
    its nonce cannot be spent; without this order a captured copy of it could undo a later change
    within `max_age_s` (review remote #2)."""

    def __init__(self, state_dir: Path, max_age_s: float, clock: Any = time.time) -> None:
        self.path = state_dir / NONCE_FILE
        self.max_age_s = max_age_s
        self._clock = clock
        self._complete_after = -math.inf  # commands issued at or before this time are refused
        self._last_change = -math.inf  # state-changing commands issued before this time are refused
        self._seen = self._load()

    def _load(self) -> dict[str, float]:
        try:
            saved = json.loads(self.path.read_bytes())
            if not isinstance(saved, dict):
                raise ValueError("not a JSON object")
            nonces, after = saved.get("nonces"), saved.get("complete_after")
            if isinstance(nonces, dict):
                if after is not None:
                    self._complete_after = _seconds(after)
                if (last_change := saved.get("last_change")) is not None:
                    self._last_change = _seconds(last_change)
            else:
                # The format before complete_after (a bare {nonce: issued_at}): what was pruned, and
                # when, is unknown. Every nonce forgotten was issued before the oldest one kept and
                # before the file's last write, so neither can let a forgotten one in.
                nonces = saved
                kept = [v for v in saved.values() if isinstance(v, int | float)]
                self._complete_after = min([*kept, self.path.stat().st_mtime])
            return {
                k: float(v) for k, v in nonces.items() if isinstance(k, str) and isinstance(v, int | float)
            }
        except FileNotFoundError:
            return {}
        except (ValueError, RecursionError, OverflowError):
            # Which nonces were used is unknown, so any command issued until now may be a replay; refusing
            # those closes the window (an unguarded start raised here, and the agent could not start).
            self._complete_after = self._clock()
            log.error("remote: %s is damaged; commands issued before now are refused", self.path)
            return {}

    def admit(self, nonce: str, issued_at: float, *, changes_state: bool = False) -> None:
        """Raise CommandRefusedError for a stale or replayed command; otherwise spend its nonce, and
        then refuse a `changes_state` one issued before the last change (`superseded`), or make it the
        last change. A stale command's nonce is not spent: it may be fresh once the gateway's clock is
        set (tests/ops/test_clock_jumps_gateway.py)."""
        now = self._clock()
        if abs(now - issued_at) > self.max_age_s:
            raise CommandRefusedError(
                "stale", f"issued_at is more than {self.max_age_s:g} s from the gateway clock"
            )
        if issued_at <= self._complete_after:
            raise CommandRefusedError("stale", "issued before the oldest command the gateway remembers")
        horizon = now - 2 * self.max_age_s
        if horizon > self._complete_after:
            self._seen = {k: t for k, t in self._seen.items() if t > horizon}
            self._complete_after = horizon
        if nonce in self._seen:
            raise CommandRefusedError("replayed", "this nonce was already used")
        if len(self._seen) >= MAX_NONCES:
            raise CommandRefusedError("busy", "too many commands within the freshness window")
        self._seen[nonce] = issued_at  # spent from here on, whatever follows
        superseded = changes_state and issued_at < self._last_change
        if changes_state and not superseded:
            self._last_change = issued_at
        self._save()
        if superseded:
            raise CommandRefusedError(
                "superseded",
                "issued before the last state-changing command this gateway took up (a reload, a model "
                "install or activation): not run; sign it again if it is still wanted",
                detail={"last_change_issued_at": self._last_change},
                security_event=True,
            )

    def _save(self) -> None:
        after = None if math.isinf(self._complete_after) else self._complete_after
        saved: dict[str, Any] = {"complete_after": after, "nonces": dict(self._seen)}
        if not math.isinf(self._last_change):
            saved["last_change"] = self._last_change
        write_json(self.path, saved)


def _seconds(value: object) -> float:
    """A saved time: a finite number (ValueError otherwise: the file is treated as damaged)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError("complete_after is not a time")
    return float(value)


def response(command: str | None, *, result: Any = None, error: CommandRefusedError | None = None) -> bytes:
    """A response document (schema edge-agent/response/1) as bytes."""
    doc: dict[str, Any] = {"schema": RESPONSE_SCHEMA, "command": command, "ok": error is None}
    if error is None:
        doc["result"] = result if result is not None else {}
    else:
        doc["error"] = {"code": error.code, "message": error.message}
        if error.problems:
            doc["error"]["problems"] = error.problems
        doc["error"].update((k, v) for k, v in error.detail.items() if k not in doc["error"])
    doc["time"] = round(time.time(), 3)
    return json.dumps(doc, separators=(",", ":"), default=_jsonable).encode("utf-8")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
