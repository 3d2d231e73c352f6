"""Pseudonyms: device and patient identifiers never leave the gateway.

Each identifier is replaced by a keyed HMAC-SHA256 of it under a per-site secret key, kept in a
0600 file. The same id maps to the same pseudonym across restarts (so the central side can follow a
device over time), but nobody without the key can map a pseudonym back or test a guessed id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import threading
from collections.abc import Iterable
from pathlib import Path

from agent.config.schema import DeviceConfig
from agent.errors import ConfigError
from agent.keyfile import cannot_write_now, create_private, read_private
from agent.read_only import disk_remedy

KEY_BYTES = 32
KEY_SETTING = "privacy.key_file"
log = logging.getLogger("agent.privacy")


def load_or_create_key(path: Path, key: bytes | None = None) -> bytes:
    """The site key at `path`; created (0600) on first use, holding `key` (a fresh one by default). A
    key readable by others is refused; a full disk raises `ConfigError` with the ENOSPC as its cause
    (`SiteKey` then serves from memory).

    An empty file is replaced, with a log line: a power cut between its creation and its write leaves
    one, and it never pseudonymised anything."""
    key = secrets.token_bytes(KEY_BYTES) if key is None else key
    for _ in range(2):
        if create_private(path, key, KEY_SETTING):
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


class SiteKey:
    """The site key in use and its file (`load_or_create_key`). One that cannot be written for want of
    space (a full disk at the first start) serves from memory, with a log line, and `save` writes the
    same key once the disk takes it (the outbox calls it whenever it could write: its set-up, each save
    of `pipeline.json`), so the next start keeps this run's pseudonyms and continues its episodes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()  # `save` runs in the state saver's thread too
        made = secrets.token_bytes(KEY_BYTES)
        self.unsaved = False  # the file does not hold `key` yet (a full disk)
        try:
            self.key = load_or_create_key(path, made)
        except ConfigError as exc:
            if not cannot_write_now(exc):
                raise
            self.key, self.unsaved = made, True
            log.error(
                "%s: %s; pseudonyms of this run come from a key kept in memory, saved once the disk "
                "takes writes: %s",
                KEY_SETTING,
                exc.problem,
                disk_remedy(path.parent),
            )

    def save(self) -> bool:
        """Write the key in use to its file, unless it is there; whether nothing is left to write (False
        while the disk refuses it). A key file made there meanwhile by someone else is kept, told: this
        run's pseudonyms are then not the next start's."""
        with self._lock:
            if not self.unsaved:
                return True
            try:
                on_disk = load_or_create_key(self.path, self.key)
            except ConfigError as exc:
                if cannot_write_now(exc):
                    return False
                log.error("%s: %s; this run's pseudonyms are not saved", KEY_SETTING, exc.problem)
                on_disk = None
            self.unsaved = False
        if on_disk == self.key:
            log.warning("%s: %s is saved: the next start keeps this run's pseudonyms", KEY_SETTING, self.path)
        elif on_disk is not None:
            log.error(
                "%s: %s was made meanwhile, by someone else: this run's pseudonyms (from a key kept in "
                "memory) are not the next start's",
                KEY_SETTING,
                self.path,
            )
        return True


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


def _resolved(path: Path) -> Path:
    """`path` through its symlinks, or as it is when that cannot be told (a loop, a missing part)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path


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
    """Each identifier a device's config holds (id, patient, serial port, BLE address and name, a
    replay's recording path, which may name the patient), mapped to what a log line may show instead:
    the device's pseudonym (`agent.logs` redaction). A recording path is masked as a whole, written as
    configured or resolved (through a symlink), and so is every file path under it."""
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
        if device.replay is not None:
            for path in (device.replay.path, _resolved(device.replay.path)):
                names[str(path)] = f"{ref}:recording"
    return names
