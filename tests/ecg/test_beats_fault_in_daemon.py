"""A fault in the beat finding (agent.ecg.rr_from_ecg) inside the daemon costs the beats, not the device.

The stage runs in the session's per-device pump; an exception there used to be taken for a failed source:
the healthy source was closed and reopened with backoff, losing the ECG too. The real daemon runs the
demo's config (its ECG patch has [devices.beats]) against a private mosquitto, with a stage that fails.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

import agent.session
from agent.daemon import Agent, preflight
from agent.demo import demo_config
from agent.localbroker import LocalBroker
from agent.readings import Reading

RUN_S = 2.5


class FailingStage:
    calls = 0

    def __init__(self, *_: object, **__: object) -> None:
        pass

    def take(self, reading: Reading) -> list[Reading]:
        FailingStage.calls += 1
        raise RuntimeError("a bug in the beat finding")


def run_demo(broker: LocalBroker, tmp_path: Path) -> None:
    """The daemon on the demo's config (its ECG patch has [devices.beats]) for RUN_S seconds."""
    config = demo_config(tmp_path / "demo", broker.port, 10.0, None)
    preflight(config)
    daemon = Agent(config)

    async def run() -> None:
        asyncio.get_running_loop().call_later(RUN_S, daemon.stopping.set)
        await daemon.run()

    asyncio.run(run())


def test_a_failing_stage_leaves_the_source_running(
    mosquitto: LocalBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(agent.session, "RrFromEcg", FailingStage)
    monkeypatch.setattr(agent.session, "BEATS_RETRY_S", 10.0)
    with caplog.at_level(logging.WARNING):
        run_demo(mosquitto, tmp_path)
    messages = [r.getMessage() for r in caplog.records]
    # the stage is dropped at a fault, not retried per reading: a fresh one BEATS_RETRY_S later
    assert FailingStage.calls == 1
    assert sum("finding beats in the ECG of" in m for m in messages) == 1
    assert not [m for m in messages if m.startswith("source ") and "failed" in m], messages


def test_a_fresh_stage_follows_a_fault(
    mosquitto: LocalBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    made: list[int] = []

    class FailingOnce:
        def __init__(self, *_: object, **__: object) -> None:
            made.append(1)

        def take(self, reading: Reading) -> list[Reading]:
            if len(made) == 1:
                raise RuntimeError("a bug in the beat finding")
            return [reading]

    monkeypatch.setattr(agent.session, "RrFromEcg", FailingOnce)
    monkeypatch.setattr(agent.session, "BEATS_RETRY_S", 0.5)
    with caplog.at_level(logging.WARNING):
        run_demo(mosquitto, tmp_path)
    assert len(made) == 2  # one fault, then a fresh stage that works
