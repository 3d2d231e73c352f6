"""The managed models directory: signed bundles in, one active version per model, no rollback by replay.

Layout: `<models_dir>/<name>/<version>/` holds a card, its artifacts and `signature.json` (the format of
`agent.inference.signing`); `<models_dir>/<name>/current` is a symlink to the active version, and a
detector whose `model` param names `.../<name>/current` runs whatever is active after the next reload.
`<name>/previous` names the version an accepted activation replaced: what a start runs if `current`
stops loading later (a damaged disk, a runtime upgrade; `agent.inference.managed`).
A flat `<models_dir>/<name>/card.json` (the shipped layout) is listed as unmanaged and never touched.

A bundle is JSON: {"card": {...}, "files": {file name: base64}, "signature": {signature.json}}. Install
checks, in order: size (done by the caller on the raw payload), plain file names, the card (strict
parse), exactly the card's artifacts present with their sha256, the version is a dotted number newer
than the active one and not on disk already (so a replayed old bundle cannot roll the gateway back),
and every artifact's Ed25519 signature. It writes into a hidden temporary folder beside the target,
fsyncs, verifies the written copy, then renames it into place: a crash leaves the old state or the new
one. Activation verifies the on-disk version again, then swaps `current` with an atomic rename. Both
also load every artifact whose runtime is installed here, as a start would (`load_artifact`: input
shape, one window through it, output shape), so a signed model that cannot run on this gateway is
refused before it is written or made current, whether or not the config uses it yet.
Whoever changes the store holds `locked()` (an flock on `<models_dir>/.lock`) around the change and its
checks, so concurrent commands, or a command still running when its session ends and the next
session's, never interleave their swaps.
A crash (kill -9, power) during an install leaves its hidden `.incoming-*` folder (up to a bundle's
size) or a `.current.tmp` link: `remove_leftovers` deletes them at each session's start (if no change
holds the lock) and before each install. Hidden names are never listed, at any level.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import ModelError
from agent.inference.backend import available_backends, load_artifact, load_backend
from agent.inference.card import CARD_FILE, ModelCard, load_card, parse_card
from agent.inference.managed import CURRENT, PREVIOUS
from agent.inference.signing import SIGNATURE_FILE, load_public_key, verify_model
from agent.remote.envelope import CommandRefusedError

LOCK_FILE = ".lock"
INCOMING = ".incoming-"  # the prefix of an install's temporary folder
_VERSION = re.compile(r"^\d{1,9}(\.\d{1,9}){0,3}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# The log's reason for an artifact whose sha256 or signature does not verify (a security event).
TAMPERED = "an artifact does not match its card or signature: the bundle was altered or signed by another key"


@dataclass(frozen=True, slots=True)
class ModelEntry:
    name: str
    version: str
    active: bool
    managed: bool

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "active": self.active, "managed": self.managed}


def parse_version(text: str) -> tuple[int, ...]:
    """'1.10.2' -> (1, 10, 2); only dotted numbers compare unambiguously, so nothing else is accepted."""
    if not isinstance(text, str) or not _VERSION.match(text):
        raise CommandRefusedError("refused", "model version must be dotted numbers, e.g. 1.2.0")
    parts = tuple(int(p) for p in text.split("."))
    return parts + (0,) * (4 - len(parts))  # 1.2 == 1.2.0


def _plain_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", "..", CURRENT):
        raise CommandRefusedError("bad_request", f"{what} must be a plain file name ([A-Za-z0-9._-], <= 64)")
    return name


def pack_bundle(model_dir: Path) -> dict[str, Any]:
    """A model folder (card, artifacts, signature.json) as a bundle document (operator/tools side)."""
    card = load_card(model_dir)
    files = {
        a.file: base64.b64encode((model_dir / a.file).read_bytes()).decode("ascii")
        for a in card.artifacts.values()
    }
    signature = json.loads((model_dir / SIGNATURE_FILE).read_text(encoding="utf-8"))
    return {"card": dict(card.raw), "files": files, "signature": signature}


class ModelStore:
    """List, install and activate models under one directory; verification with `public_key`."""

    def __init__(self, root: Path, public_key: Path | None) -> None:
        self.root = root
        self.public_key = public_key

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's lock (blocking): one install or activation, with its checks, at a time.
        An flock, not a threading lock: each session has its own store object over the same folder."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def remove_leftovers_if_idle(self) -> list[str]:
        """`remove_leftovers` unless a change holds the lock now (it is one's own folder, then: the next
        install removes what is left); never blocks. For a session's start."""
        if not self.root.is_dir():
            return []
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return []
            return self.remove_leftovers()
        finally:
            os.close(fd)

    def remove_leftovers(self) -> list[str]:
        """Delete what a crashed install or activation left (`<name>/.incoming-*`, `<name>/.*.tmp`);
        returns their paths under the models folder. The caller holds the lock."""
        removed: list[str] = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for entry in sorted(folder.iterdir()):
                if entry.name.startswith(INCOMING) and entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                elif entry.name.startswith(".") and entry.name.endswith(".tmp") and entry.is_symlink():
                    entry.unlink(missing_ok=True)
                else:
                    continue
                removed.append(f"{folder.name}/{entry.name}")
        return removed

    def active_version(self, name: str) -> str | None:
        link = self.root / name / CURRENT
        if not link.is_symlink():
            return None
        return link.readlink().name

    def entries(self) -> list[ModelEntry]:
        found: list[ModelEntry] = []
        if not self.root.is_dir():
            return found
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if (folder / CARD_FILE).is_file():  # the shipped, flat layout
                version = _card_version(folder)
                if version is not None:
                    found.append(ModelEntry(folder.name, version, active=True, managed=False))
                continue
            active = self.active_version(folder.name)
            for sub in sorted(folder.iterdir()):
                if sub.name.startswith("."):  # an install's temporary folder, never a version
                    continue
                if sub.is_dir() and not sub.is_symlink() and (sub / CARD_FILE).is_file():
                    found.append(ModelEntry(folder.name, sub.name, sub.name == active, managed=True))
        return found

    # -- activation -------------------------------------------------------------------------------

    def activate(self, name: object, version: object) -> str | None:
        """Point `current` at an on-disk, verified version; returns the previously active version."""
        name = _plain_name(name, "name")
        version = _plain_name(version, "version")
        folder = self.root / name / version
        if not (folder / CARD_FILE).is_file() or (self.root / name / CARD_FILE).exists():
            raise CommandRefusedError("refused", "no such managed model version on this gateway")
        card = self._verify_folder(folder)
        if card.name != name or card.version != version:
            raise CommandRefusedError("refused", "the card's name/version do not match the folder")
        previous = self.active_version(name)
        self._point_current(name, version)
        return previous

    def keep_previous(self, name: str, previous: str | None, version: str) -> None:
        """After an accepted activation: `<name>/previous` names the version it replaced, the one a
        start falls back to if `current` stops loading (`agent.inference.managed`); unless that
        version no longer verifies and loads itself (then the older `previous` is the better one)."""
        if previous is None or previous == version:
            return
        try:
            self._verify_folder(self.root / name / previous)
        except CommandRefusedError:
            return
        self._point_current(name, previous, PREVIOUS)

    def _point_current(self, name: str, version: str, link_name: str = CURRENT) -> None:
        link = self.root / name / link_name
        tmp = self.root / name / f".{link_name}.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(version)  # relative: the models dir may move
        tmp.replace(link)
        _fsync_dir(link.parent)

    def restore(self, name: str, previous: str | None) -> None:
        """Undo an activation (the new version failed the reload check)."""
        if previous is None:
            (self.root / name / CURRENT).unlink(missing_ok=True)
        else:
            self._point_current(name, previous)

    def _verify_folder(self, folder: Path) -> ModelCard:
        if self.public_key is None:
            raise CommandRefusedError(
                "refused", "no model public key configured: cannot tell signed from unsigned"
            )
        # The answer gets the ModelError's reason, which names files; the log gets one of these.
        try:
            card = load_card(folder)
            load_public_key(self.public_key, card.name)  # the gateway's own key: not the bundle's fault
        except ModelError as exc:
            raise CommandRefusedError(
                "refused", exc.reason, reason="its card or the model key is unusable"
            ) from None
        try:
            for artifact in card.artifacts.values():
                data = (folder / artifact.file).read_bytes()
                try:
                    if hashlib.sha256(data).hexdigest() != artifact.sha256:
                        raise ModelError(card.name, f"{artifact.file} does not match its card")
                    verify_model(folder, card, artifact.file, data, self.public_key)
                except ModelError as exc:  # altered, unsigned, or signed by another key
                    raise CommandRefusedError(
                        "refused", exc.reason, reason=TAMPERED, security_event=True
                    ) from None
            _check_loads(folder, card)
        except ModelError as exc:
            raise CommandRefusedError(
                "refused", exc.reason, reason="an artifact does not load or run here"
            ) from None
        except OSError as exc:
            raise CommandRefusedError(
                "refused", f"model files unreadable: {exc.strerror or exc}", reason="model files unreadable"
            ) from None
        return card

    # -- installation -----------------------------------------------------------------------------

    def install(self, bundle: object) -> ModelCard:
        """Check and write a bundle as `<name>/<version>/`; it is not activated here."""
        if not isinstance(bundle, Mapping):
            raise CommandRefusedError("bad_request", "'bundle' must be an object with card, files, signature")
        raw_card, files, signature = bundle.get("card"), bundle.get("files"), bundle.get("signature")
        if not isinstance(raw_card, dict) or not isinstance(files, dict) or not isinstance(signature, dict):
            raise CommandRefusedError("bad_request", "'bundle' needs objects 'card', 'files' and 'signature'")
        try:
            card = parse_card(raw_card, "bundle")
        except ModelError as exc:
            raise CommandRefusedError(
                "refused", f"bad model card: {exc.reason}", reason="bad model card"
            ) from None
        name, version = _plain_name(card.name, "card name"), _plain_name(card.version, "card version")
        expected = {a.file for a in card.artifacts.values()}
        if set(files) != expected:
            raise CommandRefusedError("refused", "the bundle's files are not exactly the card's artifacts")
        blobs = {_plain_name(f, "file name"): _b64(files[f]) for f in sorted(files)}
        if (self.root / name / CARD_FILE).exists():
            raise CommandRefusedError("refused", "this model is in the unmanaged (flat) layout here")
        self._check_newer(name, version)
        if self.public_key is None:
            raise CommandRefusedError(
                "refused", "no model public key configured: unsigned bundles are refused"
            )
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        self.remove_leftovers()  # of an install a crash cut off: the caller holds the lock
        tmp = Path(tempfile.mkdtemp(prefix=INCOMING, dir=folder))
        try:
            for file_name, data in blobs.items():
                _write_synced(tmp / file_name, data)
            _write_synced(tmp / CARD_FILE, json.dumps(raw_card, indent=2).encode("utf-8"))
            _write_synced(tmp / SIGNATURE_FILE, json.dumps(signature, indent=2).encode("utf-8"))
            self._verify_folder(tmp)  # the copy on disk is what gets checked, and later loaded
            self._check_newer(name, version)  # nothing raced us
            tmp.rename(folder / version)
            _fsync_dir(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return card

    def _check_newer(self, name: str, version: str) -> None:
        new = parse_version(version)
        if (self.root / name / version).exists():
            raise CommandRefusedError("refused", "this version is already installed")
        same = self._on_disk_as(name, new)
        if same is not None:  # 1.2 beside 1.2.0: two builds under one version, and models/list shows both
            raise CommandRefusedError(
                "refused",
                f"this version is already installed (as {same})",
                reason="this version is already installed",
            )
        active = self.active_version(name)
        if active is not None and new <= parse_version(active):
            raise CommandRefusedError(
                "refused", "version is not newer than the active one (anti-rollback); activate it instead"
            )

    def _on_disk_as(self, name: str, version: tuple[int, ...]) -> str | None:
        """The folder of `name` whose version has the numbers of `version` (1.2, 1.2.0, 01.2.0.0), if any."""
        folder = self.root / name
        if not folder.is_dir():
            return None
        for entry in sorted(folder.iterdir()):
            if entry.is_symlink() or not _VERSION.match(entry.name):  # current, previous, .incoming-*
                continue
            if parse_version(entry.name) == version:
                return entry.name
        return None


def _check_loads(folder: Path, card: ModelCard) -> None:
    """Each artifact loaded and run once by its runtime (the key's prefix: `onnx_int8` -> onnx), when
    that runtime is installed; an artifact of a runtime this gateway lacks could never be loaded here."""
    installed = available_backends()
    for key, artifact in sorted(card.artifacts.items()):
        runtime = key.partition("_")[0]
        if runtime not in installed:
            continue
        try:
            load_artifact(load_backend(runtime), (folder / artifact.file).read_bytes(), card)  # type: ignore[arg-type]
        except ModelError as exc:
            raise ModelError(card.name, f"{artifact.file}: {exc.reason}") from None


def _b64(value: object) -> bytes:
    if not isinstance(value, str):
        raise CommandRefusedError("bad_request", "bundle files must be base64 strings")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise CommandRefusedError("bad_request", "a bundle file is not valid base64") from None


def _card_version(folder: Path) -> str | None:
    try:
        return load_card(folder).version
    except ModelError:
        return None


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
