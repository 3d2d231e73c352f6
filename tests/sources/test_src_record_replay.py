"""Record → replay round trip, rotation bounds, replay pacing, and the `edge-agent record` command."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from agent.cli import main as cli_main
from agent.config.schema import DeviceConfig, EpisodeConfig, ReplayConfig, SimulatorConfig
from agent.readings import Quality, Reading
from agent.simulation.source import simulate
from agent.sources import open_source
from agent.sources.record import ReadingRecorder, read_recording, recording_files
from agent.sources.replay import ReplaySource

START = 1_700_000_000.0


def simulated(seconds: float = 120.0) -> list[Reading]:
    device = DeviceConfig(
        id="bed-9",
        kind="wearable",
        transport="simulator",
        simulator=SimulatorConfig(seed=5, ecg=True, episodes=(EpisodeConfig("contact_loss", 30.0, 20.0),)),
    )
    readings, _ = simulate(device, seconds, START)
    return readings


def replay_device(path: Path, speed: float = 0.0, device_id: str = "bed-9") -> DeviceConfig:
    return DeviceConfig(id=device_id, kind="wearable", transport="replay", replay=ReplayConfig(path, speed))


def same(a: Reading, b: Reading) -> bool:
    return (
        a.stream == b.stream
        and a.channels == b.channels
        and np.array_equal(a.values, b.values, equal_nan=True)
        and a.wall_time == b.wall_time
        and a.period_s == b.period_s
        and a.quality == b.quality
    )


@pytest.mark.parametrize("compress", [False, True])
def test_record_then_replay_gives_back_identical_readings(tmp_path: Path, compress: bool) -> None:
    readings = simulated()
    assert any(r.quality & Quality.NO_CONTACT for r in readings) and any(r.n_samples > 1 for r in readings)
    with ReadingRecorder(tmp_path, max_file_bytes=128 * 1024, max_files=100, compress=compress) as recorder:
        for r in readings:
            recorder.write(r)
    assert len(recording_files(tmp_path)) > 1  # rotation happened; order is kept across files
    assert {f.stat().st_mode & 0o777 for f in recording_files(tmp_path)} == {0o600}  # raw patient data

    async def replay() -> list[Reading]:
        async with open_source(replay_device(tmp_path)) as source:
            assert isinstance(source, ReplaySource)
            return [r async for r in source]

    back = asyncio.run(replay())
    assert len(back) == len(readings)
    assert all(same(a, b) for a, b in zip(readings, back, strict=True))


def test_replay_renames_the_device_and_paces_by_recorded_time(tmp_path: Path) -> None:
    readings = [r for r in simulated(10.0) if r.stream.endswith("/vitals")]
    with ReadingRecorder(tmp_path) as recorder:
        for r in readings:
            recorder.write(r)
    now = [0.0]
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    async def replay() -> list[Reading]:
        source = ReplaySource(
            replay_device(tmp_path, speed=2.0, device_id="replayed"), clock=lambda: now[0], sleep=sleep
        )
        async with source:
            return [r async for r in source]

    back = asyncio.run(replay())
    assert {r.stream for r in back} == {"replayed/vitals"}
    span = readings[-1].wall_time - readings[0].wall_time
    assert now[0] == pytest.approx(span / 2.0)  # at 2x, 9 recorded seconds take 4.5 s
    assert len(slept) == len(readings) - 1


def test_rotation_keeps_the_folder_within_its_bound(tmp_path: Path) -> None:
    readings = simulated(300.0)
    max_file, max_files = 64 * 1024, 3
    with ReadingRecorder(tmp_path, max_file_bytes=max_file, max_files=max_files) as recorder:
        for i, r in enumerate(readings):
            recorder.write(r)
            if i % 500 == 0:
                recorder.flush()
                sizes = [p.stat().st_size for p in recording_files(tmp_path)]
                assert len(sizes) <= max_files and all(s <= max_file for s in sizes)
    files = recording_files(tmp_path)
    assert len(files) == max_files and sum(p.stat().st_size for p in files) <= max_files * max_file
    assert files[0].name > "readings-000003.jsonl"  # the oldest were deleted
    kept = list(read_recording(tmp_path))
    assert kept and all(same(a, b) for a, b in zip(readings[-len(kept) :], kept, strict=True))
    # a restarted recorder continues the numbering instead of overwriting
    with ReadingRecorder(tmp_path, max_file_bytes=max_file, max_files=max_files) as again:
        again.write(readings[0])
    assert recording_files(tmp_path)[-1].name > files[-1].name


def test_edge_agent_record_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""
[gateway]
id = "gw-rec"
site = "lab"
state_dir = "{tmp_path / "state"}"
[mqtt]
url = "mqtt://127.0.0.1:1883"
[outbox]
path = "{tmp_path / "outbox.sqlite"}"
[[devices]]
id = "bed-1"
kind = "wearable"
transport = "simulator"
[devices.simulator]
speed = 200.0
[[devices]]
id = "pump-1"
kind = "equipment"
transport = "simulator"
""",
        encoding="utf-8",
    )
    out = tmp_path / "rec"
    started = time.monotonic()
    code = cli_main(["record", "-c", str(config), "-o", str(out), "--device", "bed-1", "--duration", "1.5"])
    assert code == 0 and time.monotonic() - started < 15
    recorded = list(read_recording(out))
    assert len(recorded) > 100 and {r.device for r in recorded} == {"bed-1"}
    assert "recorded" in capsys.readouterr().out
    # a replay device is accepted by check-config, so `edge-agent run` can take the recording
    config.write_text(
        config.read_text().replace(
            'transport = "simulator"\n[devices.simulator]\nspeed = 200.0',
            f'transport = "replay"\n[devices.replay]\npath = "{out / recording_files(out)[0].name}"',
        ),
        encoding="utf-8",
    )
    assert cli_main(["check-config", str(config)]) == 0
    assert cli_main(["record", "-c", str(config), "-o", str(out), "--device", "nope"]) == 2
