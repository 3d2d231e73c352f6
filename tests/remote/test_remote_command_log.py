"""What the gateway's log says about remote commands (review findings 4 and 5): each command one line,
`accepted` once it ran or `refused` with its code and a reason that quotes no value; a forged or
tampered one as a warning, an ordinary refusal as info; and a refused remote `reload` logs its problems
as a refused SIGHUP reload does (the same lines, with the file's full path). The real agent (in-process)
and a real mosquitto, as in test_remote_broker."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.privacy import Pseudonymizer, load_or_create_key
from agent.remote import pack_bundle

from .conftest import signed_model
from .test_remote_broker import Backend, RunningAgent, setup, wait_for_status

__all__ = ["setup"]  # the fixture, used here by name

TAMPERED = "an artifact does not match its card or signature: the bundle was altered or signed by another key"


@pytest.fixture
def agent(setup: tuple[Path, Backend]) -> Iterator[tuple[Path, Backend, RunningAgent]]:
    config, backend = setup
    running = RunningAgent(config)
    try:
        wait_for_status(backend, lambda r: r["heartbeat"].get("models", {}) != {})
        yield config, backend, running
    finally:
        running.stop()


def bundle(tmp_path: Path, version: str, key: Ed25519PrivateKey) -> dict[str, Any]:
    return pack_bundle(signed_model(tmp_path / "build" / version, version, key))


def command_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    """(level, message) of each command's line, but the `status` polls'."""
    return [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.getMessage().startswith("remote command ")
        and not r.getMessage().startswith("remote command status")
    ]


def test_each_command_is_logged_once_as_accepted_or_refused_with_its_reason(
    agent: tuple[Path, Backend, RunningAgent], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent")
    config, backend, _running = agent
    assert backend.call("models/list")["ok"]
    assert backend.call("models/install", {"bundle": bundle(tmp_path, "1.1.0", backend.key)}, timeout=30)[
        "ok"
    ]
    rollback = backend.call("models/install", {"bundle": bundle(tmp_path, "0.9.0", backend.key)}, timeout=30)
    assert "anti-rollback" in rollback["error"]["message"]
    altered = bundle(tmp_path, "1.2.0", backend.key)
    name = next(iter(altered["files"]))
    data = bytearray(base64.b64decode(altered["files"][name]))
    data[-1] ^= 1
    altered["files"][name] = base64.b64encode(bytes(data)).decode()
    assert (
        "does not match"
        in backend.call("models/install", {"bundle": altered}, timeout=30)["error"]["message"]
    )
    foreign = bundle(tmp_path, "1.3.0", Ed25519PrivateKey.generate())
    assert (
        "does not verify"
        in backend.call("models/install", {"bundle": foreign}, timeout=30)["error"]["message"]
    )
    pseudonym = Pseudonymizer(load_or_create_key(tmp_path / "state" / "pseudonym.key"))
    snippet = {"device": pseudonym("wearable-2"), "stream": "vitals", "seconds": 1}
    assert backend.call("snippet", snippet)["error"]["code"] == "not_allowed"
    config.write_text(config.read_text().replace("[privacy]", "[privacy]\nbogus_key = 1"))
    assert backend.call("reload", timeout=30)["error"]["code"] == "refused"

    assert command_lines(caplog) == [
        ("INFO", "remote command models/list accepted"),
        ("INFO", "remote command models/install accepted"),
        (
            "INFO",
            "remote command models/install refused: refused (version is not newer than the active one "
            "(anti-rollback); activate it instead)",
        ),
        ("WARNING", f"remote command models/install refused: refused ({TAMPERED})"),
        ("WARNING", f"remote command models/install refused: refused ({TAMPERED})"),
        (
            "INFO",
            "remote command snippet refused: not_allowed (raw snippets are not allowed for this device)",
        ),
        (
            "INFO",
            "remote command reload refused: refused (the config file was refused; the running one stays)",
        ),
    ]
    text = caplog.text
    assert [v for v in ("wearable", pseudonym("wearable-2"), name, "gw-r") if v in text] == []


def test_a_refused_remote_reload_logs_its_problems_as_a_sighup_reload_does(
    agent: tuple[Path, Backend, RunningAgent], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent")
    config, backend, running = agent
    good = config.read_text()
    config.write_text(good.replace("[privacy]", "[privacy]\nbogus_key = 1").replace("seed = 1", 'seed = "x"'))
    answer = backend.call("reload", timeout=30)
    assert answer["error"]["code"] == "refused" and len(answer["error"]["problems"]) == 2
    remote = reload_lines(caplog)
    prefix = f"reload refused, keeping the running config: {config}: "  # the full path, as SIGHUP's
    assert len(remote) == 2 and all(line.startswith(prefix) for line in remote), remote
    assert f"{prefix}privacy.bogus_key: unknown key" in remote
    assert all(r.levelname == "ERROR" for r in caplog.records if "reload refused, keeping" in r.getMessage())

    caplog.clear()
    running.loop.call_soon_threadsafe(running.agent.reloading.set)  # SIGHUP
    deadline = time.monotonic() + 20
    while len(reload_lines(caplog)) < len(remote):
        assert time.monotonic() < deadline, "the SIGHUP reload logged no refusal"
        time.sleep(0.1)
    assert reload_lines(caplog) == remote


def reload_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("reload refused")]
