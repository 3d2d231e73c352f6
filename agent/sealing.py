"""Encryption at rest of outbox payloads: AES-256-GCM under a per-site key kept in a 0600 file.

Strategy:
- One key file, 32 bytes, written either raw (exactly 32 bytes) or as text: 64 hex digits or 44
  base64 characters (a trailing newline is fine). Lengths tell the three forms apart. A new key is
  written as base64 text, so an operator can `cat` it into a password manager or a provisioning tool.
- The file is created (0600, base64) when it does not exist, like the pseudonym key: turning the
  feature on is one config line. A key file readable by group or others is refused, never used. One
  that a full disk refuses is kept in memory, and nothing is sealed with it until it is written.
- Every payload is sealed with a fresh random 96-bit nonce (``nonce || ciphertext || tag``) and the
  row's id and topic as associated data: a sealed payload copied into another row, or a row whose id
  or topic was edited, fails to open instead of being sent under the wrong id.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from pathlib import Path

from agent.errors import ConfigError
from agent.keyfile import create_private, private_file_problem, read_private

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SEAL_OVERHEAD = NONCE_BYTES + TAG_BYTES  # stored bytes added to each payload
KEY_SETTING = "outbox.encryption_key_file"


class SealError(Exception):
    """A sealed payload could not be opened: wrong key, edited bytes, or moved to another row."""


def parse_key(data: bytes) -> bytes | None:
    """The 32-byte key held by a key file's bytes (raw, hex or base64), None when it holds none."""
    if len(data) == KEY_BYTES:
        return data
    text = data.strip()
    if len(text) == 2 * KEY_BYTES:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return None
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) == KEY_BYTES else None


def key_file_problem(path: Path) -> str | None:
    """Why an existing key file cannot be used (loose mode, wrong content), None when it is fine."""
    problem = private_file_problem(path)
    if problem is not None:
        return problem
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    if parse_key(data) is None:
        return (
            f"{path} holds no AES-256 key: expected 32 raw bytes, 64 hex digits or 44 base64 "
            f"characters, found {len(data)} bytes"
        )
    return None


def load_or_create_key(path: Path, key: bytes | None = None) -> bytes:
    """The outbox key at `path`; created (0600, base64 text) when absent, holding `key` (a fresh one by
    default). Problems raise `ConfigError`; a full disk's has the ENOSPC as its cause (the outbox then
    keeps the key in memory and seals nothing until it is saved: `Outbox._save_keys`)."""
    key = secrets.token_bytes(KEY_BYTES) if key is None else key
    if create_private(path, base64.b64encode(key) + b"\n", KEY_SETTING):
        return key
    problem = key_file_problem(path)
    if problem is not None:
        raise ConfigError(KEY_SETTING, problem)
    parsed = parse_key(read_private(path, KEY_SETTING))
    assert parsed is not None  # key_file_problem checked it
    return parsed


class Sealer:
    """Seals and opens outbox payloads under one key, bound to their row's id and topic."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"an AES-256 key has {KEY_BYTES} bytes, got {len(key)}")
        # Imported here, as in agent.inference.signing: ~8 MB of RSS, paid only when encryption is on.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)

    def seal(self, payload: bytes, row_id: str, topic: str) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, payload, _associated(row_id, topic))

    def open(self, sealed: bytes, row_id: str, topic: str) -> bytes:
        if len(sealed) < SEAL_OVERHEAD:
            raise SealError("sealed payload too short")
        from cryptography.exceptions import InvalidTag

        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _associated(row_id, topic))
        except InvalidTag:
            raise SealError("authentication failed") from None


def _associated(row_id: str, topic: str) -> bytes:
    return row_id.encode() + b"\x00" + topic.encode()
