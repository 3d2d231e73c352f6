"""Notes: texts a caller commits together with a batch of puts (`put_many(..., note=...)`).

Strategy: a note is the caller's record of what the items imply (the state journal's, for one), in the
same transaction as the items, so a crash leaves both or neither. Notes are appended, never rewritten:
each is a row of ``outbox_meta`` named ``note:<name>:<12-digit number>``, numbered on from what a previous
process left; `notes` reads them back oldest first and `drop_notes` drops them by name. With encryption
at rest a note is sealed like the payloads; one that does not open, or is not UTF-8, is left out.
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


class _Notes(_Transactions):
    """The notes kept in ``outbox_meta``."""

    def notes(self, name: str) -> list[str]:
        """The texts stored under `name` with `put_many(..., note=...)` since `drop_notes`, oldest
        first; a sealed one that does not open with this outbox's key, or a damaged one, is left out."""
        prefix = f"note:{name}:"
        with self._lock:
            rows = self._db.execute(
                "SELECT name, value FROM outbox_meta WHERE substr(name, 1, ?) = ? ORDER BY name",
                (len(prefix), prefix),
            ).fetchall()
        texts = []
        for key, value in rows:
            if not _is_text(value):
                log.error("%s", OutboxError(self.path, f"note {key!r} is damaged (not UTF-8): left out"))
            elif not str(value).startswith(_SEALED_NOTE):
                texts.append(str(value))
            elif self._sealer is not None:
                with contextlib.suppress(SealError, ValueError):
                    sealed = base64.b64decode(str(value)[len(_SEALED_NOTE) :])
                    texts.append(self._sealer.open(sealed, str(key), "").decode())
        return texts

    def _note_row(self, name: str, text: str) -> tuple[str, str]:
        """Notes are appended (each turn writes only its own), sealed like the payloads when the
        outbox is encrypted at rest."""
        prefix = f"note:{name}:"
        if name not in self._next_note:  # numbered on from what a previous process left
            last = self._db.execute(  # well-formed names only: a damaged one cannot be numbered on from
                "SELECT MAX(name) FROM outbox_meta WHERE substr(name, 1, ?) = ? AND length(name) = ? "
                "AND substr(name, ?) NOT GLOB '*[^0-9]*'",
                (len(prefix), prefix, len(prefix) + _NOTE_DIGITS, len(prefix) + 1),
            ).fetchone()[0]
            self._next_note[name] = 0 if last is None else int(str(last)[len(prefix) :]) + 1
        key = f"{prefix}{self._next_note[name]:0{_NOTE_DIGITS}d}"
        self._next_note[name] += 1  # a rolled-back number is skipped: order is all that matters
        if self._sealer is None:
            return key, text
        return key, _SEALED_NOTE + base64.b64encode(self._sealer.seal(text.encode(), key, "")).decode()

    def drop_notes(self, name: str) -> None:
        prefix = f"note:{name}:"
        with self._lock, self._transaction("NORMAL"):
            self._db.execute("DELETE FROM outbox_meta WHERE substr(name, 1, ?) = ?", (len(prefix), prefix))
