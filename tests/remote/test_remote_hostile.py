"""Hostile command payloads and a damaged nonce file: every command is answered exactly once with a refusal
code that names the problem, nothing is logged as a gateway failure, and the agent can always start."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from pathlib import Path
from typing import Any

import pytest

from agent.config.loader import parse_config
from agent.remote.answer_budget import AnswerBudget
from agent.remote.commands import RemoteCommands
from agent.remote.envelope import CommandRefusedError, ReplayGuard
from agent.uplink.mqtt import Command
from agent.uplink.topics import Topics

from .conftest import BASE, ROOT

COMMANDS = ("status", "reload", "models/list", "models/activate", "models/install", "snippet")
ODD: list[Any] = [None, True, 0, -1, 1e308, 10**30, "", "x" * 20, [], [1], {}, {"a": {"b": []}}, "..", 1.5]


def run_commands(tmp_path: Path, commands: list[Command]) -> list[dict[str, Any]]:
    remote_table = {"enabled": True, "allow_unsigned": True, "max_age_s": 3600}
    cfg = parse_config({**BASE, "remote": remote_table}, base_dir=tmp_path)
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
    # Every refusal answered: the answer budget (a flood's bound, test_remote_flood.py) is not tested here.
    remote.answers = AnswerBudget(unauthenticated=(1e6, 10**6), authenticated=(1e6, 10**6))

    async def scenario() -> None:
        for command in commands:
            remote.submit(command)
            async with asyncio.timeout(5):
                while remote._tasks:  # one at a time: none is answered "busy"
                    await asyncio.sleep(0.001)
        await remote.close()

    asyncio.run(scenario())
    return answers


def body(command: str, **fields: Any) -> dict[str, Any]:
    return {
        "schema": "edge-agent/command/1",
        "target": ROOT,
        "command": command,
        "issued_at": time.time(),
        "nonce": "n" * 16,
        "args": {},
    } | fields


def test_payloads_json_cannot_hold_are_bad_requests_not_failures(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lone_surrogate = json.dumps({"signed": '{"nonce": "\ud800"}', "signature": "AAAA"}).encode()
    payloads = [
        b'{"issued_at": ' + b"9" * 5000 + b"}",  # over Python's int-from-text limit: ValueError
        b"[" * 100_000 + b"]" * 100_000,  # RecursionError
        lone_surrogate,  # the signed text cannot be UTF-8 encoded: UnicodeEncodeError
        json.dumps(body("models/install", issued_at=10**400)).encode(),  # over a float: OverflowError
    ]
    # On the bundle command: the only one whose size cap (a bundle's) lets 200 kB reach the parser.
    with caplog.at_level(logging.INFO, logger="agent.remote"):
        answers = run_commands(
            tmp_path, [Command(f"{ROOT}/cmd/models/install", p, "r", b"1") for p in payloads]
        )
    assert [a["error"]["code"] for a in answers] == ["bad_request"] * 4  # all four were "failed" before
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_seeded_hostile_commands_are_all_answered_and_refused_by_name(tmp_path: Path) -> None:
    rng = random.Random(7)
    commands = []
    for i in range(300):
        name = rng.choice(COMMANDS)
        doc = body(name, nonce=f"{i:016d}")
        kind = rng.random()
        if kind < 0.15:
            payload = rng.randbytes(rng.randint(0, 60))
        elif kind < 0.5:
            doc[rng.choice(list(doc))] = rng.choice(ODD)
            payload = json.dumps(doc).encode()
        else:
            keys = ["name", "version", "reload", "bundle", "activate", "device", "stream", "seconds"]
            doc["args"] = {k: rng.choice(ODD) for k in rng.sample(keys, rng.randint(1, 4))}
            payload = json.dumps(doc).encode()
        correlation = rng.choice([None, b"", b"c" * 500])
        commands.append(Command(f"{ROOT}/cmd/{name}", payload, rng.choice([None, "r"]), correlation))
    answers = run_commands(tmp_path, commands)
    assert len(answers) == len(commands)
    codes = {a["error"]["code"] for a in answers if not a["ok"]}
    assert "failed" not in codes and "bad_request" in codes


DAMAGED = {
    "not_utf8": b"\xff\xfe",
    "truncated": b'{"aaaaaaaaaaaaaaaa": 17',
    "nested": b"[" * 100_000,
    "huge_int": b'{"aaaaaaaaaaaaaaaa": 1' + b"0" * 400 + b"}",
    "not_an_object": b"[]",
}


@pytest.mark.parametrize("name", list(DAMAGED))
def test_a_damaged_nonce_file_refuses_only_commands_issued_before_the_start(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "remote-nonces.json").write_bytes(DAMAGED[name])
    now = [1_000_000.0]
    with caplog.at_level(logging.ERROR, logger="agent.remote"):
        guard = ReplayGuard(tmp_path, 60.0, clock=lambda: now[0])  # raised for three of the five before
    assert "remote-nonces.json" in caplog.text
    with pytest.raises(CommandRefusedError) as refused:  # might be a replay of a used command
        guard.admit("b" * 16, now[0] - 5)
    assert refused.value.code == "stale"
    now[0] += 1
    guard.admit("c" * 16, now[0])  # issued after the start: accepted, and remembered
    saved = json.loads((tmp_path / "remote-nonces.json").read_text())
    assert saved == {"complete_after": now[0] - 1, "nonces": {"c" * 16: now[0]}}
