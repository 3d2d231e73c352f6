"""Reading a row back: its cells as an `OutboxItem`, or `_DamagedRowError` when they are damaged.

Strategy: SQLite does not check cell contents, so a bad sector can leave a row whose text is not UTF-8
(or a cell of the wrong type) in a file that passes ``integrity_check``. Text is read leniently (bad
bytes kept as lone surrogates: `_lenient_text` is the connection's text factory) and `take()` sets such
a row aside exactly like an undecryptable one (same state, same count, same alarm), naming it by its
``seq``; every other row is still sent in order. A note that is not UTF-8 is left out, like one that
does not open.
"""

from __future__ import annotations

from typing import TypeGuard

from agent.outbox.items import Kind, OutboxItem, State


class _DamagedRowError(Exception):
    """A row's cells are not what this module writes: bytes damaged on disk."""


def _lenient_text(raw: bytes) -> str:
    """Text cells as read from the file. SQLite does not check that they are UTF-8, and the default
    decoding raises on the whole query, so one damaged row would stop every read that meets it; its
    bad bytes are kept as lone surrogates instead, which `_is_text` refuses."""
    return raw.decode("utf-8", "surrogateescape")


def _is_text(value: object) -> TypeGuard[str]:
    """A text cell that was valid UTF-8 on disk (see `_lenient_text`)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _item(row: tuple[object, ...]) -> OutboxItem:
    """The row's cells as an item; `_DamagedRowError` when a cell is not what `_insert` writes."""
    item_id, topic, payload, kind, rank, created, expiry_s, attempts, state, reason_code = row
    if not (_is_text(item_id) and _is_text(topic) and isinstance(payload, bytes)):
        raise _DamagedRowError
    try:  # a kind or state out of its enum, a number that is text: damage too
        return OutboxItem(
            id=item_id,
            topic=topic,
            payload=payload,
            kind=Kind(str(kind)),
            rank=int(rank),  # type: ignore[call-overload]
            created=float(created),  # type: ignore[arg-type]
            expiry_s=None if expiry_s is None else int(expiry_s),  # type: ignore[call-overload]
            attempts=int(attempts),  # type: ignore[call-overload]
            state=State(str(state)),
            reason_code=None if reason_code is None else int(reason_code),  # type: ignore[call-overload]
        )
    except (ValueError, TypeError) as exc:
        raise _DamagedRowError from exc
