"""Disk: bytes the outbox writes per alarm event and per heartbeat, what wears a gateway's SD card.

A real `Outbox` in a fresh folder goes through the steps of the running agent, in simulated time:
every alarm event is one pipeline turn (`put_alarms` with its episode note, as `GatewayDaemon.publish`
does), then the uplink's drain as `MqttUplink` does it (`take(window)`, the PUBACK's `delivered`, the
`take` that follows the wake-up); every `heartbeat_s` a heartbeat with `devices` devices is put and
drained the same way and the notes are dropped (the full save of `pipeline.json`, not counted here).
The uplink also polls `take` once per simulated second. The events arrive at seeded random times
over `events / rate` seconds (a Poisson process), one per pipeline turn.
With `offline` (`--offline`) the link is down: nothing is taken, heartbeats alone are put (at the
default expiry of 120 s), and the report says how many rows are left at the end; `--max-bytes` sets
the outbox's bound (a small one shows the steady state of an outbox full of heartbeats).

It reports the bytes the process sent to the block device (/proc/self/io `write_bytes`, counted when a
page is first dirtied, so an fsync'd commit costs whole 4 KiB blocks) and the bytes handed to write()
(`wchar`), both after a final checkpoint (the WAL folded into the file, fsync'd) so that deferred
writes count; the commits (calls after which another connection sees a new `data_version`); and the
sizes of the rows. The kernel's write-back is not simulated: pages dirtied twice between two fsyncs
count once here as on the gateway, but a run of seconds does not see the -shm file written back every
30 s. Figures: docs/durability.md ("Writes to the disk").
"""

from __future__ import annotations

import os
import random
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.config.schema import OutboxConfig
from agent.events import AlarmEvent, AlarmKind, DeviceHealth, Explanation, Heartbeat, Phase, Priority
from agent.ids import uuid7
from agent.outbox import Outbox
from agent.state_journal import NOTE, EpisodeJournal

WINDOW = 19  # mqtt.max_inflight 20, one slot kept for status messages
ALARM_TOPIC = "edge/lab/gw-soak/alarm"
HEARTBEAT_TOPIC = "edge/lab/gw-soak/heartbeat"
HEARTBEAT_EXPIRY_S = 120
START = 1_790_000_000.0
DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # the outbox's default bound (agent.config.schema.OutboxConfig)


class _SimClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _io() -> dict[str, int]:
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return {"write_bytes": int(fields["write_bytes"]), "wchar": int(fields["wchar"])}


def alarm_event(n: int, t: float) -> AlarmEvent:
    """The n-th event of a run: episodes of three transitions (start, update, end)."""
    seq = n % 3
    phase = (Phase.START, Phase.UPDATE, Phase.END)[seq]
    return AlarmEvent(
        id=str(uuid7()),
        seq=seq,
        phase=phase,
        gateway="gw-soak",
        device=f"dev-{n % 100:03d}a1b2c3",
        stream="vitals",
        condition="tachycardia",
        priority=(Priority.HIGH, Priority.MEDIUM, Priority.LOW)[n % 3],
        kind=AlarmKind.PHYSIOLOGICAL,
        onset_time=t - 12.0,
        detection_time=t,
        value=142.0,
        threshold=120.0,
        unit="bpm",
        explanation=Explanation(
            detector="hr-high",
            score=142.0,
            threshold=120.0,
            top_channels=(("hr", 142.0),),
            baseline={"hr": 72.0},
        ),
        end_time=t if phase is Phase.END else None,
    )


def heartbeat(devices: int, t: float) -> Heartbeat:
    """A heartbeat of a gateway with `devices` devices, every field filled as a running agent fills it."""
    report = tuple(
        DeviceHealth(f"dev-{d:03d}a1b2c3", t - 0.4, 251.0, d % 3, d % 2, True, d % 4) for d in range(devices)
    )
    return Heartbeat(
        gateway="gw-soak",
        time=t,
        uptime_s=3600.0,
        session=7,
        devices=report,
        outbox_depth=0,
        oldest_undelivered_age_s=None,
        active_alarms=3,
        models={"ecg-beat": "int8-0a1b2c3d"},
        cpu_percent=31.5,
        rss_bytes=92_000_000,
        temperature_c=48.2,
    )


