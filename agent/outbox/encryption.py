"""Encryption at rest: payloads sealed in the file, plaintext scrubbed, rows that do not open set aside.

Strategy: with an `encryption_key_file`, payloads are sealed with AES-256-GCM (`agent.sealing`), bound to
their row's id and topic. `take()` opens them; a row that fails to open (wrong key, tampered, sealed but
no key configured) is never sent and never deleted: it is set aside as "undecryptable", counted, and an
error naming the outbox file is logged. Reopening the outbox puts such rows back to pending, so a
restart with the right key delivers them. Plaintext rows found when the outbox is opened with a key
(written before encryption was switched on) are sealed in place, with ``secure_delete`` on and the WAL
truncated, so no plaintext copy stays in the files. A damaged row (`agent.outbox.rows`) is set aside
the same way.

A key made while its file could not be written (a full disk at the first start) is kept in memory, and
nothing is sealed with it until `_save_keys` has written it: the file is not set up before (an empty
stand-in serves, `store`), and `pipeline.json` is not saved before (`sealer_to_write`). Otherwise the
next start, making a new key, would find every row and the saved state undecryptable.
"""

from __future__ import annotations

import base64
import errno
import logging
import secrets
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from agent.errors import ConfigError
from agent.keyfile import cannot_write_now
from agent.outbox.items import OutboxError, OutboxItem
from agent.outbox.rows import _DamagedRowError, _is_text, _item
from agent.outbox.transactions import _Transactions
from agent.sealing import KEY_BYTES, KEY_SETTING, SEAL_OVERHEAD, Sealer, SealError, load_or_create_key

log = logging.getLogger("agent.outbox")


# Values of outbox_meta whose name starts so (the onsets kept by `episode_clock`) are sealed like the
# payloads when the outbox is encrypted (`sealed_meta_value`), and by the open that finds them in clear.
SEALED_META_NAME = "onset:"
SEALED_META = "sealed:"  # prefix of such a value stored sealed (base64 of the AES-GCM box)


def sealed_meta_value(sealer: Sealer, name: str, text: str) -> str:
    """`text`, the value of the outbox_meta row `name`, sealed (its name is the associated data)."""
    return SEALED_META + base64.b64encode(sealer.seal(text.encode(), name, "")).decode()


def opened_meta_value(sealer: Sealer | None, name: str, value: str) -> str | None:
    """The value of the outbox_meta row `name` in clear; None when sealed and it does not open."""
    if not value.startswith(SEALED_META):
        return value
    if sealer is None:
        return None
    try:
        return sealer.open(base64.b64decode(value[len(SEALED_META) :]), name, "").decode()
    except (SealError, ValueError, UnicodeDecodeError):
        return None


