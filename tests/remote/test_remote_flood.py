"""A flood of unsigned garbage on the command topic costs the gateway a bounded amount.

The real agent (`python -m agent.cli run`, a child process, so its memory is its own) and a real
mosquitto; one paho client publishes `{}` on `cmd/status` with a ResponseTopic as fast as it can (about
10,000 a second on the 2-core build VM) while a wearable's tachycardia episode begins. Before the bound
(audit audsec, finding 1) every message reached the event loop: the agent's RSS grew by 500 MB in 16 s,
no heartbeat went out, the alarm arrived 22 s late and SIGTERM was lost. The assertions are counts and
bounds, not timings: the flood goes on until the alarm and three heartbeats have arrived (it fails if
they never do), the agent's RSS stays within a fixed margin of its size before the flood, the flooder
gets no more answers than the answer budget allows for the time it flooded, and SIGTERM during a flood
stops the agent (within the unit's TimeoutStopSec=20).
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from uplink.daemon_harness import DaemonProcess
from uplink_probe import Subscriber

from agent.localbroker import LocalBroker
from agent.remote import sign_command
from agent.remote.answer_budget import UNAUTHENTICATED
from agent.uplink.connection import new_properties

ROOT = "edge/lab/gw-f"
CONFIG = """
[gateway]
id = "gw-f"
site = "lab"
heartbeat_interval_s = 0.5
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:{port}"

[outbox]
path = "state/outbox.sqlite"

[[devices]]
id = "bed-1"
kind = "wearable"
transport = "simulator"
[devices.simulator]
seed = 3
speed = 4.0
episodes = [{{ condition = "tachycardia", start_s = 8, duration_s = 400 }}]

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
min_duration_s = 3
unit = "bpm"

[remote]
enabled = true
public_key_file = "{key}"
"""
MIN_FLOOD = 40_000  # messages: about 4 s at the build VM's rate, 400 MB of backlog before the bound
GIVE_UP_S = 120.0  # the alarm and heartbeats never came through the flood: the test fails
RSS_MARGIN_KB = 40_000  # the agent may grow this much during the flood (it grew 500 MB before)


def rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0])


class Flooder:
    """Publishes `{}` (QoS 0, ResponseTopic replies/flood) on the status command topic, as fast as it can."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="flood", protocol=mqtt.MQTTv5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.props = new_properties(PacketTypes.PUBLISH)
        self.props.ResponseTopic = "replies/flood"
        self.sent = 0

    def send(self, n: int) -> None:
        for _ in range(n):
            self.client.publish(f"{ROOT}/cmd/status", b"{}", qos=0, properties=self.props)
        self.sent += n

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def signed_status(
    port: int, key: Ed25519PrivateKey, replies: Subscriber, attempts: list[int] | None = None
) -> dict[str, Any]:
    """One signed `status`, answered on replies/ops (the agent runs and takes commands), asked again each
    second until it is; `attempts` gets how many were sent (those not answered count in the agent's
    dropped or unanswered commands, as the flood's do)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ops", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for attempt in range(1, 41):
            if attempts is not None:
                attempts.append(attempt)
            props = new_properties(PacketTypes.PUBLISH)
            props.ResponseTopic = "replies/ops"
            props.CorrelationData = uuid.uuid4().bytes
            payload = sign_command(key, ROOT, "status")
            client.publish(f"{ROOT}/cmd/status", payload, qos=1, properties=props).wait_for_publish(5)
            try:
                got = replies.wait_for(
                    lambda ms, c=props.CorrelationData: any(
                        m.properties.get("CorrelationData") == c.hex() for m in ms
                    ),
                    timeout=1.0,
                )
            except TimeoutError:
                continue  # not subscribed yet
            mine = [m for m in got if m.properties.get("CorrelationData") == props.CorrelationData.hex()]
            doc: dict[str, Any] = mine[0].json()
            return doc
    finally:
        client.disconnect()
        client.loop_stop()
    raise AssertionError("the agent never answered a signed status")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/status")
def test_a_flood_of_unsigned_commands_costs_bounded_memory_and_alarms_heartbeats_and_stop_go_through(
    tmp_path: Path, mosquitto: LocalBroker, public_key_file: Path, private_key: Ed25519PrivateKey
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG.format(port=mosquitto.port, key=public_key_file))
    events = Subscriber(mosquitto, f"{ROOT}/+")  # alarm, heartbeat, status
    ops = Subscriber(mosquitto, "replies/ops")
    flood_answers = Subscriber(mosquitto, "replies/flood")
    agent = DaemonProcess(config, tmp_path)
    agent.start()
    flooder = Flooder(mosquitto.port)
    keep_flooding = threading.Event()
    try:
        asked: list[int] = []  # the operator's status attempts (two answered)
        assert signed_status(mosquitto.port, private_key, ops, asked)["ok"]
        assert agent.proc is not None
        pid = agent.proc.pid
        before_kb = rss_kb(pid)
        assert not [m for m in events.snapshot() if m.topic.endswith("/alarm")], "alarm before the flood"

        heartbeats_before = len([m for m in events.snapshot() if m.topic.endswith("/heartbeat")])
        started = time.monotonic()
        peak_kb = before_kb
        while True:
            flooder.send(2000)
            agent.check_alive()
            peak_kb = max(peak_kb, rss_kb(pid))
            got = events.snapshot()
            alarms = [m.json() for m in got if m.topic.endswith("/alarm")]
            heartbeats = len([m for m in got if m.topic.endswith("/heartbeat")]) - heartbeats_before
            if flooder.sent >= MIN_FLOOD and alarms and heartbeats >= 3:
                break
            assert time.monotonic() - started < GIVE_UP_S, (
                f"after {flooder.sent} commands: {len(alarms)} alarm(s), {heartbeats} heartbeat(s)"
            )
        flood_s = time.monotonic() - started
        assert alarms[0]["condition"] == "tachycardia" and alarms[0]["phase"] == "start"
        assert peak_kb - before_kb < RSS_MARGIN_KB, (before_kb, peak_kb)

        # The flooder got at most what the budget for unauthenticated refusals allows in that time.
        rate, burst = UNAUTHENTICATED
        time.sleep(1.0)  # answers still on their way
        answered = len(flood_answers.snapshot())
        assert answered <= burst + rate * (time.monotonic() - started) + 1, (answered, flood_s)

        status = signed_status(mosquitto.port, private_key, ops, asked)["result"]
        counted = status["commands"]
        assert counted["dropped"] > 0 and counted["unanswered"] > 0, counted
        # every command counted came from the flooder, or is one of the operator's unanswered status
        # attempts (in the flood's tail the gate drops the operator's commands too: remote-management.md)
        assert counted["dropped"] + counted["unanswered"] + answered <= flooder.sent + len(asked) - 2

        # SIGTERM in the middle of a flood stops the agent cleanly (it was lost before).
        def flood() -> None:
            while keep_flooding.is_set():
                flooder.send(500)

        keep_flooding.set()
        thread = threading.Thread(target=flood, daemon=True)
        thread.start()
        time.sleep(1.0)
        assert agent.terminate(timeout=20.0) == 0, agent.log_tail()
    finally:
        keep_flooding.clear()
        flooder.close()
        agent.close()
        for sub in (events, ops, flood_answers):
            sub.close()
    log = agent.log_path.read_text(errors="replace")
    assert "stopped cleanly" in log and "signal wakeup fd" not in log
    assert "faster than the answer budget" in log  # the unanswered refusals are told
    # and logged, as every refusal, the flood's lines held back by the log's rate limit and summed up
    assert "similar line(s) suppressed in" in log and "not answered (over the answer budget)" not in log
