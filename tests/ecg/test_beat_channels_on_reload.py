"""The daemon's ECG -> RR stage computes each optional channel only while a detector reads it, and follows
a reload.

``qrs_shape``, ``qrs_core`` and ``p_wave`` cost templates and CPU per beat; the session asks the stage for
those a detector on the device's RR stream lists (agent.pipeline.wiring.beat_channels_read). The real
agent runs a simulated ECG wearable (no broker: the uplink keeps trying), its config switched by reloads
from an `af` on ["rr"] to one on ["rr", "p_wave"], then to an `af` on ["rr"] and a `pvc` on
["rr", "qrs_shape", "qrs_core"]; a spy of the stage records what each stage gave.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

import agent.session
from agent.config import load_config
from agent.daemon import Agent
from agent.ecg.rr_from_ecg import RrFromEcg
from agent.readings import Reading

CONFIG = """
[gateway]
id = "gw-p-wave"
site = "lab"
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:{port}"

[outbox]
path = "state/outbox.sqlite"

[[devices]]
id = "patch-1"
kind = "wearable"
transport = "simulator"
[devices.simulator]
seed = 11
speed = 30.0
ecg = true
[devices.beats]
rr_stream = "ecg_rr"

[[detectors]]
id = "af"
type = "af"
stream = "ecg_rr"
channels = {channels}
rate_hz = 1.0
{more}"""
RR_ONLY = '["rr"]'
WITH_P_WAVE = '["rr", "p_wave"]'
PVC = """
[[detectors]]
id = "pvc"
type = "pvc"
stream = "ecg_rr"
channels = ["rr", "qrs_shape", "qrs_core"]
rate_hz = 1.0
"""
BEATS = 30  # RR readings a stage gives before it is judged: p_wave needs 8 shapes + 8 templates first


class SpyStage(RrFromEcg):
    """The real stage, keeping what it was asked and the channels of the RR readings it gave."""

    def __init__(self, made: list[SpyStage], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked = set(kwargs["channels"])
        self.channels: set[str] = set()
        made.append(self)

    def take(self, reading: Reading) -> list[Reading]:
        out = super().take(reading)
        for item in out:
            if item.stream == "patch-1/ecg_rr":
                self.channels.update(item.channels)
        return out


def no_broker_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until(predicate: Any, what: str, timeout_s: float = 30.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout_s:.0f} s: {what}")


def test_a_channel_is_computed_only_while_a_detector_reads_it_and_a_reload_switches_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Failed before beat_channels_read: every stage computed qrs_shape and qrs_core, read or not (and
    # before p_wave_read, p_wave too).
    made: list[SpyStage] = []
    monkeypatch.setattr(agent.session, "RrFromEcg", lambda *a, **k: SpyStage(made, *a, **k))
    monkeypatch.chdir(tmp_path)
    port = no_broker_port()
    path = tmp_path / "agent.toml"
    path.write_text(CONFIG.format(port=port, channels=RR_ONLY, more=""))
    daemon = Agent(load_config(path))

    async def judged(count: int) -> SpyStage:
        """The `count`-th stage once it has given `BEATS` beats."""
        await until(lambda: len(made) == count and made[-1].intervals >= BEATS, f"stage {count}'s beats")
        return made[-1]

    async def reload(channels: str, more: str = "") -> None:
        path.write_text(CONFIG.format(port=port, channels=channels, more=more))
        daemon.reloading.set()

    async def main() -> None:
        task = asyncio.create_task(daemon.run())
        try:
            first = await judged(1)
            await reload(WITH_P_WAVE)
            second = await judged(2)
            await reload(RR_ONLY, PVC)
            third = await judged(3)
        finally:
            daemon.stopping.set()
            await asyncio.wait_for(task, 30)
        assert [s.asked for s in (first, second, third)] == [
            {"rr"},
            {"rr", "p_wave"},
            {"rr", "qrs_shape", "qrs_core"},
        ]
        # rr and hr always; p_wave needs the window's shape inside, but qrs_shape is not emitted for it.
        assert first.channels == {"rr", "hr"}
        assert second.channels == {"rr", "hr", "p_wave"}
        assert third.channels == {"rr", "hr", "qrs_shape", "qrs_core"}

    asyncio.run(main())
