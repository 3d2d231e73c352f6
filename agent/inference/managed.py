"""A managed model whose `current` version no longer loads: the previous accepted version runs instead.

The managed store (`agent.remote.bundles`) makes a version current only after loading every artifact
and checking the config with it. What can still break it later is the disk (a damaged or missing
artifact: sha256, signature, card) or the runtime (an upgrade that no longer reads it). A start, a
`check-config` or a reload would then stop on that one model, and with it every detector of every
patient, HR and SpO2 limits included. So a detector whose `model` is `<models_dir>/<name>/current`
loads `<name>/previous` (the version that was current before the last accepted activation) when that
passes every check, logs an error, and runs on it with `LoadedModel.fallback` saying why; the session
raises the technical alarm `model_fallback` while it does.

Never a fallback: a card whose channels or window do not fit the stream (the config's problem, refused
as before), and anything loaded inside `strict()`, which the activation check uses, so a version is
never accepted because its predecessor loads.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from agent.errors import ModelError
from agent.inference.backend import BackendName, LoadedModel, Precision, check_stream, load_model
from agent.inference.card import load_card

CURRENT = "current"  # <models_dir>/<name>/current: the active version
PREVIOUS = "previous"  # <models_dir>/<name>/previous: the one active before the last accepted activation

log = logging.getLogger(__name__)

# Context-local, not global: set in the worker thread of one activation check, seen by nothing else.
_strict: ContextVar[bool] = ContextVar("strict model loading", default=False)


@contextmanager
def strict() -> Iterator[None]:
    """Within this block a `current` that does not load is a failure, never a fallback."""
    token = _strict.set(True)
    try:
        yield
    finally:
        _strict.reset(token)


def load_managed(
    model_dir: Path,
    *,
    backend: BackendName = "auto",
    precision: Precision = "int8",
    channels: Sequence[str] | None = None,
    public_key: Path | None = None,
) -> LoadedModel:
    """`load_model`, with the previous version of a managed `current` that fails to load."""
    try:
        return load_model(
            model_dir, backend=backend, precision=precision, channels=channels, public_key=public_key
        )
    except ModelError as failed:
        previous = _previous(model_dir)
        if previous is None or _strict.get() or _misfit(model_dir, channels):
            raise
        try:
            model = load_model(
                previous, backend=backend, precision=precision, channels=channels, public_key=public_key
            )
        except ModelError:
            raise failed from None
        why = (
            f"version {model_dir.readlink().name} does not load ({failed.reason}); running the previous"
            f" version {model.card.version}"
        )
        log.error("model %s: %s", model.card.name, why)
        return dataclasses.replace(model, fallback=why)


def _previous(model_dir: Path) -> Path | None:
    if model_dir.name != CURRENT or not model_dir.is_symlink():
        return None
    previous = model_dir.parent / PREVIOUS
    return previous if previous.is_symlink() else None


def _misfit(model_dir: Path, channels: Sequence[str] | None) -> bool:
    """Whether the current card loads and does not fit the stream: the config's problem, no fallback."""
    try:
        card = load_card(model_dir)
    except ModelError:
        return False  # a damaged card is the model's problem
    try:
        check_stream(card, channels, None)
    except ModelError:
        return True
    return False
