"""The command envelope: signatures over exact bytes, body checks, freshness and the persistent nonce store;
and the `[remote]` config table."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.config.loader import parse_config
from agent.errors import InvalidConfigError
from agent.remote.commands import RemoteCommands, check_remote
from agent.remote.envelope import (
    CommandRefusedError,
    ReplayGuard,
    check_body,
    open_envelope,
    response,
    sign_command,
)
from agent.uplink.mqtt import Command
from agent.uplink.topics import Topics

from .conftest import BASE, ROOT


def code_of(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(CommandRefusedError) as info:
        call(*args, **kwargs)
    return info.value.code


def test_a_signed_body_opens_only_with_the_matching_key_and_unaltered() -> None:
    key = Ed25519PrivateKey.generate()
    payload = sign_command(key, ROOT, "status", {"x": 1}, issued_at=100.0, nonce="n" * 16)
    body, signed = open_envelope(payload, key.public_key())
    assert signed and body["command"] == "status" and body["args"] == {"x": 1}
    assert code_of(open_envelope, payload, Ed25519PrivateKey.generate().public_key()) == "bad_signature"
    doc = json.loads(payload)
    doc["signed"] = doc["signed"].replace('"x":1', '"x":2')
    assert code_of(open_envelope, json.dumps(doc).encode(), key.public_key()) == "bad_signature"
    assert code_of(open_envelope, doc["signed"].encode(), key.public_key()) == "bad_signature"  # bare body
    assert code_of(open_envelope, b"\xff not json", key.public_key()) == "bad_request"
    # Without a key a signature proves nothing: the body is returned as unsigned.
    assert open_envelope(payload, None)[1] is False


def test_the_body_must_name_this_gateway_and_this_command() -> None:
    body = json.loads(json.loads(sign_command(Ed25519PrivateKey.generate(), ROOT, "reload"))["signed"])
    nonce, _issued, args = check_body(body, target=ROOT, command="reload")
    assert len(nonce) >= 16 and args == {}
    assert code_of(check_body, body, target="edge/lab/gw-2", command="reload") == "bad_request"
    assert code_of(check_body, body, target=ROOT, command="status") == "bad_request"
    assert code_of(check_body, {**body, "nonce": "short"}, target=ROOT, command="reload") == "bad_request"
    assert code_of(check_body, {**body, "issued_at": "now"}, target=ROOT, command="reload") == "bad_request"
    assert code_of(check_body, {**body, "schema": "v0"}, target=ROOT, command="reload") == "bad_request"


@pytest.mark.parametrize(
    "issued_at",
    [10**400, -(10**400), float("inf"), float("nan"), True, None],
    ids=["10**400", "-10**400", "inf", "nan", "true", "null"],
)
def test_issued_at_must_be_a_number_a_float_can_hold(issued_at: Any) -> None:
    """Review finding 7: a JSON integer too large for a float (10**400) raised OverflowError from
    math.isfinite, and the command was answered "failed" with an ERROR line, not "bad_request"."""
    body = json.loads(json.loads(sign_command(Ed25519PrivateKey.generate(), ROOT, "status"))["signed"])
    odd = {**body, "issued_at": issued_at}
    assert code_of(check_body, odd, target=ROOT, command="status") == "bad_request"
    assert check_body({**body, "issued_at": 10**9}, target=ROOT, command="status")[1] == 1e9  # an int is fine


def test_nonces_are_accepted_once_even_across_restarts(tmp_path: Path) -> None:
    now = [1_000_000.0]
    guard = ReplayGuard(tmp_path, 60.0, clock=lambda: now[0])
    guard.admit("a" * 16, now[0] - 5)
    assert code_of(guard.admit, "a" * 16, now[0] - 5) == "replayed"
    restarted = ReplayGuard(tmp_path, 60.0, clock=lambda: now[0])
    assert code_of(restarted.admit, "a" * 16, now[0] - 5) == "replayed"
    assert code_of(restarted.admit, "b" * 16, now[0] - 61) == "stale"
    assert code_of(restarted.admit, "c" * 16, now[0] + 61) == "stale"  # from the future: clock games
    now[0] += 500  # long after the window the nonce is forgotten, and the old command is stale anyway
    restarted.admit("d" * 16, now[0])
    saved = json.loads((tmp_path / "remote-nonces.json").read_text())
    assert saved == {"complete_after": now[0] - 120, "nonces": {"d" * 16: now[0]}}


def test_a_reload_that_widens_max_age_does_not_accept_a_forgotten_nonce_again(tmp_path: Path) -> None:
    """Audit audsec, finding 4: nonces were pruned by the current max_age_s, so after a reload that
    widened it, a captured command whose nonce had been forgotten was fresh again."""
    now = [1_000_000.0]
    guard = ReplayGuard(tmp_path, 5.0, clock=lambda: now[0])
    captured = ("a" * 16, now[0])
    guard.admit(*captured)
    now[0] += 12  # past 2 x 5 s: the next accepted command forgets the captured nonce
    guard.admit("b" * 16, now[0])
    assert "a" * 16 not in json.loads((tmp_path / "remote-nonces.json").read_text())["nonces"]
    reloaded = ReplayGuard(tmp_path, 600.0, clock=lambda: now[0])  # a reload (or restart) with 600 s
    now[0] += 2
    assert code_of(reloaded.admit, *captured) == "stale"  # it was "accepted" before
    assert code_of(reloaded.admit, "b" * 16, now[0] - 2) == "replayed"
    reloaded.admit("c" * 16, now[0] - 10)  # issued after the forgotten ones: fresh in the wider window


def test_a_nonce_file_of_the_old_format_lets_no_forgotten_nonce_in(tmp_path: Path) -> None:
    """The bare {nonce: issued_at} file of earlier versions says nothing of what it forgot: commands
    issued before its oldest nonce (or its last write) are refused, later ones are taken."""
    now = [1_000_000.0]
    (tmp_path / "remote-nonces.json").write_text(json.dumps({"k" * 16: now[0] - 20}))
    guard = ReplayGuard(tmp_path, 600.0, clock=lambda: now[0])
    assert code_of(guard.admit, "f" * 16, now[0] - 30) == "stale"  # may have been forgotten
    assert code_of(guard.admit, "k" * 16, now[0] - 20) == "stale"  # at the oldest kept: refused too
    guard.admit("g" * 16, now[0] - 10)  # after it: taken, and the file moves to the new format
    saved = json.loads((tmp_path / "remote-nonces.json").read_text())
    assert saved == {"complete_after": now[0] - 20, "nonces": {"k" * 16: now[0] - 20, "g" * 16: now[0] - 10}}


def test_responses_follow_the_versioned_schema() -> None:
    ok = json.loads(response("status", result={"a": 1}))
    assert ok["schema"] == "edge-agent/response/1" and ok["ok"] is True and ok["result"] == {"a": 1}
    err = json.loads(response(None, error=CommandRefusedError("refused", "no", ["p1"])))
    assert err["ok"] is False and err["error"] == {"code": "refused", "message": "no", "problems": ["p1"]}
    assert "result" not in err


def test_remote_table_is_checked(tmp_path: Path) -> None:
    key = tmp_path / "ops.pub"
    key.write_text("-")
    cfg = parse_config({**BASE, "remote": {"enabled": True, "public_key_file": "ops.pub"}}, base_dir=tmp_path)
    assert cfg.remote.enabled and cfg.remote.public_key_file == key.resolve()
    assert [e.path for e in check_remote(cfg)] == ["remote.public_key_file"]  # "-" is not a PEM key
    assert parse_config(BASE, base_dir=tmp_path).remote.enabled is False
    bad = {"enabled": True, "allowed_commands": ["status", "shell"], "snippet_devices": ["nope"]}
    with pytest.raises(InvalidConfigError) as info:
        parse_config({**BASE, "remote": bad}, base_dir=tmp_path)
    paths = sorted(e.path for e in info.value.errors)
    assert paths == ["remote.allowed_commands", "remote.public_key_file", "remote.snippet_devices[0]"]


def test_foreign_topics_and_overload_are_answered_with_errors(tmp_path: Path) -> None:
    cfg = parse_config({**BASE, "remote": {"enabled": True, "allow_unsigned": True}}, base_dir=tmp_path)
    answers: list[dict[str, Any]] = []
    remote = RemoteCommands(
        cfg,
        Topics("edge", "lab", "gw-1"),
        tmp_path,
        str,
        check_reload=lambda **_: [],
        request_reload=lambda: None,
    )
    remote.bind(lambda _c, payload, **_: answers.append(json.loads(payload)), dict)

    async def scenario() -> None:
        remote.submit(Command("edge/lab/gw-2/cmd/status", b"{}", "r", b"1"))
        unsigned = {"schema": "edge-agent/command/1", "target": ROOT, "command": "snippet"}
        body = json.dumps({**unsigned, "issued_at": 0, "nonce": "x" * 16}).encode()
        # Submitted in one loop turn: the foreign one and three more take the 4 slots, the rest are busy.
        for _ in range(5):
            remote.submit(Command(f"{ROOT}/cmd/snippet", body, "r", b"2"))
        await asyncio.sleep(0.5)
        await remote.close()

    asyncio.run(scenario())
    codes = sorted(a["error"]["code"] for a in answers)
    assert codes == ["bad_topic", "busy", "busy", "stale", "stale", "stale"]
