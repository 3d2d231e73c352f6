"""Ed25519 model signatures: the gateway runs only models signed by the configured key.

What is signed, per artifact: a domain tag, the artifact's file name, the sha256 of its bytes and the
sha256 of the canonical card JSON (sorted keys, no whitespace). So changing one weight, one threshold in
the card, or renaming a file breaks the signature. Signatures live in `signature.json` beside the card:
{"algorithm": "ed25519", "public_key_sha256": ..., "signatures": {file name: base64}}. The private key
never reaches the gateway; `tools/sign_model.py` makes keys and signs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import ModelError
from agent.inference.card import ModelCard, canonical_json

# cryptography costs ~8 MB of RSS: it is imported where keys are used, so a gateway without model
# signatures, remote commands or outbox encryption never loads it.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE_FILE = "signature.json"
_DOMAIN = b"edge-agent model signature v1\n"


def signed_message(file_name: str, artifact: bytes, card: ModelCard) -> bytes:
    return b"".join(
        (
            _DOMAIN,
            file_name.encode("utf-8") + b"\n",
            hashlib.sha256(artifact).digest(),
            hashlib.sha256(canonical_json(card.raw)).digest(),
        )
    )


def public_key_fingerprint(key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def load_public_key(path: Path, model: str) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise ModelError(model, f"cannot read public key {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ModelError(model, f"public key {path} is not a PEM key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ModelError(model, f"public key {path} is not an Ed25519 key")
    return key


def sign_artifacts(model_dir: Path, card: ModelCard, private_key: Ed25519PrivateKey) -> Path:
    """Sign every artifact the card lists; (re)writes signature.json. Used by tools, never by the agent."""
    signatures = {}
    for artifact in card.artifacts.values():
        data = (model_dir / artifact.file).read_bytes()
        sig = private_key.sign(signed_message(artifact.file, data, card))
        signatures[artifact.file] = base64.b64encode(sig).decode("ascii")
    doc = {
        "algorithm": "ed25519",
        "public_key_sha256": public_key_fingerprint(private_key.public_key()),
        "signatures": dict(sorted(signatures.items())),
    }
    path = model_dir / SIGNATURE_FILE
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


def verify_model(model_dir: Path, card: ModelCard, file_name: str, artifact: bytes, public_key: Path) -> None:
    """Raise ModelError unless `artifact` (named `file_name`) and the card carry a valid signature."""
    key = load_public_key(public_key, card.name)
    path = model_dir / SIGNATURE_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        encoded = doc["signatures"][file_name]
        signature = base64.b64decode(encoded, validate=True)
    except FileNotFoundError:
        raise ModelError(
            card.name, f"unsigned: no {SIGNATURE_FILE} beside the card, and a public key is configured"
        ) from None
    except KeyError:
        raise ModelError(card.name, f"unsigned: {SIGNATURE_FILE} has no signature for {file_name}") from None
    except (OSError, ValueError, TypeError, binascii.Error) as exc:
        raise ModelError(card.name, f"{path} is unreadable: {exc}") from None
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(signature, signed_message(file_name, artifact, card))
    except InvalidSignature:
        raise ModelError(
            card.name,
            f"signature of {file_name} does not verify with {public_key.name}: the model or its card was"
            " altered, or it was signed by another key",
        ) from None
