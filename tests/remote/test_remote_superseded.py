"""Security review remote #2: a signed command dropped on arrival (the command gate during a flood, or
answered `busy`) was never verified, so its nonce stayed unspent; an insider who read it on cmd/# could
publish it later, within max_age_s, after newer commands, and it ran (install 1.1.0 and 1.2.0, activate
1.1.0; A "activate 1.2.0" dropped; A' activates 1.2.0; B rolls back to 1.1.0; the captured A made
1.2.0 current again). Now a state-changing command issued before the last one taken up is refused
`superseded`, across restarts too, and a verified command's nonce is spent whatever its outcome.

The handler runs in-process (the behaviour is not the broker's), with the shipped ecg-beat model."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.config.loader import parse_config
from agent.remote import ModelStore, commands, pack_bundle, sign_command
from agent.remote.answer_budget import AnswerBudget
from agent.remote.commands import RemoteCommands
from agent.uplink.mqtt import Command
from agent.uplink.topics import Topics

from .conftest import BASE, ROOT, signed_model

ALL = ["status", "reload", "models/list", "models/activate", "models/install", "snippet"]


class Gateway:
    """One session's command handler on a state dir; `run` submits commands and returns the answers."""

    def __init__(self, tmp_path: Path, public_key_file: Path, allowed: list[str]) -> None:
        remote = {
            "enabled": True,
            "public_key_file": str(public_key_file),
            "models_dir": str(tmp_path / "models"),
            "allowed_commands": allowed,
            "max_age_s": 600,
        }
        cfg = parse_config({**BASE, "remote": remote}, base_dir=tmp_path)
        self.answers: list[tuple[Command, dict[str, Any]]] = []
        self.remote = RemoteCommands(
            cfg,
            Topics("edge", "lab", "gw-1"),
            tmp_path / "state",
            str,
            check_reload=lambda **_: [],
            request_reload=lambda: None,
        )
        self.remote.bind(lambda c, payload, **_: self.answers.append((c, json.loads(payload))), dict)
        self.remote.answers = AnswerBudget(unauthenticated=(1e6, 10**6), authenticated=(1e6, 10**6))

    def run(self, *payloads: tuple[str, bytes]) -> list[dict[str, Any]]:
        """Each (command name, payload) in turn, answered before the next is sent."""
        self.answers.clear()

        async def scenario() -> None:
            for name, payload in payloads:
                self.remote.submit(Command(f"{ROOT}/cmd/{name}", payload, "ops/r", b"c"))
                async with asyncio.timeout(30):
                    while self.remote._tasks:
                        await asyncio.sleep(0.005)

        asyncio.run(scenario())
        return [doc for _command, doc in self.answers]


@pytest.fixture
def two_versions(tmp_path: Path, private_key: Ed25519PrivateKey, public_key_file: Path) -> Path:
    """1.1.0 and 1.2.0 installed, 1.1.0 active."""
    store = ModelStore(tmp_path / "models", public_key_file)
    for version in ("1.1.0", "1.2.0"):
        store.install(pack_bundle(signed_model(tmp_path / "build" / version, version, private_key)))
    store.activate("ecg-beat", "1.1.0")
    (tmp_path / "state").mkdir()
    return tmp_path / "models" / "ecg-beat" / "current"


def activate(key: Ed25519PrivateKey, version: str, issued_at: float) -> tuple[str, bytes]:
    args = {"name": "ecg-beat", "version": version, "reload": False}
    return "models/activate", sign_command(key, ROOT, "models/activate", args, issued_at=issued_at)


