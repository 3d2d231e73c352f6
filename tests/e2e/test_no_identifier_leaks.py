"""No device or patient identifier leaves the gateway: the real daemon (`edge-agent run`, JSON logs at
DEBUG level) with distinctive device and patient ids — two simulated wearables with injected
tachycardia episodes and a serial monitor on a pseudo-terminal — publishing to a real mosquitto.

Everything an identifier could escape through is collected: every message on `#` (topics and
payloads), the process's stdout and stderr, the outbox file (database, WAL and shared memory, also
while the broker is frozen so rows wait in it) and `last-heartbeat.json`. No identifier may appear in
any of them, in any letter case; the devices' pseudonyms must appear, so the search is known to look
at the right bytes. A second run with `encryption_key_file` checks that the daemon creates the key (0600)
and that rows waiting in the outbox hold no payload in clear, yet arrive intact, and that the saved
pipeline state is sealed too.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from waiting import wait_until

from agent.localbroker import LocalBroker
from agent.privacy import Pseudonymizer
from agent.status import LAST_HEARTBEAT
from firmware_bridge.emulator import EmulatedChannel, SerialDeviceEmulator
from firmware_bridge.frame_messages import ChannelSpec, SampleType

SPEED = 20.0  # simulated seconds per real second
DEVICES = {  # device id -> patient id
    "bed7-monitor-xyz": "PATIENT-JANE-DOE-4711",
    "Bed9-Wearable-QX42": "MRN-JOHN-ROE-0815",
    "icu-serial-hub-ZZ31": "PATIENT-MAX-MUSTER-1234",
}
SERIAL_DEVICE = "icu-serial-hub-ZZ31"
SERIAL_NUMBER = "SN-ACME-998877"  # what the serial device's firmware calls itself
# Whole identifiers and their distinctive parts (pure numbers are left out: they occur by chance).
IDENTIFIERS = [
    *DEVICES,
    *DEVICES.values(),
    SERIAL_NUMBER,
    "JANE-DOE",
    "JOHN-ROE",
    "MAX-MUSTER",
    "bed7-monitor",
    "Bed9-Wearable",
    "serial-hub",
]

CONFIG = """
[gateway]
id = "gw-leak"
site = "ward-9"
heartbeat_interval_s = 0.5
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:{port}"
topic_prefix = "edge"

[outbox]
path = "state/outbox.sqlite"

[[devices]]
id = "bed7-monitor-xyz"
kind = "wearable"
transport = "simulator"
patient = "PATIENT-JANE-DOE-4711"
[devices.simulator]
seed = 3
speed = {speed}
episodes = [{{ condition = "tachycardia", start_s = 20, duration_s = 40 }}]

[[devices]]
id = "Bed9-Wearable-QX42"
kind = "wearable"
transport = "simulator"
patient = "MRN-JOHN-ROE-0815"
[devices.simulator]
seed = 4
speed = {speed}
episodes = [{{ condition = "tachycardia", start_s = 10, duration_s = 30 }}]

[[devices]]
id = "icu-serial-hub-ZZ31"
kind = "wearable"
transport = "serial"
patient = "PATIENT-MAX-MUSTER-1234"
[devices.serial]
port = "{link}"

[[detectors]]
id = "hr-high"
type = "limit"
stream = "vitals"
channels = ["hr"]
params = {{ above = 120 }}

