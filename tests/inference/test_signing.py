"""Ed25519 signatures: with a public key configured, only a model signed by its private key loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.errors import ModelError
from agent.inference import load_model
from agent.inference.card import ModelCard, load_card
from agent.inference.signing import SIGNATURE_FILE, sign_artifacts
from tools.sign_model import keygen, verify


def _public_pem(key: Ed25519PrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_signed_model_loads_with_every_backend(
    pump_copy: Path, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    sign_artifacts(pump_copy, load_card(pump_copy), key)
    pub = _public_pem(key, tmp_path / "k.pub")
    for backend in ("onnx", "tflite"):
        for precision in ("fp32", "int8"):
            model = load_model(pump_copy, backend=backend, precision=precision, public_key=pub)  # type: ignore[arg-type]
            assert model.artifact_key == f"{backend}_{precision}"


def test_unsigned_model_is_refused_only_when_a_key_is_configured(
    pump_copy: Path, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    (pump_copy / SIGNATURE_FILE).unlink(missing_ok=True)
    load_model(pump_copy)  # no key configured: loads
    with pytest.raises(ModelError, match="model pump: unsigned"):
        load_model(pump_copy, public_key=_public_pem(key, tmp_path / "k.pub"))


def test_altered_card_is_refused(pump_copy: Path, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    sign_artifacts(pump_copy, load_card(pump_copy), key)
    raw = json.loads((pump_copy / "card.json").read_text(encoding="utf-8"))
    raw["threshold"] *= 10  # an attacker silencing alarms
    (pump_copy / "card.json").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(ModelError, match=r"does not verify .* altered"):
        load_model(pump_copy, public_key=_public_pem(key, tmp_path / "k.pub"))


def test_altered_artifact_with_updated_sha_is_refused(
    pump_copy: Path, pump_card: ModelCard, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    import hashlib

    sign_artifacts(pump_copy, load_card(pump_copy), key)
    path = pump_copy / pump_card.artifacts["onnx_int8"].file
    data = bytearray(path.read_bytes())
    data[-40] ^= 0x01  # one bit of one weight
    path.write_bytes(bytes(data))
    raw = json.loads((pump_copy / "card.json").read_text(encoding="utf-8"))
    raw["artifacts"]["onnx_int8"]["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    (pump_copy / "card.json").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(ModelError, match="does not verify"):
        load_model(
            pump_copy, backend="onnx", precision="int8", public_key=_public_pem(key, tmp_path / "k.pub")
        )


def test_other_key_and_bad_key_files_are_refused(
    pump_copy: Path, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    sign_artifacts(pump_copy, load_card(pump_copy), key)
    other = _public_pem(Ed25519PrivateKey.generate(), tmp_path / "other.pub")
    with pytest.raises(ModelError, match="signed by another key"):
        load_model(pump_copy, public_key=other)
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("not a key", encoding="utf-8")
    with pytest.raises(ModelError, match="not a PEM key"):
        load_model(pump_copy, public_key=garbage)
    with pytest.raises(ModelError, match="cannot read public key"):
        load_model(pump_copy, public_key=tmp_path / "absent.pub")


def test_sign_model_tool_round_trip(pump_copy: Path, tmp_path: Path) -> None:
    priv, pub = keygen(tmp_path / "keys" / "models")
    assert priv.stat().st_mode & 0o777 == 0o600
    from tools.sign_model import sign

    sign(pump_copy, priv)
    assert len(verify(pump_copy, pub)) == 4
    load_model(pump_copy, backend="tflite", public_key=pub)


@pytest.mark.parametrize("model", ["pump", "ecg-beat", "pump-residual", "ecg-window"])
def test_shipped_models_verify_with_the_shipped_public_key(pump_dir: Path, model: str) -> None:
    models = pump_dir.parent
    for backend in ("onnx", "tflite"):
        load_model(
            models / model, backend=backend, precision="int8", public_key=models / "edge-agent-models.pub"
        )  # type: ignore[arg-type]
