"""Model activation is checked whatever `reload` says, one change at a time, and answered as the disk
ends up: the real agent (in-process) and a real mosquitto, as in test_remote_broker, with the shipped
ecg-beat model and two validly signed versions that must not become current: one for another ECG lead
than the configured stream's (it loads; only the config check refuses it), and one whose artifacts are
garbage with matching sha256 (an agent before the install-time load check installed such a version;
a broken build ships one)."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.inference.card import load_card
from agent.inference.signing import sign_artifacts
from agent.remote import ModelStore, pack_bundle, sign_command

from .conftest import ECG_BEAT, signed_model
from .test_remote_broker import ROOT, Backend, RunningAgent, setup, wait_for_status

__all__ = ["setup"]  # the fixture, used here by name

GOOD, OTHER_LEAD, CORRUPT = "1.1.0", "2.0.0", "3.0.0"


def corrupt_model(dest: Path, version: str, key: Ed25519PrivateKey) -> Path:
    """ecg-beat with every artifact replaced by bytes no runtime loads, card and signature matching."""
    folder = Path(shutil.copytree(ECG_BEAT, dest))
    card_path = folder / "card.json"
    raw = json.loads(card_path.read_text())
    raw["version"] = version
    for artifact in raw["artifacts"].values():
        data = b"this is not a model" * 50
        (folder / artifact["file"]).write_bytes(data)
        artifact["sha256"] = hashlib.sha256(data).hexdigest()
        if "bytes" in artifact:
            artifact["bytes"] = len(data)
    card_path.write_text(json.dumps(raw, indent=2))
    sign_artifacts(folder, load_card(folder), key)
    return folder


def other_lead_model(dest: Path, version: str, key: Ed25519PrivateKey) -> Path:
    """ecg-beat as if trained on lead V5: loads and runs, but not on the configured MLII stream."""
    folder = Path(shutil.copytree(ECG_BEAT, dest))
    card_path = folder / "card.json"
    raw = json.loads(card_path.read_text())
    raw["version"], raw["channels"] = version, ["V5"]
    card_path.write_text(json.dumps(raw, indent=2))
    sign_artifacts(folder, load_card(folder), key)
    return folder


def current(tmp_path: Path) -> str:
    return (tmp_path / "models" / "ecg-beat" / "current").readlink().name


@contextmanager
def started(config: Path, backend: Backend) -> Iterator[dict[str, Any]]:
    """The agent running on `config` until the block ends; its first status with a model loaded."""
    running = RunningAgent(config)
    try:
        yield wait_for_status(backend, lambda r: r["heartbeat"].get("models", {}) != {})
    finally:
        running.stop()


@pytest.fixture
def versions(setup: tuple[Path, Backend], tmp_path: Path) -> tuple[Path, Backend]:
    """ecg-beat 1.0.0 active, with 1.1.0 (good), 2.0.0 (another lead) and 3.0.0 (garbage) on disk."""
    config, backend = setup
    store = ModelStore(tmp_path / "models", tmp_path / "ops.pub")
    store.install(pack_bundle(signed_model(tmp_path / "build" / GOOD, GOOD, backend.key)))
    store.install(pack_bundle(other_lead_model(tmp_path / "build" / OTHER_LEAD, OTHER_LEAD, backend.key)))
    # No install takes it now: put on disk as an install before the load check left it.
    corrupt_model(tmp_path / "models" / "ecg-beat" / CORRUPT, CORRUPT, backend.key)
    return config, backend


def collect(backend: Backend, sent: dict[str, bytes], timeout: float = 30) -> dict[str, dict[str, Any]]:
    """The answers to commands sent together, by key, whatever order they come in."""
    keys = {correlation: key for key, correlation in sent.items()}
    found: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(found) < len(keys) and time.monotonic() < deadline:
        try:
            _topic, correlation, doc = backend.responses.get(timeout=max(0.0, deadline - time.monotonic()))
        except Empty:
            break
        if correlation in keys:
            found[keys[correlation]] = doc
    assert len(found) == len(keys), f"answers missing: {found}"
    return found


def session(backend: Backend) -> int:
    return int(backend.call("status")["result"]["heartbeat"]["session"])


def session_after(backend: Backend, previous: int) -> int:
    status = wait_for_status(backend, lambda r: r["heartbeat"]["session"] > previous)
    return int(status["result"]["heartbeat"]["session"])


def test_an_activation_without_reload_is_checked_and_a_version_that_does_not_load_stays_out(
    versions: tuple[Path, Backend], tmp_path: Path
) -> None:
    config, backend = versions
    with started(config, backend) as first:
        before = first["result"]["heartbeat"]["session"]
        # Loads, but the config's check (the start's own) refuses it: previous link kept.
        refused = backend.call(
            "models/activate", {"name": "ecg-beat", "version": OTHER_LEAD, "reload": False}
        )
        assert refused["ok"] is False and refused["error"]["code"] == "refused", refused
        assert any("model expects channels ['V5']" in p for p in refused["error"]["problems"]), refused
        assert current(tmp_path) == "1.0.0"
        # Does not load at all: refused before the link moves.
        garbage = backend.call("models/activate", {"name": "ecg-beat", "version": CORRUPT, "reload": False})
        assert garbage["error"]["code"] == "refused" and "not an ONNX model" in garbage["error"]["message"]
        assert current(tmp_path) == "1.0.0"

        # A good version with reload false: checked, current moves, no reload now.
        accepted = backend.call("models/activate", {"name": "ecg-beat", "version": GOOD, "reload": False})
        assert accepted["ok"] and accepted["result"] == {
            "name": "ecg-beat",
            "version": GOOD,
            "previous": "1.0.0",
            "reloading": False,
        }
        assert current(tmp_path) == GOOD
        assert session(backend) == before

    # The next start comes up, on the version answered.
    with started(config, backend) as status:
        assert status["result"]["heartbeat"]["models"]["ecg-beat"].startswith(GOOD)


def test_concurrent_activations_are_answered_as_the_disk_ends_up(
    versions: tuple[Path, Backend], tmp_path: Path
) -> None:
    config, backend = versions
    with started(config, backend):
        concurrent_trials(backend, tmp_path)


def concurrent_trials(backend: Backend, tmp_path: Path) -> None:
    last = session(backend)
    for trial in range(6):
        reload = trial < 3  # the first three with the reload that ends the session
        order = (GOOD, OTHER_LEAD) if trial % 2 == 0 else (OTHER_LEAD, GOOD)
        sent = [
            (
                version,
                backend.publish(
                    "models/activate",
                    sign_command(
                        backend.key,
                        ROOT,
                        "models/activate",
                        {"name": "ecg-beat", "version": version, "reload": reload},
                    ),
                ),
            )
            for version in order
        ]
        answers = collect(backend, dict(sent))
        bad, good = answers[OTHER_LEAD], answers[GOOD]
        assert bad["ok"] is False and bad["error"]["code"] in ("refused", "busy"), (trial, bad)
        link = current(tmp_path)
        if good["ok"]:
            assert link == GOOD, (trial, answers)
            # Each accepted change names the link it replaced: 1.0.0, never the refused version.
            assert good["result"]["previous"] == "1.0.0", (trial, good)
        else:  # only a reload or stop under way may hold it off, and then nothing was changed
            assert good["error"]["code"] == "busy" and link == "1.0.0", (trial, answers)
        if reload and good["ok"]:  # the next session answers from here on
            last = session_after(backend, last)
        back = backend.call("models/activate", {"name": "ecg-beat", "version": "1.0.0", "reload": False})
        assert back["ok"], back
        assert current(tmp_path) == "1.0.0"


def test_an_install_whose_activation_is_refused_says_it_is_installed(
    setup: tuple[Path, Backend], tmp_path: Path
) -> None:
    config, backend = setup
    with started(config, backend):
        bundle = pack_bundle(other_lead_model(tmp_path / "build" / OTHER_LEAD, OTHER_LEAD, backend.key))
        answer = backend.call("models/install", {"bundle": bundle, "activate": True}, timeout=30)
        assert answer["ok"] is False, answer
        error = answer["error"]
        assert error["code"] == "refused" and error["message"].startswith("installed, but not activated")
        assert error["installed"] is True and (error["name"], error["version"]) == ("ecg-beat", OTHER_LEAD)
        assert any("model expects channels ['V5']" in p for p in error["problems"]), error
        assert current(tmp_path) == "1.0.0"
        listed = backend.call("models/list")["result"]["models"]
        assert {"name": "ecg-beat", "version": OTHER_LEAD, "active": False, "managed": True} in listed
