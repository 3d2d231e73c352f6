"""Notes: texts a caller commits together with a batch of puts (`put_many(..., note=...)`).

Strategy: a note is the caller's record of what the items imply (the state journal's, for one), in the
same transaction as the items, so a crash leaves both or neither. Notes are appended, never rewritten:
each is a row of ``outbox_meta`` named ``note:<name>:<12-digit number>``, numbered on from what a previous
process left (or from a number the caller names: `number_notes_after`); `notes` reads them back with
their numbers, oldest first, and `drop_notes` drops them, all or those up to a number (a caller that saved
what notes 0..n record drops those and keeps the ones written meanwhile). With encryption at rest a note
is sealed like the payloads; one that does not open, is not UTF-8 or has a damaged name is left out.
"""

from __future__ import annotations

import base64
import contextlib
import logging

from agent.outbox.items import OutboxError
from agent.outbox.rows import _is_text
from agent.outbox.transactions import _Transactions
from agent.sealing import SealError

log = logging.getLogger("agent.outbox")

_SEALED_NOTE = "sealed:"  # prefix of a note stored sealed (base64 of the AES-GCM box)
_NOTE_DIGITS = 12  # a note's name: note:<name>:<12-digit number>
DROP_BATCH = 500  # notes dropped per transaction


class _Notes(_Transactions):
    """The notes kept in ``outbox_meta``."""

    def notes(self, name: str) -> list[tuple[int, str]]:
        """The notes stored under `name` with `put_many(..., note=...)` and not dropped, as (number,
        text), oldest first; a sealed one that does not open with this outbox's key, or a damaged one, is
        left out."""
        prefix = f"note:{name}:"
        with self._lock:
            rows = self._db.execute(
                "SELECT name, value FROM outbox_meta WHERE substr(name, 1, ?) = ? ORDER BY name",
                (len(prefix), prefix),
            ).fetchall()
        notes = []
        for key, value in rows:
            number = _number(str(key), prefix)
            if number is None or not _is_text(value):
                log.error("%s", OutboxError(self.path, f"note {key!r} is damaged: left out"))
            elif not str(value).startswith(_SEALED_NOTE):
                notes.append((number, str(value)))
            elif self._sealer is not None:
                with contextlib.suppress(SealError, ValueError):
                    sealed = base64.b64decode(str(value)[len(_SEALED_NOTE) :])
                    notes.append((number, self._sealer.open(sealed, str(key), "").decode()))
        return notes

    def last_note(self, name: str) -> int:
        """The number of the latest note under `name` (written by this process or left by one before,
        dropped or not), -1 if none: a caller's record of which notes it has taken in."""
        with self._lock:
            return self._next_number(name) - 1

    def number_notes_after(self, name: str, number: int) -> None:
        """Number the next notes under `name` above `number`, even if every note up to it was dropped (a
        caller's record says it took in notes up to `number`; later notes must not look older)."""
        with self._lock:
            self._next_note[name] = max(self._next_number(name), number + 1)

    def _next_number(self, name: str) -> int:
        if name not in self._next_note:  # numbered on from what a previous process left
            prefix = f"note:{name}:"
            last = self._db.execute(  # well-formed names only: a damaged one cannot be numbered on from
                "SELECT MAX(name) FROM outbox_meta WHERE substr(name, 1, ?) = ? AND length(name) = ? "
                "AND substr(name, ?) NOT GLOB '*[^0-9]*'",
                (len(prefix), prefix, len(prefix) + _NOTE_DIGITS, len(prefix) + 1),
            ).fetchone()[0]
            self._next_note[name] = 0 if last is None else int(str(last)[len(prefix) :]) + 1
        return self._next_note[name]

    def _note_row(self, name: str, text: str) -> tuple[str, str]:
        """Notes are appended (each turn writes only its own), sealed like the payloads when the
        outbox is encrypted at rest."""
        number = self._next_number(name)
        key = f"note:{name}:{number:0{_NOTE_DIGITS}d}"
        self._next_note[name] = number + 1  # a rolled-back number is skipped: order is all that matters
        if self._sealer is None:
            return key, text
        return key, _SEALED_NOTE + base64.b64encode(self._sealer.seal(text.encode(), key, "")).decode()

    def drop_notes(self, name: str, through: int | None = None) -> None:
        """Drop the notes under `name`: all of them, or those numbered up to `through`. In batches of
        `DROP_BATCH`, the lock let go between them: the state saver's thread drops an alarm storm's
        notes (12,000 rows, 90 ms in one transaction) while the event loop commits alarms."""
        prefix = f"note:{name}:"
        if through is None:  # every name that starts with the prefix sorts below "note:<name>;"
            below, bound = "<", f"note:{name};"
        else:  # 12-digit numbers sort as text
            below, bound = "<=", f"{prefix}{through:0{_NOTE_DIGITS}d}"
        dropped = DROP_BATCH
        while dropped == DROP_BATCH:
            with self._lock, self._transaction("NORMAL"):
                dropped = self._db.execute(
                    "DELETE FROM outbox_meta WHERE name IN (SELECT name FROM outbox_meta "
                    f"WHERE name >= ? AND name {below} ? ORDER BY name LIMIT ?)",
                    (prefix, bound, DROP_BATCH),
                ).rowcount


def _number(key: str, prefix: str) -> int | None:
    digits = key[len(prefix) :]
    return int(digits) if len(digits) == _NOTE_DIGITS and digits.isascii() and digits.isdigit() else None
