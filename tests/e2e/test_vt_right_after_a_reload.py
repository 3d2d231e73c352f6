"""A ventricular run that starts right after a config reload is alarmed: the agent as its own process, an
ECG patch emulated on a pseudo-terminal (the frame protocol, real time), a real mosquitto, SIGHUP.

A reload makes a new session and with it a new beats stage (agent.ecg.rr_from_ecg). One that built its
beat-shape templates afresh learnt a VT starting in its first ~8 beats as the patient's "normal" beat, and
the VT alarm never came. The new stage now goes on with the old one's templates (agent.ecg.kept_shapes).
The patch sends sinus rhythm (75 bpm), then from `VT_AT_S` a run of wide beats at 150 bpm; SIGHUP comes
`SIGHUP_BEFORE_S` before it, and the VT alarm must reach the central side. (Before, it never came: the
run's first beats made the new stage's templates.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.localbroker import LocalBroker
from firmware_bridge.emulator import EmulatedChannel, SerialDeviceEmulator
from firmware_bridge.frame_messages import ChannelSpec, SampleType
from tests.ecg.test_beat_shape import SYNTH_FS, synthetic_ecg

ROOT = Path(__file__).resolve().parents[2]
SINUS_RR_S, VT_RR_S, VT_BEATS = 0.8, 0.4, 40
VT_AT_S = 25.0  # device seconds: the run starts then
SIGHUP_BEFORE_S = 1.5  # the reload comes this long before it
LONGEST_S = 300.0  # the signal prepared; the test ends long before

CONFIG = """
[gateway]
id = "gw-vt"
site = "ward-3"
heartbeat_interval_s = 1.0
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:{port}"
topic_prefix = "edge"

[outbox]
path = "state/outbox.sqlite"

[[devices]]
id = "patch-bed-3"
kind = "wearable"
transport = "serial"
[devices.serial]
port = "{link}"
[devices.beats]
rr_stream = "ecg_rr"

[[detectors]]
id = "vt"
type = "ventricular_run"
stream = "ecg_rr"
channels = ["rr", "qrs_shape", "qrs_core"]
rate_hz = 1.0

[[alarms]]
condition = "ventricular_tachycardia"
detector = "vt"
priority = "high"
min_duration_s = 0
clear_after_s = 10
cooldown_s = 0
unit = "bpm"
"""


def patch_ecg() -> npt.NDArray[np.float64]:
    """The patch's ECG at `SYNTH_FS`: sinus rhythm, from `VT_AT_S` `VT_BEATS` wide beats, then sinus."""
    before = list(np.arange(0.5, VT_AT_S, SINUS_RR_S))
    vt = [before[-1] + VT_RR_S * (i + 1) for i in range(VT_BEATS)]
    after = list(np.arange(vt[-1] + SINUS_RR_S, LONGEST_S, SINUS_RR_S))
    return synthetic_ecg(before + vt + after, "N" * len(before) + "V" * len(vt) + "N" * len(after))


@pytest.fixture
def patch_on_a_pty(tmp_path: Path) -> Iterator[tuple[Path, Callable[[], None]]]:
    """The patch's pty (its slave behind a link) and a call that starts it sending, in real time."""
    master, slave = os.openpty()
    tty.setraw(slave)
    link = tmp_path / "patch-tty"
    link.symlink_to(os.ttyname(slave))
    ecg = patch_ecg()

    def values(t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:  # device seconds -> mV
        return np.asarray(ecg[np.minimum(np.round(t * SYNTH_FS).astype(np.int64), len(ecg) - 1)])

    channel = EmulatedChannel(ChannelSpec("ecg", "mV", SampleType.INT16, SYNTH_FS, 0.001), values)
    emulator = SerialDeviceEmulator(master, "patch", [channel], speed=1.0)
    stop = threading.Event()
    thread = threading.Thread(
        target=emulator.run, args=(stop,), kwargs={"answer_commands": True}, daemon=True
    )
    yield link, thread.start
    stop.set()
    if thread.is_alive():
        thread.join(5)
    os.close(master)
    os.close(slave)


def _central(port: int, got: list[tuple[str, dict[str, Any]]]) -> mqtt.Client:
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="central", protocol=mqtt.MQTTv5)
    client.on_message = lambda _c, _u, m: got.append((m.topic, json.loads(m.payload)))
    client.on_subscribe = lambda *_args: subscribed.set()
    client.on_connect = lambda c, *_args: c.subscribe("edge/ward-3/gw-vt/#", qos=1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    assert subscribed.wait(10), "the central subscriber got no SUBACK"
    return client


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def test_a_vt_starting_right_after_a_sighup_is_alarmed(
    mosquitto: LocalBroker,
    tmp_path: Path,
    patch_on_a_pty: tuple[Path, Callable[[], None]],
) -> None:
    link, start_sending = patch_on_a_pty
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG.format(port=mosquitto.port, link=link))
    got: list[tuple[str, dict[str, Any]]] = []
    central = _central(mosquitto.port, got)

    def online(session: int) -> bool:
        return any(
            t.endswith("/status") and p.get("session") == session and p.get("state") == "online"
            for t, p in got
        )

    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)},  # this checkout's agent
    )
    try:
        assert _wait(lambda: online(1), 30), got
        started = time.monotonic()
        start_sending()
        time.sleep(VT_AT_S - SIGHUP_BEFORE_S)  # 30 sinus beats: the templates are made
        proc.send_signal(signal.SIGHUP)
        assert _wait(lambda: online(2), 20), got
        reloaded_s = time.monotonic() - started  # the second session is up (its stage, a moment before)
        alarmed = _wait(
            lambda: any(t.endswith("/alarm") and p["condition"] == "ventricular_tachycardia" for t, p in got),
            VT_BEATS * VT_RR_S,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        central.disconnect()
        central.loop_stop()
    assert "reloading config" in output, output
    assert reloaded_s < VT_AT_S, f"the reload took too long: the run started before it ({reloaded_s:.1f} s)"
    assert alarmed, output + f"\nmessages: {[t for t, _ in got]}"
    assert "beat-shape templates go on from the previous stage's" in output, output
    starts = [p for t, p in got if t.endswith("/alarm") and p["phase"] == "start"]
    assert [p["condition"] for p in starts] == ["ventricular_tachycardia"]
    assert starts[0]["priority"] == "high"