[[alarms]]
condition = "tachycardia"
detector = "hr-high"
priority = "medium"
min_duration_s = 5
clear_after_s = 5
unit = "bpm"
"""


def const(value: float) -> Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]:
    return lambda t: value + 0.0 * t


class SerialMonitor:
    """A serial patient monitor on a pseudo-terminal: frames with HR and SpO2, its serial number in HELLO."""

    def __init__(self, link: Path) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        link.symlink_to(os.ttyname(self.slave))
        channels = [
            EmulatedChannel(ChannelSpec("hr", "bpm", SampleType.INT16, 1.0, 0.1), const(72.0)),
            EmulatedChannel(ChannelSpec("spo2", "%", SampleType.INT16, 1.0, 0.1), const(97.5)),
        ]
        self.emulator = SerialDeviceEmulator(self.master, SERIAL_NUMBER, channels, speed=SPEED)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self.emulator.run, args=(self._stop, None), kwargs={"answer_commands": True}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        os.close(self.master)
        os.close(self.slave)


class Everything:
    """A subscriber on `#`: every topic and payload, raw bytes."""

    def __init__(self, broker: LocalBroker) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="everything", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_args: subscribed.set()
        self.client.on_connect = lambda c, *_args: c.subscribe("#", qos=1)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert subscribed.wait(10), "subscriber on # got no SUBACK"

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((message.topic, bytes(message.payload)))

    def payloads(self, leaf: str) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(p) for t, p in self.messages if t.endswith("/" + leaf)]

    def raw(self) -> bytes:
        with self.lock:
            return b"\n".join(t.encode() + b" " + p for t, p in self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def outbox_bytes(state: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(state.glob("outbox.sqlite*")))


def leaks(haystack: bytes) -> list[str]:
    """The identifiers found in `haystack`, letter case ignored."""
    text = haystack.decode("utf-8", "replace").lower()
    return [ident for ident in IDENTIFIERS if ident.lower() in text]


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[SerialMonitor]:
    device = SerialMonitor(tmp_path / "ttyMONITOR")
    yield device
    device.close()


def test_no_device_or_patient_identifier_leaves_the_gateway(
    tmp_path: Path, mosquitto: LocalBroker, monitor: SerialMonitor
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG.format(port=mosquitto.port, speed=SPEED, link=tmp_path / "ttyMONITOR"))
    state = tmp_path / "state"
    everything = Everything(mosquitto)
    out, err = (tmp_path / "agent.out").open("wb"), (tmp_path / "agent.err").open("wb")
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "--log-level",
            "DEBUG",
            "--log-json",
            "run",
            "--config",
            str(config),
        ],
        stdout=out,
        stderr=err,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    outbox_while_frozen = b""
    try:
        wait_until(lambda: (state / "pseudonym.key").exists(), 20, "the agent to create its pseudonym key")
        pseudonym = Pseudonymizer((state / "pseudonym.key").read_bytes())
        expected = {pseudonym(device_id) for device_id in DEVICES}

        def heartbeat_devices() -> set[str]:
            beats = everything.payloads("heartbeat")
            return {d["device"] for d in beats[-1]["devices"]} if beats else set()

        def serial_rate() -> float:
            beats = everything.payloads("heartbeat")
            serial = pseudonym(SERIAL_DEVICE)
            rates = [d["rate_hz"] for d in beats[-1]["devices"] if d["device"] == serial] if beats else []
            return rates[0] if rates else 0.0

        # Both wearables go through an episode (start and end); the serial monitor is read.
        wait_until(
            lambda: (
                {a["device"] for a in everything.payloads("alarm") if a["phase"] == "end"}
                >= expected - {pseudonym(SERIAL_DEVICE)}
            ),
            90,
            "an episode start and end on both simulated wearables",
        )
        wait_until(lambda: heartbeat_devices() == expected and serial_rate() > 0, 30, "heartbeats for all 3")

        # Freeze the broker: heartbeats wait in the outbox, so its file holds real rows to search.
        mosquitto.pause()
        try:
            wait_until(lambda: expected <= found_in(outbox_bytes(state), expected), 20, "rows in the outbox")
            outbox_while_frozen = outbox_bytes(state)
        finally:
            mosquitto.resume()
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
        out.close()
        err.close()
        everything.close()

    published = everything.raw()
    logs = (tmp_path / "agent.out").read_bytes() + (tmp_path / "agent.err").read_bytes()
    last_heartbeat = (state / LAST_HEARTBEAT).read_bytes()
    outbox = outbox_while_frozen + outbox_bytes(state)

    # The search looks at the right bytes: the pseudonyms standing for the devices are there.
    assert found_in(published, expected) == expected
    assert found_in(last_heartbeat, expected) == expected
    assert found_in(outbox_while_frozen, expected) == expected
    assert found_in(logs, expected), "no pseudonym in the log: the alarm lines should name them"
    assert b'"level": "debug"' in logs  # debug logging really was on
    assert all(json.loads(line) for line in logs.splitlines() if line.strip())  # JSON lines only

    for name, haystack in (
        ("published topics and payloads", published),
        ("the agent's stdout and stderr", logs),
        ("the outbox file", outbox),
        (LAST_HEARTBEAT, last_heartbeat),
    ):
        assert not leaks(haystack), f"{name} leaks {leaks(haystack)}"


def found_in(haystack: bytes, pseudonyms: set[str]) -> set[str]:
    return {p for p in pseudonyms if p.encode() in haystack}


ENCRYPTED_CONFIG = """
[gateway]
id = "gw-sealed"
site = "ward-9"
heartbeat_interval_s = 0.5
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:{port}"

