"""One clock per episode: every event of an alarm episode goes out with the onset its first one has.

Strategy: a step of the wall clock moves an open episode's timers (the pipeline's and the gateway's
books), so its next event carries the onset in the new clock, while its START may still be queued with
the old one (put by an earlier run: `restamping` moves only this run's rows), or already sent with it.
Before that happened (offline review, 2026-12-01, S2) one episode reached the back end with two onsets
three days apart. So when an UPDATE or END is put (`_in_its_episodes_clock`), its onset is compared with
the onset the episode is told with: its START's in the file, or, once the START has left, the onset kept
for it in ``outbox_meta`` (``onset:<digest of the episode id>``, sealed like the payloads; written with the
START, dropped with the END). When they differ:
- every event of the episode is still queued here (its START among them, none in flight, refused or
  set aside): they are all moved to the new onset (`_one_onset`: each one's wall times by the difference
  from its own onset), so the START goes out in the clock of its END;
- else the back end has (or may have) the START: the new event's wall times are moved back by the
  difference, so it keeps the onset told and its end minus its onset is the real duration.
Their `created` is left: it is the drain order, which they already keep.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import replace
from datetime import datetime, timedelta

from agent.events import encode
from agent.outbox.encryption import SEALED_META_NAME, _Encryption, opened_meta_value, sealed_meta_value
from agent.outbox.items import OutboxItem
from agent.outbox.rows import _is_text
from agent.sealing import SealError

# The absolute wall times of an alarm payload (`AlarmEvent.to_payload`); the rest are values or durations.
_TIMES = ("onset_time", "detection_time", "end_time")


def restamped(payload: bytes, step: float) -> bytes:
    """The alarm payload with its wall times moved by `step` seconds (to the millisecond, as written) and
    every other byte as it was. `ValueError` (or `OverflowError`) when it is not such a payload."""
    doc = json.loads(payload)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    shift = timedelta(milliseconds=round(step * 1000))
    for name in _TIMES:
        value = doc.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ValueError(f"{name} is not a time")
        doc[name] = _iso(_time(value) + shift)
    return encode(doc)


def onset_of(payload: bytes) -> str | None:
    """The payload's `onset_time` as written, None when it is not an alarm payload."""
    fields = _onset_and_phase(payload)
    return None if fields is None else fields[0]


def _onset_and_phase(payload: bytes) -> tuple[str, object] | None:
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        doc = json.loads(payload)
        if isinstance(doc, dict) and isinstance(doc.get("onset_time"), str):
            onset = str(doc["onset_time"])
            _time(onset)  # a time, or ValueError
            return onset, doc.get("phase")
    return None


def seconds_between(later: str, earlier: str) -> float:
    """`later` minus `earlier`, two times as an alarm payload writes them, in seconds."""
    return (_time(later) - _time(earlier)).total_seconds()


