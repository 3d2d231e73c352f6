"""An answer bigger than the broker's Maximum Packet Size, through the real agent and a real mosquitto.

Security review remote #1: a signed 80 s snippet of a 12-lead ECG (about 1.5 MB) under mosquitto's
`max_packet_size 1114112` had the broker drop the gateway's connection 314 times in 4 minutes (paho
resent the unacknowledged answer after each reconnect), heartbeats stopped and alarms were late. Here
the same happens at a small scale: a limit of 16,000 bytes and a few seconds of the simulator's ECG.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from uplink_probe import Subscriber

from agent.localbroker import LocalBroker
from agent.privacy import Pseudonymizer, load_or_create_key

from .test_remote_broker import ROOT, Backend, RunningAgent, wait_for_status

BrokerFactory = Callable[..., LocalBroker]
LIMIT = 16_000  # the broker's max_packet_size here (bytes)
CONFIG = """
[gateway]
id = "gw-r"
site = "lab"
heartbeat_interval_s = 0.5
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:{port}"

[outbox]
path = "state/outbox.sqlite"

[[devices]]
id = "strap"
kind = "wearable"
transport = "simulator"
[devices.simulator]
seed = 3
ecg = true
speed = 2.0

[privacy]
raw_snippets = true
vitals_in_heartbeat = false

[remote]
enabled = true
public_key_file = "ops.pub"
max_snippet_s = 80
allowed_commands = ["status", "snippet"]
"""


@pytest.fixture
def small_broker(make_broker: BrokerFactory) -> LocalBroker:
    return make_broker(extra_config=f"max_packet_size {LIMIT}\n")


@pytest.fixture
def agent_and_backend(
    tmp_path: Path, small_broker: LocalBroker, public_key_file: Path, private_key: Ed25519PrivateKey
) -> Iterator[Backend]:
    (tmp_path / "ops.pub").write_bytes(public_key_file.read_bytes())
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG.format(port=small_broker.port))
    backend = Backend(small_broker.port, private_key)
    agent = RunningAgent(config)
    try:
        yield backend
    finally:
        agent.stop()
        backend.close()


def test_an_answer_over_the_brokers_packet_size_is_replaced_by_too_large_and_the_link_stays_up(
    agent_and_backend: Backend, small_broker: LocalBroker, tmp_path: Path
) -> None:
    backend = agent_and_backend
    wait_for_status(backend, lambda r: r["uplink"]["connected"])
    device = Pseudonymizer(load_or_create_key(tmp_path / "state" / "pseudonym.key"))("strap")
    heartbeats = Subscriber(small_broker, f"{ROOT}/heartbeat")
    try:
        # 6 s at speed 2: 3,000 ECG values, about 30 kB of JSON (failed before: the broker dropped the
        # connection, paho resent the answer after each reconnect, and none ever arrived).
        big = backend.call("snippet", {"device": device, "stream": "ecg", "seconds": 6}, timeout=30)
        assert big["ok"] is False and big["error"]["code"] == "too_large", big
        error: dict[str, Any] = big["error"]
        assert error["limit"] == LIMIT and error["size"] > LIMIT
        assert f"{error['size']} bytes" in error["message"] and f"{LIMIT} bytes" in error["message"]
        assert len(json.dumps(big)) < 1000  # the small answer instead, not the values
        fits = error["seconds_that_fit"]
        assert 0 < fits < 6 and f"about {fits:g} s" in error["message"]
        # What it says would fit does fit.
        small = backend.call("snippet", {"device": device, "stream": "ecg", "seconds": fits}, timeout=30)
        assert small["ok"], small.get("error")
        assert small["result"]["samples"] > 0
        # The link never dropped: one connection all along, and heartbeats kept coming.
        status = backend.call("status")
        assert status["result"]["uplink"]["connected"] is True
        assert status["result"]["uplink"]["reconnects"] == 0, status["result"]["uplink"]
        assert len(heartbeats.snapshot()) >= 10  # every 0.5 s over more than 8 s of snippets
    finally:
        heartbeats.close()
    log = small_broker.log_path.read_text()
    assert "oversize" not in log
