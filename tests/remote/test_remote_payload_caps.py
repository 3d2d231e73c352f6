"""Command payloads are capped by command before anything parses them: MAX_COMMAND_BYTES for every
command but the bundle one, max_bundle_bytes plus its envelope for models/install. Before, every command
took up to max_bundle_bytes (16 MiB) and parsed it before the signature check: 16 MB of `{}` cost about
400 MB and 0.8 s, four at once."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.config.loader import parse_config
from agent.remote import commands as remote_commands
from agent.remote.commands import BUNDLE_ENVELOPE_BYTES, MAX_COMMAND_BYTES, RemoteCommands, payload_limit
from agent.remote.envelope import sign_command
from agent.uplink.mqtt import Command
from agent.uplink.topics import Topics

from .conftest import BASE, ROOT, BundleFactory


def run_signed(
    tmp_path: Path, key_file: Path, commands: list[Command], **remote: Any
) -> list[dict[str, Any]]:
    table = {"enabled": True, "public_key_file": str(key_file)} | remote
    cfg = parse_config({**BASE, "remote": table}, base_dir=tmp_path)
    answers: list[dict[str, Any]] = []
    handler = RemoteCommands(
        cfg,
        Topics("edge", "lab", "gw-1"),
        tmp_path,
        str,
        check_reload=lambda **_: [],
        request_reload=lambda: None,
    )
    handler.bind(lambda _c, payload, **_: answers.append(json.loads(payload)), lambda: {"up": True})

    async def scenario() -> None:
        for command in commands:
            handler.submit(command)
            async with asyncio.timeout(10):
                while handler._tasks:
                    await asyncio.sleep(0.001)
        await handler.close()

    asyncio.run(scenario())
    return answers


def padded(payload: bytes, size: int) -> bytes:
    """The signed envelope grown to `size` bytes with JSON whitespace outside the signed text: the
    signature still verifies, only the length changes."""
    assert payload.endswith(b"}") and len(payload) <= size
    return payload[:-1] + b" " * (size - len(payload)) + b"}"


def test_a_small_command_one_byte_over_its_cap_is_refused_and_at_its_cap_is_run(
    tmp_path: Path, public_key_file: Path, private_key: Ed25519PrivateKey
) -> None:
    def status(nonce: str) -> bytes:
        return sign_command(private_key, ROOT, "status", nonce=nonce)

    at_cap = padded(status("a" * 16), MAX_COMMAND_BYTES)
    over = padded(status("b" * 16), MAX_COMMAND_BYTES + 1)
    topic = f"{ROOT}/cmd/status"
    answers = run_signed(tmp_path, public_key_file, [Command(topic, p, "r", b"1") for p in (at_cap, over)])
    assert answers[0]["ok"] and answers[0]["result"] == {"up": True}
    assert answers[1]["error"] == {"code": "too_large", "message": f"payload over {MAX_COMMAND_BYTES} bytes"}


def test_a_bundle_may_be_max_bundle_bytes_in_its_envelope_and_not_one_byte_more(
    tmp_path: Path, public_key_file: Path, private_key: Ed25519PrivateKey, make_bundle: BundleFactory
) -> None:
    bundle = make_bundle("2.0.0")
    max_bundle = len(json.dumps(bundle))  # the bundle as packed: this gateway's largest
    limit = max_bundle + BUNDLE_ENVELOPE_BYTES
    assert payload_limit("models/install", max_bundle) == limit

    def install(nonce: str) -> bytes:
        return sign_command(private_key, ROOT, "models/install", {"bundle": bundle}, nonce=nonce)

    topic = f"{ROOT}/cmd/models/install"
    over = Command(topic, padded(install("b" * 16), limit + 1), "r", b"1")
    at_cap = Command(topic, padded(install("a" * 16), limit), "r", b"2")
    answers = run_signed(tmp_path, public_key_file, [over, at_cap], max_bundle_bytes=max_bundle)
    assert answers[0]["error"] == {"code": "too_large", "message": f"payload over {limit} bytes"}
    assert answers[1]["ok"] and answers[1]["result"]["installed"] is True


def test_an_oversized_payload_is_refused_before_it_is_parsed(
    tmp_path: Path, public_key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[bytes] = []
    real_open = remote_commands.open_envelope
    monkeypatch.setattr(
        remote_commands,
        "open_envelope",
        lambda payload, key: parsed.append(payload) or real_open(payload, key),
    )
    huge = b'{"a": [' + b"{}," * 400_000 + b"{}]}"  # 1.2 MB of tiny objects: cheap to send, dear to parse
    commands = [Command(f"{ROOT}/cmd/{name}", huge, "r", b"1") for name in ("status", "snippet", "reload")]
    started = time.perf_counter()
    answers = run_signed(tmp_path, public_key_file, commands)
    assert [a["error"]["code"] for a in answers] == ["too_large"] * 3
    assert parsed == []
    assert time.perf_counter() - started < 1.0


def test_bundles_are_checked_one_at_a_time_and_the_rest_are_busy(
    tmp_path: Path, public_key_file: Path, private_key: Ed25519PrivateKey
) -> None:
    """Each 16 MB bundle costs about 8 times its size while it is checked (audit audsec, finding 8: four
    at once took the agent to 245 MB against the unit's MemoryMax=256M): a second payload over
    MAX_COMMAND_BYTES arriving while one is checked is busy; small commands still run beside it."""
    table = {"enabled": True, "public_key_file": str(public_key_file)}
    cfg = parse_config({**BASE, "remote": table}, base_dir=tmp_path)
    answers: list[dict[str, Any]] = []
    handler = RemoteCommands(
        cfg,
        Topics("edge", "lab", "gw-1"),
        tmp_path,
        str,
        check_reload=lambda **_: [],
        request_reload=lambda: None,
    )
    handler.bind(lambda _c, payload, **_: answers.append(json.loads(payload)), lambda: {"up": True})
    big = padded(sign_command(private_key, ROOT, "models/install", {"bundle": {}}), MAX_COMMAND_BYTES + 1)

    async def scenario() -> None:
        # Submitted in one loop turn: the first bundle runs, the next two are busy, the status runs.
        for _ in range(3):
            handler.submit(Command(f"{ROOT}/cmd/models/install", big, "r", b"b"))
        handler.submit(Command(f"{ROOT}/cmd/status", sign_command(private_key, ROOT, "status"), "r", b"s"))
        async with asyncio.timeout(10):
            while handler._tasks:
                await asyncio.sleep(0.001)
        handler.submit(Command(f"{ROOT}/cmd/models/install", big, "r", b"b"))  # the first one ended
        async with asyncio.timeout(10):
            while handler._tasks:
                await asyncio.sleep(0.001)
        await handler.close()

    asyncio.run(scenario())
    codes = [a["error"]["code"] if not a["ok"] else "ok" for a in answers]
    assert sorted(codes) == ["bad_request", "busy", "busy", "ok", "replayed"], codes  # {} is no bundle
    assert codes[-1] == "replayed"  # the same signed payload again, checked this time
    busy = [a for a in answers if not a["ok"] and a["error"]["code"] == "busy"]
    assert all(a["error"]["message"] == "a bundle is being checked" for a in busy)