def _kept_name(episode: str) -> str:
    """The outbox_meta name of the onset kept for `episode`: a digest of its id, which is not kept in
    the file once its rows are delivered (a UUIDv7 also tells when it started)."""
    return SEALED_META_NAME + hashlib.sha256(episode.encode()).hexdigest()[:32]


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)  # the form of `agent.events.iso_time`


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _EpisodeClock(_Encryption):
    """Keeping each episode's events in one clock (see the module's docstring). Internals: lock held,
    in a write transaction."""

    def _in_its_episodes_clock(self, item: OutboxItem) -> OutboxItem:
        """The alarm `item` about to be put, in the clock its episode is told with; the episode's queued
        events moved to its onset instead when all of them are still here."""
        episode, _, number = item.id.rpartition(":")
        onset = onset_of(item.payload)
        if onset is None or number == "0" or self._stored(item.id):
            return item
        told = self._told_onset(episode)
        if told is None or told == onset:
            return item
        if self._queued_whole(episode):
            self._one_onset(episode, onset)
            return item
        try:
            return replace(item, payload=restamped(item.payload, seconds_between(told, onset)))
        except (ValueError, OverflowError):
            return item

    def _after_put(self, item: OutboxItem) -> None:
        """Keep the onset an episode is told with once its START has left: written with the START,
        dropped with the END (nothing follows an END)."""
        episode, _, number = item.id.rpartition(":")
        fields = _onset_and_phase(item.payload)
        if fields is None:
            return
        if number == "0":
            self._keep_told_onset(episode, fields[0])
        if fields[1] == "end":
            self._db.execute("DELETE FROM outbox_meta WHERE name=?", (_kept_name(episode),))

    def _queued_whole(self, episode: str) -> bool:
        """Every event of `episode` put so far is here and waiting: its START among them, none in flight,
        acknowledged, refused or set aside."""
        rows = self._episode_rows(episode)
        return any(item_id == f"{episode}:0" for _, item_id, _ in rows) and all(
            state == "pending" and not self._handed_out(item_id) for _, item_id, state in rows
        )

    def _one_onset(self, episode: str, onset: str) -> int:
        """Move every queued event of `episode` whose onset is not `onset` by the difference (all its
        wall times); returns how many were moved. Rows that do not open are left."""
        moved = 0
        for seq, _, _ in self._episode_rows(episode):
            payload = self._payload_of(seq)
            own = None if payload is None else onset_of(payload)
            if own is None or own == onset:
                continue
            stored = self._restamped_row(seq, seconds_between(onset, own))
            if stored is not None:
                self._db.execute(
                    "UPDATE outbox SET payload=?, size=size+? WHERE seq=?", (stored[0], stored[1], seq)
                )
                self._size += stored[1]
                self._alarm_size += stored[1]  # an alarm row
                moved += 1
        self._move_kept_onset(episode, onset)
        return moved

    def _episode_rows(self, episode: str) -> list[tuple[int, str, str]]:
        """(seq, id, state) of the rows of `episode`, by the id index (ids are ``{episode}:{seq}``)."""
        rows = self._db.execute(
            "SELECT seq, id, state FROM outbox WHERE id >= ? AND id < ? ORDER BY seq",
            (f"{episode}:", f"{episode};"),  # ';' follows ':' in ASCII
        ).fetchall()
        return [(int(seq), str(item_id), str(state)) for seq, item_id, state in rows]

    def _stored(self, item_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM outbox WHERE id=?", (item_id,)).fetchone() is not None

    def _told_onset(self, episode: str) -> str | None:
        """The onset `episode` is told with: its START's in the file, else the one kept for it."""
        start = self._db.execute("SELECT seq FROM outbox WHERE id=?", (f"{episode}:0",)).fetchone()
        if start is not None:
            payload = self._payload_of(int(start[0]))
            return None if payload is None else onset_of(payload)
        return self._kept_onset(episode)

    def _kept_onset(self, episode: str) -> str | None:
        key = _kept_name(episode)
        row = self._db.execute("SELECT value FROM outbox_meta WHERE name=?", (key,)).fetchone()
        if row is None or not _is_text(row[0]):
            return None
        return opened_meta_value(self._sealer, key, str(row[0]))

    def _move_kept_onset(self, episode: str, onset: str) -> None:
        """The onset kept for `episode` (if any: an open episode's) follows its START, moved to `onset`."""
        if self._db.execute("SELECT 1 FROM outbox_meta WHERE name=?", (_kept_name(episode),)).fetchone():
            self._keep_told_onset(episode, onset)

    def _keep_told_onset(self, episode: str, onset: str) -> None:
        key = _kept_name(episode)
        value = onset if self._sealer is None else sealed_meta_value(self._sealer, key, onset)
        self._db.execute("INSERT OR REPLACE INTO outbox_meta VALUES (?, ?)", (key, value))

    def _payload_of(self, seq: int) -> bytes | None:
        """The row's payload in clear; None when it does not open (damaged, another key)."""
        item_id, topic, payload, sealed = self._db.execute(
            "SELECT id, topic, payload, sealed FROM outbox WHERE seq=?", (seq,)
        ).fetchone()
        if not (_is_text(item_id) and _is_text(topic) and isinstance(payload, bytes)):
            return None
        if not sealed:
            return payload
        if self._sealer is None:
            return None
        try:
            return self._sealer.open(payload, item_id, topic)
        except SealError:
            return None

    def _restamped_row(self, seq: int, step: float) -> tuple[bytes, int] | None:
        """The row's stored payload moved by `step` (sealed again if it was) and the bytes it grew by;
        None when it does not open (a damaged row, another key: `take` sets it aside) or is not an alarm
        payload."""
        item_id, topic, payload, sealed = self._db.execute(
            "SELECT id, topic, payload, sealed FROM outbox WHERE seq=?", (seq,)
        ).fetchone()
        clear = self._payload_of(seq)
        if clear is None:
            return None
        try:
            moved = restamped(clear, step)
        except (ValueError, OverflowError, UnicodeDecodeError):
            return None
        stored = self._sealer.seal(moved, item_id, topic) if sealed and self._sealer is not None else moved
        return stored, len(stored) - len(payload)
