"""Memory: peak RSS of a gateway process with N streams (one fresh process per runtime), and a soak of the
real daemon with faults, sampling its RSS, open file descriptors and threads.

RSS: a child process builds what the daemon builds for N wearables that each send 1 Hz vitals and a
250 Hz ECG (the vitals detectors of `scenarios.vitals_config` plus the ecg-window autoencoder on the
ECG, with the one runtime asked for), opens an outbox and an MQTT uplink object (sqlite3 and paho
loaded, not connected), and plays `seconds` simulated seconds of both workloads through the pipeline.
It reports VmHWM (peak RSS) and VmRSS at the end, and the RSS of a bare `python -c "import numpy"`
for comparison. A child per runtime, so one runtime's libraries never count against the other.

Soak: `edge-agent run` in a subprocess against a private mosquitto, with N replay devices playing
four recordings made by the simulator (vitals, RR and an 8-sample-frame ECG on channel "MLII" so the
autoencoder runs) at real speed. The recordings carry faults (tachycardia, AF, desaturation, contact
loss, stuck sensor, and dropouts long enough to raise "device_lost"); halfway through, the broker is
restarted, so the uplink reconnects and drains its backlog. Every `every_s` seconds the parent reads
the daemon's /proc status (VmRSS, Threads) and counts /proc/<pid>/fd. Growth is judged on the second
half of the run (after the windows, caches and the outbox have settled).
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent.config.schema import EpisodeConfig, SimulatorConfig
from agent.readings import Quality, Reading
from tools.bench.scenarios import ECG_HOP, ECG_HZ, ECG_MODEL, START_TIME

ROOT = Path(__file__).resolve().parents[2]


def _pseudonym(device: str, prefix: str = "d") -> str:
    """A readable stand-in for the keyed pseudonym (the HMAC is not what is measured)."""
    return f"{prefix}-{device}"


def _status(pid: int | str = "self") -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(rest.split()[0])
    return out


# -- RSS ---------------------------------------------------------------------------------------------


def _reset_peak_rss() -> None:
    """Sets VmHWM back to the current RSS (Linux >= 4.0, `clear_refs` value 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def rss_child(backend: str, streams: int, seconds: float, ecg_model: str = "ecg-window") -> dict[str, Any]:
    """Runs in the fresh child process. The bench's input (the simulated recordings the workloads
    replay) is made first, in a forked child (`apart`), and the peak is reset after it: simulating the
    devices is not the gateway's work, and its transient peak and the heap it left fragmented used to
    count as the gateway's. The packed recordings it keeps still count (`input_mb`: RSS growth while
    they were made), so `peak_rss_mb` is the whole process's peak."""
    import gc

    from agent.outbox import Outbox
    from agent.pipeline import Pipeline
    from agent.uplink.mqtt import MqttUplink
    from agent.uplink.topics import Topics
    from tools.bench.scenarios import ecg_config, vitals_config, workload

    before_input = _status()["VmRSS"]
    v_load = workload("vitals", streams, seconds, apart=True)
    e_load = workload("ecg", streams, seconds, apart=True)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand back what simulating freed (glibc keeps it otherwise)
    input_kb = max(0, _status()["VmRSS"] - before_input)  # a tiny input can measure below the noise: 0
    _reset_peak_rss()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        vitals, ecg = vitals_config(workdir), ecg_config(workdir, backend, model=ecg_model)
        cfg = dataclasses.replace(
            vitals, detectors=vitals.detectors + ecg.detectors, alarms=vitals.alarms + ecg.alarms
        )
        pipeline = Pipeline(cfg, _pseudonym)
        outbox = Outbox(cfg.outbox)
        uplink = MqttUplink(cfg.mqtt, Topics(cfg.mqtt.topic_prefix, "lab", "gw-bench"), outbox, 1)
        per_s = round(1.0 / e_load.step_s)
        events = 0
        for k in range(int(seconds) - 1):  # one simulated second at a time: vitals, then its ECG
            events += len(pipeline.ingest(v_load.readings(k, k + 1)))
            events += len(pipeline.ingest(e_load.readings(k * per_s, (k + 1) * per_s)))
        status = _status()
        outbox.close()
        del uplink
    return {
        "backend": backend,
        "ecg_model": ecg_model,
        "streams": streams,
        "peak_rss_mb": round(status["VmHWM"] / 1024, 1),
        "rss_mb": round(status["VmRSS"] / 1024, 1),
        "input_mb": round(input_kb / 1024, 1),
        "peak_without_input_mb": round((status["VmHWM"] - input_kb) / 1024, 1),
        "events": events,
    }


def _bare_python_rss_mb() -> float:
    code = (
        "import numpy, pathlib; "
        "print(next(l for l in pathlib.Path('/proc/self/status').read_text().splitlines()"
        " if l.startswith('VmHWM')).split()[1])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return round(int(out.stdout) / 1024, 1)


def rss_per_backend(
    streams: int, seconds: float, backends: list[str], ecg_model: str = "ecg-window"
) -> dict[str, Any]:
    result: dict[str, Any] = {"python_numpy_only_mb": _bare_python_rss_mb()}
    for backend in backends:
        command = [
            sys.executable,
            "-m",
            "tools.bench.memory",
            "rss-child",
            backend,
            str(streams),
            str(seconds),
            ecg_model,
        ]
        out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
        result[backend] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"rss {backend}: {result[backend]}", file=sys.stderr)
    return result


# -- soak --------------------------------------------------------------------------------------------

SOAK_EPISODES: tuple[tuple[EpisodeConfig, ...], ...] = (
    (EpisodeConfig("tachycardia", 60, 120), EpisodeConfig("dropout", 400, 45)),
    (EpisodeConfig("contact_loss", 90, 60), EpisodeConfig("af", 300, 180)),
    (EpisodeConfig("spo2_desaturation", 150, 90), EpisodeConfig("stuck_sensor", 420, 120)),
    (EpisodeConfig("dropout", 200, 40), EpisodeConfig("contact_loss", 500, 30)),
)


def _recut_runs(readings: list[Reading], hop: int) -> list[Reading]:
    """ECG blocks re-cut into `hop`-sample readings on "MLII", run by contiguous run (a dropout
    leaves a gap rather than being glued over)."""
    period = 1.0 / ECG_HZ
    out: list[Reading] = []
    run: list[Reading] = []

    def cut(run: list[Reading]) -> None:
        if not run:
            return
        values = np.concatenate([r.values for r in run])
        quality = np.concatenate([np.full(r.n_samples, int(r.quality), np.int64) for r in run])
        t0 = run[0].wall_time
        for i in range(0, values.shape[0] - hop + 1, hop):
            flags = Quality(int(np.bitwise_or.reduce(quality[i : i + hop])))
            out.append(
                Reading(
                    run[0].stream, ("MLII",), values[i : i + hop].copy(), t0 + i * period, 0.0, period, flags
                )
            )

    for r in readings:
        if run and abs(r.wall_time - (run[-1].wall_time + run[-1].n_samples * period)) > period / 2:
            cut(run)
            run = []
        run.append(r)
    cut(run)
    return out


def write_recordings(folder: Path, seconds: float) -> list[Path]:
    """Four recordings (vitals, rr, MLII ECG) of `seconds`, each with its own faults."""
    from agent.config import parse_config
    from agent.simulation import simulate
    from agent.sources.record import encode_reading, header_line

    base = parse_config(
        {
            "gateway": {"id": "g", "site": "s"},
            "mqtt": {"url": "mqtt://127.0.0.1:1883"},
            "outbox": {"path": "o.sqlite"},
            "devices": [{"id": "x", "kind": "wearable", "transport": "simulator"}],
        },
        base_dir=folder,
    ).devices[0]
    paths = []
    for i, episodes in enumerate(SOAK_EPISODES):
        device = dataclasses.replace(
            base, id=f"rec{i}", simulator=SimulatorConfig(seed=100 + i, ecg=True, episodes=episodes)
        )
        readings, _ = simulate(device, seconds, START_TIME)
        ecg = _recut_runs([r for r in readings if r.stream.endswith("/ecg")], ECG_HOP)
        rest = [r for r in readings if not r.stream.endswith("/ecg")]
        merged = sorted(rest + ecg, key=lambda r: r.wall_time)
        path = folder / f"rec{i}"
        path.mkdir()
        with (path / "readings-000001.jsonl").open("w") as f:
            f.write(header_line() + "\n")
            for r in merged:
                f.write(encode_reading(r) + "\n")
        paths.append(path)
    return paths


def _soak_config(workdir: Path, port: int, devices: int, recordings: list[Path]) -> str:
    lines = [
        "[gateway]",
        'id = "gw-soak"',
        'site = "lab"',
        "heartbeat_interval_s = 30",
        f'state_dir = "{workdir / "state"}"',
        "[mqtt]",
        f'url = "mqtt://127.0.0.1:{port}"',
        "[outbox]",
        f'path = "{workdir / "outbox.sqlite"}"',
    ]
    for d in range(devices):
        lines += [
            "[[devices]]",
            f'id = "bed-{d:03d}"',
            'kind = "wearable"',
            'transport = "replay"',
            "lost_after_s = 20",
            "[devices.replay]",
            f'path = "{recordings[d % len(recordings)]}"',
            "speed = 1.0",
        ]
    detectors = [
        ("hr-high", "limit", "vitals", '["hr"]', 1.0, "{ above = 120 }"),
        ("hr-low", "limit", "vitals", '["hr"]', 1.0, "{ below = 40 }"),
        ("spo2-low", "limit", "vitals", '["spo2"]', 1.0, "{ below = 90 }"),
        (
            "vitals-z",
            "robust_z",
            "vitals",
            '["hr", "spo2"]',
            1.0,
            "{ window_s = 60, hop_s = 1, threshold = 6 }",
        ),
        (
            "ecg-ae",
            "autoencoder",
            "ecg",
            '["MLII"]',
            ECG_HZ,
            f'{{ model = "{ECG_MODEL}", backend = "onnx", precision = "int8", hop_s = {ECG_HOP / ECG_HZ} }}',
        ),
    ]
    for det_id, kind, stream, channels, rate, params in detectors:
        lines += [
            "[[detectors]]",
            f'id = "{det_id}"',
            f'type = "{kind}"',
            f'stream = "{stream}"',
            f"channels = {channels}",
            f"rate_hz = {rate}",
            f"params = {params}",
        ]
    for condition, det_id in (
        ("tachycardia", "hr-high"),
        ("bradycardia", "hr-low"),
        ("spo2_low", "spo2-low"),
        ("vitals_unusual", "vitals-z"),
        ("ecg_unusual", "ecg-ae"),
    ):
        lines += ["[[alarms]]", f'condition = "{condition}"', f'detector = "{det_id}"', "min_duration_s = 10"]
    return "\n".join(lines) + "\n"


def _io(pid: int) -> dict[str, int]:
    """/proc/<pid>/io: `wchar` (bytes handed to write()) and `write_bytes` (bytes sent to the block
    device, what wears an SD card)."""
    fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return {"wchar": int(fields["wchar"]), "write_bytes": int(fields["write_bytes"])}


def _backlog(workdir: Path) -> dict[str, float]:
    """Readings waiting in the daemon's queue and alarm events held in memory, from its status socket:
    RSS that grows with them is a backlog (the machine too busy for the load), bounded by the queue,
    not a leak."""
    from agent.status import read_status

    found = read_status(workdir / "state")
    if found is None or found.source != "live":
        return {}
    status = found.status
    return {"queue": status.get("queue", -1), "held": status.get("outbox", {}).get("held_in_memory", -1)}


def _sample(pid: int) -> dict[str, float]:
    try:
        status, io = _status(pid), _io(pid)
        fds = sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
    except PermissionError:  # the agent clears its dumpable flag (no core dumps of patient ids)
        raise SystemExit(
            f"soak: cannot read /proc/{pid}/io and fd: the agent is not dumpable (docs/security.md, core "
            "dumps), so only root may read them: run the soak as root"
        ) from None
    return {
        "rss_mb": round(status["VmRSS"] / 1024, 1),
        "threads": status["Threads"],
        "fds": fds,
        "written_mb": round(io["write_bytes"] / 2**20, 2),
        "wchar_mb": round(io["wchar"] / 2**20, 2),
    }


def soak(minutes: float, devices: int, every_s: float) -> dict[str, Any]:
    from agent.localbroker import LocalBroker

    seconds = minutes * 60.0
    with tempfile.TemporaryDirectory() as tmp, LocalBroker(persistence=True) as broker:
        workdir = Path(tmp)
        print(f"soak: writing recordings of {seconds + 120:.0f} s", file=sys.stderr)
        recordings = write_recordings(workdir, seconds + 120.0)
        config = workdir / "soak.toml"
        config.write_text(_soak_config(workdir, broker.port, devices, recordings))
        log = (workdir / "agent.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        samples: list[dict[str, float]] = []
        t0 = time.monotonic()
        restarted = False
        cpu0 = _cpu_s(proc.pid)
        try:
            while time.monotonic() - t0 < seconds:
                time.sleep(min(every_s, max(0.0, seconds - (time.monotonic() - t0))))
                if proc.poll() is not None:
                    break
                sample = {"t_s": round(time.monotonic() - t0), **_sample(proc.pid), **_backlog(workdir)}
                samples.append(sample)
                print(f"soak {sample}", file=sys.stderr, flush=True)
                if not restarted and time.monotonic() - t0 > seconds / 2:
                    broker.restart()  # an uplink fault: the agent reconnects and drains its backlog
                    restarted = True
            if proc.poll() is not None:
                log.flush()
                tail = (workdir / "agent.log").read_text().splitlines()[-20:]
                raise RuntimeError("the agent stopped during the soak:\n" + "\n".join(tail))
            cpu = _cpu_s(proc.pid) - cpu0
            wall = time.monotonic() - t0
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
        tail = (workdir / "agent.log").read_text().splitlines()
        alarms = sum(1 for line in tail if " alarm " in line or "alarm start" in line.lower())
    half = samples[len(samples) // 2 :]
    return {
        "minutes": minutes,
        "devices": devices,
        "exit_code": code,
        "cpu_share": round(cpu / wall, 3),
        "samples": samples,
        "second_half": {
            key: {"min": min(s[key] for s in half), "max": max(s[key] for s in half)}
            for key in ("rss_mb", "threads", "fds")
        }
        if half
        else {},
        "written_mb_per_h": _per_hour(half, "written_mb"),
        "wchar_mb_per_h": _per_hour(half, "wchar_mb"),
        "alarm_log_lines": alarms,
        "log_tail": tail[-5:],
    }


def _per_hour(samples: list[dict[str, float]], key: str) -> float | None:
    """The growth rate of a cumulative counter over `samples`, per hour (the agent's log, written to
    a file here, counts too; under systemd it goes to the journal instead)."""
    if len(samples) < 2 or samples[-1]["t_s"] == samples[0]["t_s"]:
        return None
    return round((samples[-1][key] - samples[0][key]) / (samples[-1]["t_s"] - samples[0]["t_s"]) * 3600, 1)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    if sys.argv[1] == "rss-child":
        print(json.dumps(rss_child(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])))