def test_a_dropped_activation_replayed_after_newer_changes_is_superseded_also_after_a_restart(
    tmp_path: Path, two_versions: Path, private_key: Ed25519PrivateKey, public_key_file: Path
) -> None:
    now = time.time()
    dropped = activate(private_key, "1.2.0", now - 30)  # A: never reached the handler (the gate dropped it)
    retry = activate(private_key, "1.2.0", now - 20)  # A'
    rollback = activate(private_key, "1.1.0", now - 10)  # B
    gateway = Gateway(tmp_path, public_key_file, ALL)
    assert [a["ok"] for a in gateway.run(retry, rollback)] == [True, True]
    assert two_versions.readlink().name == "1.1.0"

    (replayed,) = gateway.run(dropped)  # failed before: ok, and 1.2.0 current again
    assert replayed["ok"] is False and replayed["error"]["code"] == "superseded", replayed
    assert "issued before the last state-changing command" in replayed["error"]["message"]
    assert replayed["error"]["last_change_issued_at"] == pytest.approx(now - 10)
    assert two_versions.readlink().name == "1.1.0"

    # A restart (a new session's handler on the same state dir) remembers the last change.
    again = activate(private_key, "1.2.0", now - 25)  # another copy of an older activation
    (after_restart,) = Gateway(tmp_path, public_key_file, ALL).run(again)
    assert after_restart["error"]["code"] == "superseded"
    assert two_versions.readlink().name == "1.1.0"

    # Commands that change nothing are not ordered: an older models/list still runs.
    listing = ("models/list", sign_command(private_key, ROOT, "models/list", issued_at=now - 40))
    (listed,) = Gateway(tmp_path, public_key_file, ALL).run(listing)
    assert listed["ok"], listed
    # And a new change goes through.
    (newer,) = Gateway(tmp_path, public_key_file, ALL).run(activate(private_key, "1.2.0", time.time()))
    assert newer["ok"] and two_versions.readlink().name == "1.2.0"


def test_a_verified_commands_nonce_is_spent_whatever_its_outcome(
    tmp_path: Path, two_versions: Path, private_key: Ed25519PrivateKey, public_key_file: Path
) -> None:
    listing = ("models/list", sign_command(private_key, ROOT, "models/list"))
    (refused,) = Gateway(tmp_path, public_key_file, ["status"]).run(listing)
    assert refused["error"]["code"] == "not_allowed"
    # A reload that allows it does not let the captured copy run (failed before: ok).
    (replayed,) = Gateway(tmp_path, public_key_file, ALL).run(listing)
    assert replayed["error"]["code"] == "replayed", replayed


def test_state_changes_sent_together_are_admitted_in_their_arrival_order(
    tmp_path: Path,
    two_versions: Path,
    private_key: Ed25519PrivateKey,
    public_key_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A large bundle's signature check takes longer than an activation's (made slower here): the
    activation signed and sent after it still waits for its admission, so neither is `superseded`."""
    slow_for_bundles = commands.open_envelope

    def open_envelope(payload: bytes, key: Any) -> Any:
        if len(payload) > commands.MAX_COMMAND_BYTES:
            time.sleep(0.5)
        return slow_for_bundles(payload, key)

    monkeypatch.setattr(commands, "open_envelope", open_envelope)
    gateway = Gateway(tmp_path, public_key_file, ALL)
    now = time.time()
    bundle = pack_bundle(signed_model(tmp_path / "build" / "1.3.0", "1.3.0", private_key))
    install = (
        "models/install",
        sign_command(private_key, ROOT, "models/install", {"bundle": bundle}, issued_at=now - 2),
    )
    later = activate(private_key, "1.2.0", now - 1)

    async def scenario() -> None:
        for name, payload in (install, later):  # together: the second arrives while the first is checked
            gateway.remote.submit(Command(f"{ROOT}/cmd/{name}", payload, "ops/r", b"c"))
        async with asyncio.timeout(60):
            while gateway.remote._tasks:
                await asyncio.sleep(0.005)
        await gateway.remote.close()

    asyncio.run(scenario())
    answers = {doc["command"]: doc for _c, doc in gateway.answers}
    assert answers["models/install"]["ok"] and answers["models/activate"]["ok"], answers
    assert two_versions.readlink().name == "1.2.0"
