"""The pipeline's saved state (`pipeline.json`), sealed at rest when the outbox is.

`pipeline.json` holds what the detectors learned (per-stream baselines: heart-rate, SpO2 and pump
levels) and every open alarm episode with its peak value, i.e. patient values. When an outbox
`encryption_key_file` is configured the same key seals this file too: `pipeline.json.sealed` holds
``nonce || AES-256-GCM(json) || tag`` bound to the file's name, and a plaintext `pipeline.json` left by
an earlier run without encryption is read once and then removed.

Nothing is lost silently: a sealed file that does not open (another key, edited bytes) or that cannot be
opened because encryption was turned off, and a plaintext file that is not a JSON object (truncated,
damaged bytes), is moved aside as `<name>.unreadable`, logged, and the agent starts from a fresh state
(detectors learn again; open episodes are not continued).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.sealing import Sealer, SealError
from agent.state import PRIVATE_FILE, write_atomic

log = logging.getLogger("agent.state")

SEALED_SUFFIX = ".sealed"
UNREADABLE_SUFFIX = ".unreadable"


def sealed_path(path: Path) -> Path:
    return path.with_name(path.name + SEALED_SUFFIX)


CHUNK = 100  # list items encoded by one call of json's C encoder in `encode_state` (~0.5 ms)


def _nothing() -> None:
    pass


def write_state(
    path: Path, value: dict[str, Any], sealer: Sealer | None, between: Callable[[], None] = _nothing
) -> None:
    """Write atomically; sealed (and any plaintext copy removed) when `sealer` is given. `between` is
    called between the pieces of the encoding (see `encode_state`)."""
    data = encode_state(value, between)
    if sealer is None:
        write_atomic(path, data)
        return
    write_atomic(sealed_path(path), sealer.seal(data, path.name, "state"))
    path.unlink(missing_ok=True)  # only once the sealed copy is durable


def encode_state(value: Any, between: Callable[[], None] = _nothing) -> bytes:
    """`json.dumps(value, sort_keys=True)`, compact, byte for byte, built from pieces of at most
    `CHUNK` list items, calling `between()` after each piece.

    The file is megabytes at tens of thousands of streams, written with each heartbeat in a thread
    beside the event loop. json's C encoder holds the GIL for a whole call (110 ms for 7 MB: 75,000
    streams in an alarm storm), which would stall the loop as if the save ran on it; between pieces
    the thread gives way (`agent.state_saver`). Compact because an indent makes `json` leave its C
    encoder (3x slower)."""
    return _encode(value, between).encode()


def _encode(value: Any, between: Callable[[], None]) -> str:
    """Big lists and tables in pieces of `CHUNK` items; a small table's values looked into."""
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        keys = sorted(value)
        if len(keys) > CHUNK:
            tables = ({k: value[k] for k in keys[i : i + CHUNK]} for i in range(0, len(keys), CHUNK))
            return "{" + ",".join(_piece(table, between) for table in tables) + "}"
        return "{" + ",".join(f"{json.dumps(k)}:{_encode(value[k], between)}" for k in keys) + "}"
    if isinstance(value, list) and len(value) > CHUNK:
        pieces = (_piece(value[i : i + CHUNK], between) for i in range(0, len(value), CHUNK))
        return "[" + ",".join(pieces) + "]"
    return _compact(value)


def _piece(value: dict[str, Any] | list[Any], between: Callable[[], None]) -> str:
    """A table's or list's items without their brackets, to be joined with the other pieces."""
    text = _compact(value)[1:-1]
    between()
    return text


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def read_state(path: Path, sealer: Sealer | None) -> dict[str, Any] | None:
    """The saved state (sealed or plain, whichever this configuration and the disk hold), else None."""
    sealed = sealed_path(path)
    if sealed.exists():
        if sealer is None:
            _set_aside(sealed, "it is sealed but outbox.encryption_key_file is not configured")
        else:
            try:
                value = json.loads(sealer.open(sealed.read_bytes(), path.name, "state"))
            except (SealError, ValueError) as exc:
                _set_aside(sealed, f"it does not open with the configured key ({exc})")
            else:
                return value if isinstance(value, dict) else None
    return _read_plain(path)  # plaintext: no encryption, or the first start after turning it on


def _read_plain(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (ValueError, RecursionError) as exc:  # truncated, not UTF-8, absurdly nested: a damaged file
        _set_aside(path, f"it is not JSON ({type(exc).__name__})")
        return None
    if not isinstance(value, dict):
        _set_aside(path, "it is not a JSON object")
        return None
    return value


def set_aside_state(path: Path, why: str) -> None:
    """Move the saved state (sealed and/or plain) aside as `.unreadable`: it read as JSON but could not be
    restored (wrong types after a version change or a hand edit), and the agent starts fresh."""
    for saved in (sealed_path(path), path):
        if saved.exists():
            _set_aside(saved, why)


def _set_aside(saved: Path, why: str) -> None:
    aside = saved.with_name(saved.name + UNREADABLE_SUFFIX)
    saved.replace(aside)
    aside.chmod(PRIVATE_FILE)  # patient values, maybe written by a version that left them 0644
    log.error("saved pipeline state %s moved to %s: %s; starting from a fresh state", saved, aside, why)
