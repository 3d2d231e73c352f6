"""Pseudonyms: device and patient identifiers never leave the gateway.

Each identifier is replaced by a keyed HMAC-SHA256 of it under a per-site secret key, kept in a
0600 file. The same id maps to the same pseudonym across restarts (so the central side can follow a
device over time), but nobody without the key can map a pseudonym back or test a guessed id.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from agent.config.schema import DeviceConfig
from agent.errors import ConfigError
from agent.keyfile import create_private, read_private

KEY_BYTES = 32
KEY_SETTING = "privacy.key_file"
log = logging.getLogger("agent.privacy")


def load_or_create_key(path: Path) -> bytes:
    """The site key at `path`; created (0600) on first use. A key readable by others is refused.

    An empty file is replaced, with a log line: a power cut between its creation and its write leaves
    one, and it never pseudonymised anything. A key that cannot be written for want of space (a full
    disk at the first start) is used for this run only, with a log line: the gateway monitors anyway,
    and its pseudonyms change once a key is saved."""
    key = secrets.token_bytes(KEY_BYTES)
    for _ in range(2):
        try:
            if create_private(path, key, KEY_SETTING):
                return key
        except ConfigError as exc:
            if not (isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.ENOSPC):
                raise
            log.error(
                "%s: %s; pseudonyms of this run come from a key kept in memory and change once a key "
                "is saved: free space on the disk of %s",
                KEY_SETTING,
                exc.problem,
                path.parent,
            )
            return key
        existing = read_key(path)
        if existing:
            return existing
        log.warning(
            "%s: %s is empty (cut off while it was made): it never pseudonymised anything; a new key "
            "replaces it",
            KEY_SETTING,
            path,
        )
        path.unlink()
    return read_key(path)  # emptied again meanwhile: refused below as too short


def read_key(path: Path) -> bytes:
    """The existing site key at `path`, refused (naming `privacy.key_file`) when readable by others or
    too short; an empty file reads as b"", which `load_or_create_key` replaces. Changes nothing:
    `preflight` checks an existing key with it, as the start-up does."""
    key = read_private(path, KEY_SETTING)
    if 0 < len(key) < 16 or (not key and not _replaceable(path)):
        raise ConfigError(
            KEY_SETTING,
            f"{path} holds {len(key)} bytes; a key needs at least 16 (delete it for a new one to be made: "
            "pseudonyms then change)",
        )
    return key


def _replaceable(path: Path) -> bool:
    """Whether an empty key file can be removed and made again (its folder is writable)."""
    return os.access(path.parent, os.W_OK | os.X_OK)


class Pseudonymizer:
    """Maps local identifiers to stable, unlinkable pseudonyms like ``"d-5k2x7q9m4r1t"``."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._cache: dict[str, str] = {}

    def __call__(self, identifier: str, prefix: str = "d") -> str:
        cache_key = f"{prefix}:{identifier}"
        pseudonym = self._cache.get(cache_key)
        if pseudonym is None:
            digest = hmac.new(self._key, cache_key.encode(), hashlib.sha256).digest()
            pseudonym = f"{prefix}-{base64.b32encode(digest[:10]).decode().lower()}"
            self._cache[cache_key] = pseudonym
        return pseudonym


def stand_ins(devices: Iterable[DeviceConfig], pseudonym: Pseudonymizer) -> dict[str, str]:
    """Each identifier a device's config holds (id, patient, serial port, BLE address and name),
    mapped to what a log line may show instead: the device's pseudonym (`agent.logs` redaction)."""
    names: dict[str, str] = {}
    for device in devices:
        ref = pseudonym(device.id)
        names[device.id] = ref
        if device.patient:
            names[device.patient] = pseudonym(device.patient, "p")
        if device.serial is not None:
            names[device.serial.port] = f"{ref}:port"
        if device.modbus is not None and device.modbus.serial_port:  # an RTU adapter's by-id path
            names[device.modbus.serial_port] = f"{ref}:port"
        if device.ble is not None:
            for value in (device.ble.address, device.ble.name):
                if value:
                    names[value] = f"{ref}:ble"
    return names
