"""The two workloads of the pipeline benchmark, as an `AgentConfig` plus readings in arrival order.

- "vitals": wearables sending hr/spo2/skin_temp at 1 Hz, watched by limit detectors (hr high/low, SpO2
  low) and a robust z-score over hr+spo2 (60 s window, 1 s hop), each with an alarm rule; the pipeline
  adds its technical quality alarms (sensor off, signal poor, battery, fault) on every stream.
- "ecg": a 250 Hz single-lead ECG scored every 8 samples by an autoencoder on a sliding window of raw
  samples: by default `models/ecg-window` (2 s = 500 × 1 input, trained on sliding 250 Hz MIT-BIH windows:
  the workload it was made for). `ecg-beat` (64 × 1; `--ecg-model ecg-beat`) keeps the figures before
  2026-12-01 comparable: it was trained on beat-centred, resampled windows, so its scores on a sliding
  window mean nothing clinically and it runs with the config's `input = "beats"` (cost only). The
  simulator's 25-sample ECG blocks are re-cut into readings of `frame` samples, by default 8 (32 ms
  frames, one hop each: the figures before 2026-11-29 were taken so); a longer frame is split into hops
  by the detector, as a Polar H10's 73-sample frames are, and costs fewer readings per window.

Readings are simulated for a few distinct seeds and tiled to N streams by renaming the device, which
keeps generation cheap; each copy plays its seed's recording from its own starting point (wrapping
round), so episodes do not start in the same second on every copy, and is offset by a fraction of a
reading, so devices are not phase-locked. They are produced in time order, as the daemon's queue
sees them. Some
seeds carry episodes (tachycardia, desaturation, contact loss, stuck sensor) so quality gating and
alarms do real work; dropouts are left out of the ECG re-cut (a gap would split a frame).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.config import AgentConfig, parse_config
from agent.config.schema import EpisodeConfig, SimulatorConfig
from agent.readings import Quality, Reading
from agent.simulation import simulate

ROOT = Path(__file__).resolve().parents[2]
ECG_MODELS = {name: ROOT / "models" / name for name in ("ecg-window", "ecg-beat")}
ECG_MODEL = ECG_MODELS["ecg-window"]  # the default; made for a sliding 250 Hz window
ECG_HOP = 8
ECG_HZ = 250.0
START_TIME = 1_700_000_000.0
DISTINCT_SEEDS = 8  # simulated devices; streams beyond this reuse their signals under other names
QUIET_SEEDS = (0, 2, 4, 7)  # seeds without vitals episodes

# Episodes of the distinct seeds (seed index -> episodes); the rest run normal.
VITALS_EPISODES: dict[int, tuple[EpisodeConfig, ...]] = {
    1: (EpisodeConfig("tachycardia", 20.0, 60.0),),
    3: (EpisodeConfig("contact_loss", 30.0, 30.0),),
    5: (EpisodeConfig("spo2_desaturation", 40.0, 60.0),),
    6: (EpisodeConfig("stuck_sensor", 10.0, 40.0),),
}
ECG_EPISODES: dict[int, tuple[EpisodeConfig, ...]] = {
    2: (EpisodeConfig("af", 2.0, 30.0),),
    4: (EpisodeConfig("contact_loss", 4.0, 3.0),),
}


def _base(workdir: Path, broker_port: int) -> dict[str, Any]:
    return {
        "gateway": {"id": "gw-bench", "site": "lab", "state_dir": str(workdir / "state")},
        "mqtt": {"url": f"mqtt://127.0.0.1:{broker_port}", "max_inflight": 20},
        "outbox": {"path": str(workdir / "outbox.sqlite")},
        "devices": [{"id": "d0", "kind": "wearable", "transport": "simulator", "simulator": {"seed": 0}}],
    }


def vitals_config(workdir: Path, broker_port: int = 1883, *, instant: bool = False) -> AgentConfig:
    """The vitals workload. `instant`: tachycardia starts on the first abnormal hop (latency probes)."""
    hold = 10.0
    table = _base(workdir, broker_port)
    table["detectors"] = [
        {"id": "hr-high", "type": "limit", "stream": "vitals", "channels": ["hr"], "params": {"above": 120}},
        {"id": "hr-low", "type": "limit", "stream": "vitals", "channels": ["hr"], "params": {"below": 40}},
        {
            "id": "spo2-low",
            "type": "limit",
            "stream": "vitals",
            "channels": ["spo2"],
            "params": {"below": 90},
        },
        {
            "id": "vitals-z",
            "type": "robust_z",
            "stream": "vitals",
            "channels": ["hr", "spo2"],
            "params": {"window_s": 60, "hop_s": 1, "threshold": 6},
        },
    ]
    table["alarms"] = [
        {
            "condition": "tachycardia",
            "detector": "hr-high",
            "min_duration_s": 0.0 if instant else hold,
            "hysteresis": 5,
        },
        {"condition": "bradycardia", "detector": "hr-low", "min_duration_s": hold, "hysteresis": 3},
        {"condition": "spo2_low", "detector": "spo2-low", "min_duration_s": hold, "hysteresis": 1},
        {"condition": "vitals_unusual", "detector": "vitals-z", "priority": "low", "min_duration_s": hold},
    ]
    return parse_config(table, base_dir=workdir)


def ecg_config(
    workdir: Path, backend: str = "onnx", broker_port: int = 1883, model: str = "ecg-window"
) -> AgentConfig:
    """The ECG workload's config with `model` (a key of ECG_MODELS)."""
    table = _base(workdir, broker_port)
    table["detectors"] = [
        {
            "id": "ecg-ae",
            "type": "autoencoder",
            "stream": "ecg",
            "channels": ["MLII"],
            "rate_hz": ECG_HZ,
            "params": {
                "model": str(ECG_MODELS[model]),
                "backend": backend,
                "precision": "int8",
                "hop_s": ECG_HOP / ECG_HZ,
            }
            # ecg-beat's input is beat windows; the bench feeds it raw ECG windows of its shape and
            # measures cost only (the scores mean nothing), so it states the input the card needs.
            | ({"input": "beats"} if model == "ecg-beat" else {}),
        }
    ]
    table["alarms"] = [{"condition": "ecg_unusual", "detector": "ecg-ae", "min_duration_s": 1.0}]
    return parse_config(table, base_dir=workdir)


