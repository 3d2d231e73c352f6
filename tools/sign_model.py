"""Make an Ed25519 key pair and sign a model directory's artifacts (writes signature.json beside the card).

    python -m tools.sign_model keygen --out keys/models          # keys/models.key (0600) + keys/models.pub
    python -m tools.sign_model sign models/pump --key keys/models.key
    python -m tools.sign_model verify models/pump --pub keys/models.pub

The gateway config then names the .pub file (detector param `public_key`); the .key never leaves the
build machine. Signing re-reads the card, so sign after the card is final: any later edit breaks it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.errors import ModelError
from agent.inference.card import ModelCard, load_card
from agent.inference.signing import sign_artifacts, verify_model


class ToolError(Exception):
    """A file this tool cannot use: one line naming it (`main` prints it, no traceback)."""


@contextmanager
def about(path: Path) -> Iterator[None]:
    """A missing file, an invalid card or key as a `ToolError` naming `path` (or the file the OS named)."""
    try:
        yield
    except OSError as exc:
        raise ToolError(f"{exc.filename or path}: {exc.strerror or exc}") from None
    except (ModelError, ValueError) as exc:
        raise ToolError(f"{path}: {exc}") from None


def read_card(model_dir: Path) -> ModelCard:
    with about(model_dir / "card.json"):
        return load_card(model_dir)


def keygen(out: Path) -> tuple[Path, Path]:
    key = Ed25519PrivateKey.generate()
    priv, pub = out.with_suffix(".key"), out.with_suffix(".pub")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return priv, pub


def sign(model_dir: Path, key_file: Path) -> Path:
    with about(key_file):
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ToolError(f"{key_file}: not an Ed25519 private key")
    card = read_card(model_dir)
    with about(model_dir):
        return sign_artifacts(model_dir, card, key)


def verify(model_dir: Path, pub: Path) -> list[str]:
    card = read_card(model_dir)
    checked = []
    for artifact in card.artifacts.values():
        with about(model_dir / artifact.file):
            verify_model(model_dir, card, artifact.file, (model_dir / artifact.file).read_bytes(), pub)
        checked.append(artifact.file)
    return checked


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.sign_model", description="Ed25519 model signing")
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keygen")
    k.add_argument("--out", type=Path, required=True, help="path stem: writes <stem>.key and <stem>.pub")
    s = sub.add_parser("sign")
    s.add_argument("model_dir", type=Path)
    s.add_argument("--key", type=Path, required=True)
    v = sub.add_parser("verify")
    v.add_argument("model_dir", type=Path)
    v.add_argument("--pub", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        if args.cmd == "keygen":
            with about(args.out):
                priv, pub = keygen(args.out)
            print(f"private key {priv} (keep off the gateway), public key {pub}")
        elif args.cmd == "sign":
            print(f"wrote {sign(args.model_dir, args.key)}")
        else:
            print("verified: " + ", ".join(verify(args.model_dir, args.pub)))
    except ToolError as exc:
        p.exit(1, f"{p.prog} {args.cmd}: {exc}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
