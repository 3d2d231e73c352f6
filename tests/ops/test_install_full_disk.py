"""`models/install` on a full disk (ops review F6 of 2026-11-30): answered `{"code": "failed", "message":
"OSError"}` and logged `remote command models/install failed: OSError`, neither saying the disk was full.
Now both give the errno's text, and never the exception's own message, which names the file, under a
models folder whose path may name a patient. A real tmpfs filled by another file."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from remote.conftest import BASE, ROOT, signed_model
from small_disk import fill, mount_small_disk

from agent.config import parse_config
from agent.remote.bundles import pack_bundle
from agent.remote.commands import RemoteCommands
from agent.uplink.mqtt import Command
from agent.uplink.topics import Topics

PATIENT_FOLDER = "MRN-0055555_Doe_Jane"


@pytest.fixture
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    yield from mount_small_disk(request, tmp_path / "disk", "1m")


def test_an_install_on_a_full_disk_says_so_without_the_path(
    disk: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = Ed25519PrivateKey.generate()
    public = tmp_path / "ops.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    bundle = pack_bundle(signed_model(tmp_path / "build", "1.1.0", key))  # about 65 kB of artifacts
    models = disk / PATIENT_FOLDER / "models"
    models.mkdir(parents=True)
    remote = {
        "enabled": True,
        "allow_unsigned": True,
        "models_dir": str(models),
        "model_public_key_file": str(public),
    }
    cfg = parse_config({**BASE, "remote": remote}, base_dir=tmp_path)
    handler = RemoteCommands(
        cfg,
        Topics("edge", "lab", "gw-1"),
        tmp_path,
        str,
        check_reload=lambda **_: [],
        request_reload=lambda: None,
    )
    answers: list[dict[str, Any]] = []
    handler.bind(lambda _c, payload, **_: answers.append(json.loads(payload)), dict)
    body = {
        "schema": "edge-agent/command/1",
        "target": ROOT,
        "command": "models/install",
        "issued_at": time.time(),
        "nonce": "f" * 16,
        "args": {"bundle": bundle},
    }
    fill(disk, leave=20_000)

    async def scenario() -> None:
        handler.submit(Command(f"{ROOT}/cmd/models/install", json.dumps(body).encode(), "r", b"1"))
        async with asyncio.timeout(30):
            while handler._tasks:
                await asyncio.sleep(0.01)
        await handler.close()

    with caplog.at_level(logging.INFO, logger="agent.remote"):
        asyncio.run(scenario())
    (answer,) = answers
    assert answer["error"]["code"] == "failed"
    assert answer["error"]["message"] == "OSError: No space left on device"
    (line,) = [r.getMessage() for r in caplog.records if "models/install failed" in r.getMessage()]
    assert line == "remote command models/install failed: OSError: No space left on device"
    assert PATIENT_FOLDER not in json.dumps(answer) and PATIENT_FOLDER not in caplog.text
    assert not list((models / "ecg-beat").glob(".incoming-*"))  # the temporary folder was removed
