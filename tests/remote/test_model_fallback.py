"""A managed model whose current version stops loading after it was accepted (a damaged artifact on
disk) does not stop the start: check-config passes, the agent runs the previous accepted version and
raises model_fallback; an activation check never accepts a version because its predecessor loads.
The real agent (in-process), a real mosquitto and the shipped ecg-beat model, as in test_remote_broker."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from queue import Empty
from typing import Any

import pytest

from agent.cli import main as cli_main
from agent.errors import ModelError
from agent.inference.managed import load_managed, strict
from agent.remote import ModelStore, pack_bundle

from .conftest import signed_model
from .test_remote_broker import ROOT, Backend, RunningAgent, setup, wait_for_status

__all__ = ["setup"]  # the fixture, used here by name

NEW = "1.1.0"


def alarm_of(backend: Backend, condition: str, timeout: float = 20) -> dict[str, Any]:
    """The first alarm event of `condition` on the gateway's alarm topic."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            topic, _corr, doc = backend.responses.get(timeout=left)
        except Empty:
            break
        if topic == f"{ROOT}/alarm" and doc.get("condition") == condition:
            return doc
    raise AssertionError(f"no {condition} alarm")


def damage(folder: Path) -> None:
    """One flipped byte in the artifact the config runs (onnx int8): bit rot after the activation."""
    card = json.loads((folder / "card.json").read_text())
    path = folder / card["artifacts"]["onnx_int8"]["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_current_version_damaged_after_its_activation_falls_back_to_the_previous_one(
    setup: tuple[Path, Backend], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    config, backend = setup
    models = tmp_path / "models" / "ecg-beat"
    ModelStore(tmp_path / "models", tmp_path / "ops.pub").install(
        pack_bundle(signed_model(tmp_path / "build" / NEW, NEW, backend.key))
    )
    running = RunningAgent(config)
    try:
        wait_for_status(backend, lambda r: r["heartbeat"].get("models", {}) != {})
        answer = backend.call("models/activate", {"name": "ecg-beat", "version": NEW, "reload": False})
        assert answer["ok"], answer
    finally:
        running.stop()
    assert (models / "current").readlink().name == NEW
    assert (models / "previous").readlink().name == "1.0.0"  # what the activation replaced

    damage(models / NEW)
    capfd.readouterr()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # the CLI sets its own up, on this test's stderr
    try:
        assert cli_main(["check-config", str(config)]) == 0  # the unit's ExecStartPre passes
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    err = capfd.readouterr().err
    assert "version 1.1.0 does not load" in err and "running the previous version 1.0.0" in err, err

    backend.client.subscribe(f"{ROOT}/alarm", 1)
    running = RunningAgent(config)
    try:
        status = wait_for_status(backend, lambda r: r["heartbeat"].get("models", {}) != {})
        assert status["result"]["heartbeat"]["models"]["ecg-beat"].startswith("1.0.0")
        alarm = alarm_of(backend, "model_fallback")
        assert alarm["phase"] == "start" and alarm["kind"] == "technical", alarm
        assert alarm["priority"] == "medium"
        # The damaged version cannot be activated again; a good one can, and ends the alarm on reload.
        again = backend.call("models/activate", {"name": "ecg-beat", "version": NEW, "reload": False})
        assert again["error"]["code"] == "refused", again
        back = backend.call("models/activate", {"name": "ecg-beat", "version": "1.0.0"}, timeout=30)
        assert back["ok"], back
        assert alarm_of(backend, "model_fallback", timeout=30)["phase"] == "end"
        assert (models / "previous").readlink().name == "1.0.0"  # not the damaged version it replaced
    finally:
        running.stop()


def test_within_strict_a_damaged_current_is_a_failure_not_a_fallback(
    setup: tuple[Path, Backend], tmp_path: Path
) -> None:
    _config, backend = setup
    store = ModelStore(tmp_path / "models", tmp_path / "ops.pub")
    store.install(pack_bundle(signed_model(tmp_path / "build" / NEW, NEW, backend.key)))
    with store.locked():
        store.keep_previous("ecg-beat", store.activate("ecg-beat", NEW), NEW)
    current = tmp_path / "models" / "ecg-beat" / "current"
    damage(current.resolve())
    assert load_managed(current, backend="onnx", channels=["MLII"]).card.version == "1.0.0"
    with strict(), pytest.raises(ModelError, match="does not match its card"):
        load_managed(current, backend="onnx", channels=["MLII"])
    # A card that does not fit the stream is the config's problem: no fallback either.
    with pytest.raises(ModelError, match="model expects channels"):
        load_managed(current, backend="onnx", channels=["V5"])