[outbox]
path = "state/outbox.sqlite"
encryption_key_file = "state/outbox.key"

[[devices]]
id = "bed7-monitor-xyz"
kind = "wearable"
transport = "simulator"
patient = "PATIENT-JANE-DOE-4711"
[devices.simulator]
seed = 3
speed = {speed}
episodes = [{{ condition = "tachycardia", start_s = 40, duration_s = 40 }}]

[[detectors]]
id = "hr-high"
type = "limit"
stream = "vitals"
channels = ["hr"]
params = {{ above = 120 }}

[[alarms]]
condition = "tachycardia"
detector = "hr-high"
priority = "medium"
min_duration_s = 5
clear_after_s = 5
unit = "bpm"
"""


def outbox_kinds(state: Path) -> list[str]:
    """The kinds of the rows in the live outbox, read through SQLite (read-only)."""
    try:
        db = sqlite3.connect(f"file:{state / 'outbox.sqlite'}?mode=ro", uri=True, timeout=5)
        try:
            return [str(r[0]) for r in db.execute("SELECT kind FROM outbox")]
        finally:
            db.close()
    except sqlite3.Error:
        return []


def test_with_encryption_at_rest_the_daemon_creates_the_key_and_the_outbox_holds_no_payload_in_clear(
    tmp_path: Path, mosquitto: LocalBroker
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(ENCRYPTED_CONFIG.format(port=mosquitto.port, speed=SPEED))
    state = tmp_path / "state"
    everything = Everything(mosquitto)
    log = (tmp_path / "agent.log").open("wb")
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "--log-json", "run", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_until(lambda: bool(everything.payloads("heartbeat")), 20, "the first heartbeat")
        # Frozen broker: the episode's alarm and the heartbeats wait in the (encrypted) outbox.
        mosquitto.pause()
        try:
            wait_until(lambda: "alarm" in outbox_kinds(state), 30, "an alarm row waiting in the outbox")
            frozen = outbox_bytes(state)
        finally:
            mosquitto.resume()
        wait_until(lambda: bool(everything.payloads("alarm")), 20, "the alarm delivered after the thaw")
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
        log.close()
        everything.close()

    key_file = state / "outbox.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    pseudonym = Pseudonymizer((state / "pseudonym.key").read_bytes())("bed7-monitor-xyz")
    alarm = everything.payloads("alarm")[0]
    assert alarm["device"] == pseudonym and alarm["condition"] == "tachycardia"  # opened intact
    assert pseudonym.encode() not in frozen and b"tachycardia" not in frozen and b'"uptime_s"' not in frozen
    assert pseudonym.encode() in everything.raw()
    assert not leaks(frozen + everything.raw() + (tmp_path / "agent.log").read_bytes())
    # The saved pipeline state (episodes, baselines) is sealed with the same key.
    assert not (state / "pipeline.json").exists()
    sealed_state = (state / "pipeline.json.sealed").read_bytes()
    assert pseudonym.encode() not in sealed_state and b"tachycardia" not in sealed_state
