"""The real daemon saves its ECG devices' beat-shape templates with its state and a restart goes on with
them (agent.ecg.kept_shapes), unless the break is too long, the device's config changed or the saved
entry is damaged: then they start afresh, with a line saying why, and the start goes on. Sealed with the
rest of the state when the outbox is encrypted.

A simulated ECG wearable (`[devices.beats]`, speed 10) runs for a few seconds, the agent stops (its last
save), and starts again on the same state folder; no broker (the uplink keeps trying).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config
from agent.daemon import Agent
from agent.ecg.kept_shapes import SAVED_KEY

CONFIG = """
[gateway]
id = "gw-keep"
site = "lab"
state_dir = "state"
heartbeat_interval_s = 0.5

[mqtt]
url = "mqtt://127.0.0.1:{port}"

[outbox]
path = "state/outbox.sqlite"
{key}

[[devices]]
id = "patch-1"
kind = "wearable"
transport = "simulator"
patient = "{patient}"
[devices.simulator]
seed = 11
speed = 10.0
ecg = true
[devices.beats]
rr_stream = "ecg_rr"

[[detectors]]
id = "vt"
type = "ventricular_run"
stream = "ecg_rr"
channels = ["rr", "qrs_shape", "qrs_core"]
rate_hz = 1.0
"""
RUN_S = 3.0  # 30 s of ECG at speed 10: ~35 beats, the templates are made
GO_ON = "beat-shape templates go on from the previous stage's"


def no_broker_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_agent(tmp_path: Path, patient: str = "MRN-1", key: bool = False, run_s: float = RUN_S) -> None:
    path = tmp_path / "agent.toml"
    line = 'encryption_key_file = "state/outbox.key"' if key else ""
    path.write_text(CONFIG.format(port=no_broker_port(), patient=patient, key=line))
    daemon = Agent(load_config(path))

    async def main() -> None:
        asyncio.get_running_loop().call_later(run_s, daemon.stopping.set)
        await daemon.run()

    asyncio.run(main())


def saved_state(tmp_path: Path) -> dict[str, Any]:
    state: dict[str, Any] = json.loads((tmp_path / "state" / "pipeline.json").read_text())
    return state


@pytest.fixture
def first_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    run_agent(tmp_path)
    return tmp_path


def test_a_restart_goes_on_with_the_saved_templates(
    first_run: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (entry,) = saved_state(first_run)[SAVED_KEY].values()
    assert entry["shapes"]["whole"] >= 8 and "MRN" not in json.dumps(entry)
    with caplog.at_level(logging.INFO):
        run_agent(first_run, run_s=1.0)
    assert GO_ON in caplog.text


def test_a_changed_device_starts_afresh(first_run: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        run_agent(first_run, patient="MRN-2", run_s=1.0)
    assert "beat-shape templates start afresh: its config or the beat channels read changed" in caplog.text
    assert GO_ON not in caplog.text


def test_templates_saved_more_than_a_minute_ago_start_afresh(
    first_run: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = saved_state(first_run)
    for entry in state[SAVED_KEY].values():
        entry["ended_at"] -= 400.0  # the simulator runs ahead of the clock: its last block was ~25 s ahead
    (first_run / "state" / "pipeline.json").write_text(json.dumps(state))
    with caplog.at_level(logging.INFO):
        run_agent(first_run, run_s=1.0)
    assert "beat-shape templates start afresh: the saved ones are " in caplog.text
    assert "s old (kept under 60 s)" in caplog.text
    assert GO_ON not in caplog.text


@pytest.mark.parametrize("damage", ["garbage", "nan"])
def test_a_damaged_entry_starts_afresh_and_the_start_goes_on(
    first_run: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    state = saved_state(first_run)
    for name, entry in state[SAVED_KEY].items():
        if damage == "garbage":
            state[SAVED_KEY][name] = {"version": 1, "shapes": "\x00"}
        else:
            entry["shapes"]["cores"] = "AADAfw==" * 39  # float32 NaNs
    (first_run / "state" / "pipeline.json").write_text(json.dumps(state))
    with caplog.at_level(logging.INFO):
        run_agent(first_run, run_s=1.0)
    assert "the saved beat-shape templates cannot be read" in caplog.text
    assert GO_ON not in caplog.text
    assert "moved to" not in caplog.text  # the rest of the state is restored, not set aside
    assert "stopped cleanly" in caplog.text


def test_sealed_with_the_state_when_the_outbox_is_encrypted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    run_agent(tmp_path, key=True)
    assert not (tmp_path / "state" / "pipeline.json").exists()
    sealed = (tmp_path / "state" / "pipeline.json.sealed").read_bytes()
    assert b"windows" not in sealed and b"beat_shapes" not in sealed
    with caplog.at_level(logging.INFO):
        run_agent(tmp_path, key=True, run_s=1.0)
    assert GO_ON in caplog.text
