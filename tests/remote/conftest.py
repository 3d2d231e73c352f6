"""Fixtures for remote management: a test signing key (commands and models) and signed model bundles.

Bundles are built from the shipped ecg-beat model (real artifacts) with the card's version changed and
everything re-signed by the test key, exactly as `tools/sign_model.py` would on a build machine.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.inference.card import load_card
from agent.inference.signing import sign_artifacts
from agent.remote.bundles import pack_bundle

ROOT = "edge/lab/gw-1"  # the command topics' root of the gateway below
# A minimal gateway config for command tests; each test adds its [remote] table.
BASE: dict[str, Any] = {
    "gateway": {"id": "gw-1", "site": "lab"},
    "mqtt": {"url": "mqtt://127.0.0.1:1883"},
    "outbox": {"path": "outbox.sqlite"},
    "devices": [{"id": "w1", "kind": "wearable", "transport": "simulator"}],
}

ECG_BEAT = Path(__file__).resolve().parents[2] / "models" / "ecg-beat"
BundleFactory = Callable[..., dict[str, Any]]


@pytest.fixture(scope="session")
def private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def public_key_file(tmp_path: Path, private_key: Ed25519PrivateKey) -> Path:
    path = tmp_path / "ops.pub"
    path.write_bytes(
        private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def signed_model(dest: Path, version: str, key: Ed25519PrivateKey) -> Path:
    """A copy of ecg-beat with `version` in its card, signed by `key`."""
    folder = Path(shutil.copytree(ECG_BEAT, dest))
    card_path = folder / "card.json"
    raw = json.loads(card_path.read_text())
    raw["version"] = version
    card_path.write_text(json.dumps(raw, indent=2))
    sign_artifacts(folder, load_card(folder), key)
    return folder


@pytest.fixture
def make_bundle(tmp_path: Path, private_key: Ed25519PrivateKey) -> BundleFactory:
    def make(version: str, key: Ed25519PrivateKey | None = None) -> dict[str, Any]:
        folder = signed_model(tmp_path / "build" / version, version, key or private_key)
        return pack_bundle(folder)

    return make