class _Commits:
    """Counts the calls after which the file changed, seen from a second connection."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        self._version = self._read()
        self.count = 0

    def _read(self) -> int:
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def check(self) -> None:
        version = self._read()
        if version != self._version:
            self.count += 1
            self._version = version

    def close(self) -> None:
        self._db.close()


def outbox_writes(
    events: int,
    heartbeats: int,
    devices: int,
    rate: float = 0.5,
    heartbeat_s: float = 30.0,
    seed: int = 1,
    *,
    offline: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> dict[str, Any]:
    """Drive an outbox through `events` alarm events and `heartbeats` heartbeats; see the module doc."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DISK_DIR")) as tmp:
        path = Path(tmp) / "outbox.sqlite"
        clock = _SimClock(START)
        box = Outbox(OutboxConfig(path, max_bytes), clock=clock)
        box.requeue_inflight()  # what `MqttUplink.run` does first
        commits = _Commits(path)
        journal = EpisodeJournal([])
        span = max(events / rate, heartbeats * heartbeat_s)
        arrivals = random.Random(seed)
        timeline = sorted(
            [(START + arrivals.uniform(0.0, span), "alarm", n) for n in range(events)]
            + [(START + (n + 1) * heartbeat_s, "heartbeat", n) for n in range(heartbeats)]
            + [(START + s + 0.999, "poll", s) for s in range(int(span))]
        )
        sizes: dict[str, int] = {}
        wal_max = 0
        before = _io()
        t0 = time.perf_counter()
        for t, what, n in timeline:
            clock.t = t
            if what == "alarm":
                event = alarm_event(n, t)
                note = journal.note([event])
                box.put_alarms([event], ALARM_TOPIC, note=note)
                sizes.setdefault("alarm_payload", len(event.to_json()))
                sizes.setdefault("note", len(note[1]))
            elif what == "heartbeat":
                beat = heartbeat(devices, t)
                box.put_heartbeat(beat, HEARTBEAT_TOPIC, HEARTBEAT_EXPIRY_S)
                sizes.setdefault("heartbeat_payload", len(beat.to_json()))
            commits.check()
            taken = [] if offline else box.take(WINDOW)  # the drain after notify(), or the uplink's poll
            commits.check()  # (offline: the uplink takes nothing while it is not connected)
            for item in taken:
                box.delivered(item.id)  # the PUBACK arrives within milliseconds on a working link
                commits.check()
            if taken:
                box.take(WINDOW)  # the wake-up after the PUBACK
                commits.check()
            if what == "heartbeat":
                box.drop_notes(NOTE, through=box.last_note(NOTE))  # after the full save of pipeline.json
                commits.check()
            wal = path.with_name(path.name + "-wal")
            wal_max = max(wal_max, wal.stat().st_size if wal.exists() else 0)
        page_size = int(sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0])
        rows_left = box.depth()
        box.close()
        commits.check()
        commits.close()
        final = sqlite3.connect(path, isolation_level=None)
        final.execute("PRAGMA synchronous=FULL")
        final.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        final.close()
        elapsed = time.perf_counter() - t0
        after = _io()
        db_bytes = path.stat().st_size
    written = after["write_bytes"] - before["write_bytes"]
    handed = after["wchar"] - before["wchar"]
    # Per event: a heartbeat counts as one event here; the soak's mix is about 15 alarm events per beat.
    units = events + heartbeats
    return {
        "events": events,
        "heartbeats": heartbeats,
        "devices": devices,
        "simulated_s": round(span),
        "page_size": page_size,
        "sizes_bytes": sizes,
        "commits": commits.count,
        "commits_per_event": round(commits.count / max(units, 1), 2),
        "written_kib": round(written / 1024, 1),
        "written_kib_per_event": round(written / 1024 / max(units, 1), 2),
        "wchar_kib": round(handed / 1024, 1),
        "wchar_kib_per_event": round(handed / 1024 / max(units, 1), 2),
        "written_mb_per_h_at_rate": round(written / 2**20 / span * 3600, 2),
        "wal_max_kib": round(wal_max / 1024, 1),
        "db_kib_at_end": round(db_bytes / 1024, 1),
        "rows_left": rows_left,
        "elapsed_s": round(elapsed, 2),
    }


def disk_report(
    events: int, heartbeats: int, devices: int, rate: float, *, offline: bool = False, max_bytes: int = 0
) -> dict[str, Any]:
    """Alarm events alone, heartbeats alone (their costs per unit), and the two mixed as in the soak;
    with `offline`, heartbeats alone with the link down. `max_bytes` 0: the default bound."""
    bound = max_bytes or DEFAULT_MAX_BYTES
    if offline:
        return {
            "heartbeats_offline": outbox_writes(0, heartbeats, devices, rate, offline=True, max_bytes=bound)
        }
    return {
        "alarms": outbox_writes(events, 0, devices, rate),
        "heartbeats": outbox_writes(0, heartbeats, devices, rate),
        "mix": outbox_writes(events, heartbeats, devices, rate),
    }
