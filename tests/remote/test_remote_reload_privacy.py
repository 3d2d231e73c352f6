"""A refused reload tells what is wrong without naming a device or a patient: neither its answer on the
broker (remote `reload`) nor its log lines (remote or SIGHUP) quote an identifier or another value of
the running or the refused file; the answer names the config file by its name only, the log by its
full path. The real agent and a real mosquitto, as in test_remote_broker."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .test_remote_broker import Backend, RunningAgent, setup, wait_for_status

__all__ = ["setup"]  # the fixture, used here by name

# Each patient id and device id of the running file, and the ones the refused files bring.
IDENTIFIERS = ("wearable-1", "wearable-2", "MRN-0012345", "MRN-0099999", "120099999", "bed 9")

PATIENTS = (
    ('id = "wearable-1"\nkind = "wearable"\n', 'patient = "MRN-0012345"\n'),
    ('id = "wearable-2"\nkind = "wearable"\n', 'patient = "MRN-0099999"\n'),
)
# Broken variants of the running file, each with the key its problem names.
REFUSED = (
    ('id = "wearable-2"', 'id = "wearable-1"', "devices[1].id: duplicate id (also devices[0])"),
    ('patient = "MRN-0099999"', "patient = 120099999", "devices[1].patient: expected a string, got an"),
    ('id = "wearable-2"', 'id = "bed 9"', "devices[1].id: must not contain spaces"),
    ('snippet_devices = ["wearable-1"]', 'snippet_devices = ["MRN-0099999"]', "remote.snippet_devices[0]: "),
)


@pytest.fixture
def with_patients(setup: tuple[Path, Backend]) -> Iterator[tuple[Path, Backend, RunningAgent]]:
    config, backend = setup
    text = config.read_text()
    for device, patient in PATIENTS:
        assert text.count(device) == 1
        text = text.replace(device, device + patient)
    config.write_text(text)
    agent = RunningAgent(config)
    try:
        wait_for_status(backend, lambda r: r["heartbeat"].get("models", {}) != {})
        yield config, backend, agent
    finally:
        agent.stop()


def test_a_refused_remote_reload_names_keys_not_identifiers(
    with_patients: tuple[Path, Backend, RunningAgent],
) -> None:
    config, backend, _agent = with_patients
    good = config.read_text()
    answers: list[dict[str, Any]] = []
    for old, new, expected in REFUSED:
        config.write_text(good.replace(old, new))
        refused = backend.call("reload", timeout=30)
        assert refused["error"]["code"] == "refused", refused
        assert any(p.startswith(f"agent.toml: {expected}") for p in refused["error"]["problems"]), refused
        answers.append(refused)
    text = repr(answers)
    assert [i for i in (*IDENTIFIERS, str(config.parent)) if i in text] == []


# Values of keys not read as private that name a patient, each with the line the answer gives instead
# (outside review, finding 3): the refused file's values are withheld, resolved paths too.
VALUES = (
    (
        'path = "recordings"',
        'path = "recordings/MRN-0055555_Doe_Jane"',
        "devices[2].replay.path: no recording file or folder: …",
    ),
    (
        'path = "recordings"',
        'path = "current-patient"',
        "devices[2].replay.path: no recording file or folder: …",
    ),
    ('transport = "replay"', 'transport = "MRN-0055555 Doe"', "devices[2].transport: expected one of"),
)
NAMED = ("MRN-0055555", "Doe_Jane", "MRN-0066666", "Roe_John", "Doe")


def test_a_refused_remote_reload_withholds_the_values_of_the_new_file(
    with_patients: tuple[Path, Backend, RunningAgent], caplog: pytest.LogCaptureFixture
) -> None:
    """In its answer and in the log: the log's redaction knows only the running file's identifiers, and
    the refusal's log lines quoted the refused file's path naming a patient (review of the fixes)."""
    caplog.set_level(logging.INFO)
    config, backend, _agent = with_patients
    (config.parent / "current-patient").symlink_to(config.parent / "recordings" / "MRN-0066666_Roe_John")
    good = config.read_text()
    answers: list[dict[str, Any]] = []
    for old, new, expected in VALUES:
        assert good.count(old) == 1
        config.write_text(good.replace(old, new))
        refused = backend.call("reload", timeout=30)
        assert refused["error"]["code"] == "refused", refused
        assert any(p.startswith(f"agent.toml: {expected}") for p in refused["error"]["problems"]), refused
        answers.append(refused)
        refusals = [m for m in messages(caplog) if "reload refused, keeping" in m]
        assert any(f"{config}: {expected}" in line for line in refusals), refusals  # the full path
    text = repr(answers)
    assert [i for i in (*NAMED, *IDENTIFIERS, str(config.parent)) if i in text] == []
    lines = messages(caplog)
    assert [i for i in (*NAMED, *IDENTIFIERS) if any(i in line for line in lines)] == []


def test_a_refused_sighup_reload_logs_keys_not_identifiers(
    with_patients: tuple[Path, Backend, RunningAgent], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    config, _backend, running = with_patients
    good = config.read_text()
    for old, new, expected in REFUSED:
        caplog.clear()
        config.write_text(good.replace(old, new))
        running.loop.call_soon_threadsafe(running.agent.reloading.set)
        deadline = time.monotonic() + 20
        while not (refusals := [m for m in messages(caplog) if "reload refused" in m]):
            assert time.monotonic() < deadline, "no refusal logged"
            time.sleep(0.1)
        assert any(f"agent.toml: {expected}" in line for line in refusals), refusals
        # Every line, not only the refusals: caplog sees them before the handler's redaction.
        lines = messages(caplog)
        assert [i for i in IDENTIFIERS if any(i in line for line in lines)] == []


def test_a_refused_sighup_reload_withholds_the_values_of_the_new_file(
    with_patients: tuple[Path, Backend, RunningAgent], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    config, _backend, running = with_patients
    (config.parent / "current-patient").symlink_to(config.parent / "recordings" / "MRN-0066666_Roe_John")
    good = config.read_text()
    for old, new, expected in VALUES:
        caplog.clear()
        config.write_text(good.replace(old, new))
        running.loop.call_soon_threadsafe(running.agent.reloading.set)
        deadline = time.monotonic() + 20
        while not (refusals := [m for m in messages(caplog) if "reload refused" in m]):
            assert time.monotonic() < deadline, "no refusal logged"
            time.sleep(0.1)
        assert any(f"{config}: {expected}" in line for line in refusals), refusals
        lines = messages(caplog)
        assert [i for i in (*NAMED, *IDENTIFIERS) if any(i in line for line in lines)] == []


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]