class _Encryption(_Transactions):
    """Sealing and opening payloads, and the rows set aside because they do not open or are damaged."""

    @property
    def sealer(self) -> Sealer | None:
        """The outbox's key when payloads are sealed at rest (an `encryption_key_file` is configured),
        also used for the gateway's other files holding patient values (`agent.state_file`)."""
        return self._sealer

    def sealer_to_write(self) -> Sealer | None:
        """`sealer`, for a file written now (`pipeline.json`), once the keys are saved (`_save_keys`);
        `OSError` (ENOSPC) while the outbox's key is not on disk yet: nothing is sealed with a key
        that the next start would not have."""
        with self._lock:
            unsaved = self._save_keys()
            if unsaved is not None:
                raise OSError(errno.ENOSPC, f"the outbox key is not saved yet ({unsaved})")
            return self._sealer

    def _load_sealer(self, key_file: Path | None) -> str | None:
        """Set `_sealer` from `key_file` (None: payloads in clear), creating the key when absent. A
        full disk keeps a new key in memory, unsaved: returns why (else None); other problems raise."""
        self._sealer, self._key_to_save = None, None
        if key_file is None:
            return None
        made = secrets.token_bytes(KEY_BYTES)
        try:
            self._sealer = Sealer(load_or_create_key(key_file, made))
        except ConfigError as exc:
            if not cannot_write_now(exc):
                raise
            self._sealer, self._key_to_save = Sealer(made), made
            return f"{KEY_SETTING}: {exc.problem}"
        return None

    def _save_keys(self) -> str | None:
        """Write the keys kept in memory (a full disk refused them): the pseudonym key's is tried
        (`save_first`), the outbox's must succeed; why it did not, or None once it is on disk. A key
        file made there meanwhile is used instead (nothing was sealed with the one in memory)."""
        self._save_first()
        key, key_file = self._key_to_save, self.config.encryption_key_file
        if key is None or key_file is None:
            return None
        try:
            on_disk = load_or_create_key(key_file, key)
        except ConfigError as exc:
            return f"{KEY_SETTING}: {exc.problem}"
        if on_disk != key:
            self._sealer = Sealer(on_disk)
            log.warning("%s: %s was made meanwhile: it seals the outbox from now on", KEY_SETTING, key_file)
        else:
            log.warning("%s: %s is saved: the outbox is sealed with it from now on", KEY_SETTING, key_file)
        self._key_to_save = None
        return None

    def _stored_size(self, item: OutboxItem) -> int:
        return item.size + (SEAL_OVERHEAD if self._sealer is not None else 0)

    def _open(self, row: tuple[object, ...]) -> OutboxItem:
        """The row (`_SELECT`) as an item with its payload in clear; `SealError` when it cannot be opened,
        `_DamagedRowError` when its cells are damaged."""
        item = _item(row[1:-1])
        if not row[-1]:
            return item  # written in clear (no key configured then)
        if self._sealer is None:
            raise SealError("sealed, but no key is configured")
        return replace(item, payload=self._sealer.open(item.payload, item.id, item.topic))

    def _open_or_raise(self, row: tuple[object, ...]) -> OutboxItem:
        try:
            return self._open(row)
        except SealError:
            raise self._undecryptable_error(1) from None
        except _DamagedRowError:
            raise self._damaged_error([int(row[0])]) from None  # type: ignore[call-overload]

    def _damaged_error(self, seqs: Sequence[int]) -> OutboxError:
        shown = ", ".join(str(s) for s in seqs[:10]) + (", ..." if len(seqs) > 10 else "")
        return OutboxError(
            self.path,
            f"{len(seqs)} row(s) are damaged (text that is not UTF-8 or a value of the wrong type; seq "
            f"{shown}): set aside, not sent, not deleted ({self._count_undecryptable()} row(s) set aside "
            "in the file in all; retried at the next start)",
        )

    def _undecryptable_error(self, count: int) -> OutboxError:
        why = (
            f"the key in {KEY_SETTING} does not open them (another key, or the rows were altered)"
            if self._sealer is not None
            else f"they are encrypted but no {KEY_SETTING} is configured"
        )
        return OutboxError(
            self.path,
            f"{count} row(s) cannot be decrypted: {why}; set aside, not sent, not deleted "
            f"({self._count_undecryptable()} in the file; retried at the next start)",
        )

    def _count_undecryptable(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox WHERE state='undecryptable'").fetchone()[0])

    def _scrub_cleartext(self, sealer: Sealer) -> None:
        """Seal rows written in clear before a key was configured, then rewrite the file (VACUUM) and
        empty the WAL, so no plaintext payload stays in free pages or old frames."""
        rows = [  # a damaged row is left as it is: take() sets it aside
            (item_id, topic, payload)
            for item_id, topic, payload in self._db.execute(
                "SELECT id, topic, payload FROM outbox WHERE sealed=0"
            )
            if _is_text(item_id) and _is_text(topic) and isinstance(payload, bytes)
        ]
        flagged = self._db.execute("SELECT 1 FROM outbox_meta WHERE name='cleartext'").fetchone()
        if not rows and not flagged:
            return
        kept = self._db.execute(  # values kept in clear (an episode's onset: `SEALED_META_NAME`)
            "SELECT name, value FROM outbox_meta WHERE substr(name, 1, ?) = ? AND substr(value, 1, ?) != ?",
            (len(SEALED_META_NAME), SEALED_META_NAME, len(SEALED_META), SEALED_META),
        ).fetchall()
        self._begin("FULL")
        try:
            for name, value in kept:
                if _is_text(name) and _is_text(value):
                    sealed = sealed_meta_value(sealer, str(name), str(value))
                    self._db.execute("UPDATE outbox_meta SET value=? WHERE name=?", (sealed, name))
            for item_id, topic, payload in rows:
                self._db.execute(
                    "UPDATE outbox SET payload=?, sealed=1, size=size+? WHERE id=?",
                    (sealer.seal(bytes(payload), str(item_id), str(topic)), SEAL_OVERHEAD, item_id),
                )
            self._db.execute("DELETE FROM outbox_meta WHERE name='cleartext'")
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self._db.execute("VACUUM")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        log.info("outbox %s: sealed %d row(s) written before encryption was configured", self.path, len(rows))

    def _report_sealed_without_key(self) -> None:
        sealed = int(self._db.execute("SELECT COUNT(*) FROM outbox WHERE sealed=1").fetchone()[0])
        if sealed:
            log.error(
                "%s",
                OutboxError(
                    self.path,
                    f"{sealed} row(s) are encrypted but no {KEY_SETTING} is configured: "
                    "they will be set aside, not sent",
                ),
            )