Alter = Callable[[int, int, Reading], Reading]


class Workload:
    """N streams of one kind, tiled from DISTINCT_SEEDS simulated devices and produced step by step, so
    a run over thousands of streams never holds more than one chunk of readings."""

    def __init__(
        self,
        kind: str,
        streams: int,
        seconds: float,
        faults: bool = True,
        frame: int = ECG_HOP,
        ecg_model: str = "ecg-window",
        apart: bool = False,
    ) -> None:
        ecg = kind == "ecg"
        self.ecg_model = ecg_model  # the ECG autoencoder the pipeline is built with (ECG_MODELS)
        self._tracks = (_tracks_apart if apart else _tracks)(ecg, seconds, faults, frame)
        steps = len(self._tracks[0])
        self.name = kind
        self.streams = streams
        self.rate_hz = ECG_HZ if ecg else 1.0  # samples per second of one stream
        self.step_s = frame / ECG_HZ if ecg else 1.0  # one reading per stream per step
        self.steps = steps
        # Devices are not phase-locked: each stream is offset by a fraction of a step (golden ratio).
        offsets = [((s * 0.6180339887) % 1.0) * self.step_s for s in range(streams)]
        self._order = sorted(range(streams), key=lambda s: offsets[s])
        # Copies of one seed play its recording from different points, so that their episodes (and
        # alarms) do not all start in the same second.
        self._shifts = [(s // DISTINCT_SEEDS) * 7919 % steps for s in range(streams)]
        self._offsets = offsets
        self._names = [f"dev{s:05d}/{kind}" for s in range(streams)]

    def step_of(self, seconds: float) -> int:
        return min(self.steps, round(seconds / self.step_s))

    def readings(self, first: int, last: int, alter: Alter | None = None) -> list[Reading]:
        """Every stream's readings of steps [first, last), in time order; `alter(stream index, step,
        reading)` may replace any of them (latency probes)."""
        out: list[Reading] = []
        for k in range(first, min(last, self.steps)):
            out.extend(self.step_slice(k, 0, self.streams, alter))
        return out

    def step_slice(self, k: int, lo: int, hi: int, alter: Alter | None = None) -> list[Reading]:
        """The readings of step `k` at positions [lo, hi) of its time order (for feeding at real
        rate without making up a whole step at once)."""
        tracks, steps = self._tracks, self.steps
        base = tracks[0].wall_time(k)
        out = []
        for s in self._order[lo:hi]:
            r = tracks[s % DISTINCT_SEEDS].reading(
                (k + self._shifts[s]) % steps, self._names[s], base + self._offsets[s]
            )
            out.append(r if alter is None else alter(s, k, r))
        return out

    def chunks(self, first: int, last: int, steps: int) -> Iterator[list[Reading]]:
        for k in range(first, min(last, self.steps), steps):
            yield self.readings(k, min(k + steps, last))


class _Track:
    """One seed's readings packed into arrays: as a list of small `Reading`s the 100-stream RSS bench's
    input took 11.5 MB (about 650 bytes a reading), counted in the process's peak though no gateway
    holds it. Every reading is made up again, equal field by field, when a step asks for it."""

    def __init__(self, readings: Sequence[Reading]) -> None:
        first = readings[0]
        if any(
            (r.channels, r.values.shape, r.period_s) != (first.channels, first.values.shape, first.period_s)
            for r in readings
        ):
            raise ValueError("a track's readings must share channels, shape and period")
        self._channels, self._period_s = first.channels, first.period_s
        self._values = np.stack([r.values for r in readings])
        self._wall_times = np.array([r.wall_time for r in readings], np.float64)
        self._qualities = np.array([int(r.quality) for r in readings], np.int64)

    def __len__(self) -> int:
        return len(self._wall_times)

    def wall_time(self, k: int) -> float:
        return float(self._wall_times[k])

    def reading(self, k: int, stream: str, wall_time: float) -> Reading:
        """Reading `k` as stream `stream` at `wall_time`, arrival 0 (its source's units dropped)."""
        return Reading(
            stream,
            self._channels,
            self._values[k],
            wall_time,
            0.0,
            self._period_s,
            Quality(int(self._qualities[k])),
        )


def _tracks(ecg: bool, seconds: float, faults: bool, frame: int) -> list[_Track]:
    """The DISTINCT_SEEDS simulated recordings, cut to one length and packed."""
    episodes = (ECG_EPISODES if ecg else VITALS_EPISODES) if faults else {}
    per_seed = _simulated(ecg, seconds, episodes)
    if ecg:
        per_seed = [_recut_ecg(r, frame) for r in per_seed]
    steps = min(len(r) for r in per_seed)
    return [_Track(r[:steps]) for r in per_seed]


def _tracks_apart(ecg: bool, seconds: float, faults: bool, frame: int) -> list[_Track]:
    """`_tracks` made in a forked child: simulating leaves this process's heap fragmented (about 10 MB
    of RSS after 100 streams' input, though 2 MB of it is live), and the memory bench counts the whole
    process. Only the packed arrays come back."""
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        return pool.apply(_tracks, (ecg, seconds, faults, frame))


def _simulated(
    ecg: bool, seconds: float, episodes: dict[int, tuple[EpisodeConfig, ...]]
) -> list[list[Reading]]:
    """Readings of DISTINCT_SEEDS simulated wearables (only the benchmarked stream)."""
    cfg = parse_config(_base(Path("/tmp"), 1883), base_dir=Path("/tmp"))
    template = cfg.devices[0]
    out = []
    for seed in range(DISTINCT_SEEDS):
        sim = SimulatorConfig(seed=seed, ecg=ecg, episodes=episodes.get(seed, ()))
        device = dataclasses.replace(template, id=f"seed{seed}", simulator=sim)
        readings, _ = simulate(device, seconds, START_TIME)
        wanted = "/ecg" if ecg else "/vitals"
        out.append([r for r in readings if r.stream.endswith(wanted)])
    return out


def _recut_ecg(readings: Sequence[Reading], frame: int) -> list[Reading]:
    """Contiguous 25-sample blocks re-cut into `frame`-sample readings on channel "MLII"."""
    period = 1.0 / ECG_HZ
    values = np.concatenate([r.values for r in readings])
    quality = np.concatenate([np.full(r.n_samples, int(r.quality), np.int64) for r in readings])
    t0 = readings[0].wall_time
    out = []
    for i in range(0, values.shape[0] - frame + 1, frame):
        flags = Quality(int(np.bitwise_or.reduce(quality[i : i + frame])))
        out.append(
            Reading("x/ecg", ("MLII",), values[i : i + frame].copy(), t0 + i * period, 0.0, period, flags)
        )
    return out


def workload(
    kind: str,
    streams: int,
    seconds: float,
    faults: bool = True,
    frame: int = ECG_HOP,
    ecg_model: str = "ecg-window",
    apart: bool = False,
) -> Workload:
    """`streams` streams of `kind` ("vitals" or "ecg") for `seconds` simulated seconds; `faults`:
    with the episodes above (about half the streams go through one within a recording); `frame`: ECG
    samples per reading; `ecg_model`: the ECG autoencoder (a key of ECG_MODELS); `apart`: simulate in
    a forked child, so that this process keeps only the packed recordings."""
    return Workload(kind, streams, seconds, faults, frame, ecg_model, apart)
