"""The operator client takes one answer, never a merge (security review remote #3).

An insider with the fleet's `central` rights (read edge/#, write cmd/#, no key) re-published each
operator command as `{}` with the same ResponseTopic and CorrelationData; the gateway answered that
`bad_signature` on the operator's reply topic, and the client merged every answer with its correlation
(`answer.update`), printing `ok: true` beside a `bad_signature` block. A gateway now answers such
refusals on `{root}/cmd/response` only (tests/remote/test_remote_broker.py); older gateways do not, so
the client also must not take them. Here a stand-in gateway on a real mosquitto sends what the client
would get: the refusal of the insider's copy first, then the genuine answer.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes

from agent.localbroker import LocalBroker
from agent.remote.client import main as client_main
from agent.uplink.connection import new_properties

from .conftest import ROOT

GENUINE = {"schema": "edge-agent/response/1", "command": "status", "ok": True, "result": {"up": 1}}
FORGED = {
    "schema": "edge-agent/response/1",
    "command": "status",
    "ok": False,
    "error": {"code": "bad_signature", "message": "unsigned command, and a public key is configured"},
}


class StandIn:
    """Answers each command with `answers`: (topic or None for the ResponseTopic, document), in order."""

    def __init__(self, broker: LocalBroker, answers: list[tuple[str | None, dict[str, Any]]]) -> None:
        self.answers = answers
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._command
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(f"{ROOT}/cmd/status", qos=1)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _command(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        for topic, doc in self.answers:
            props = new_properties(PacketTypes.PUBLISH)
            props.CorrelationData = msg.properties.CorrelationData
            self.client.publish(topic or msg.properties.ResponseTopic, json.dumps(doc), 1, properties=props)
            time.sleep(0.3)  # in this order, as the insider's quick copy and the real answer come

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def send_args(tmp_path: Path, mosquitto: LocalBroker, private_key: Ed25519PrivateKey) -> Iterator[list[str]]:
    key_file = tmp_path / "ops.key"
    key_file.write_bytes(
        private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    yield [
        "send",
        "status",
        "--root",
        ROOT,
        "--key",
        str(key_file),
        "--url",
        f"mqtt://127.0.0.1:{mosquitto.port}",
        "--timeout",
        "5",
    ]


@pytest.mark.parametrize("forged_on", ["reply topic (an older gateway)", "cmd/response"])
def test_the_client_prints_the_genuine_answer_alone_and_warns_of_the_other(
    forged_on: str, mosquitto: LocalBroker, send_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    topic = f"{ROOT}/cmd/response" if forged_on == "cmd/response" else None
    gateway = StandIn(mosquitto, [(topic, FORGED), (None, GENUINE)])
    try:
        status = client_main(send_args)
    finally:
        gateway.close()
    out, err = capsys.readouterr()
    assert status == 0  # failed before (reply topic): the refusal was printed, exit 1
    printed = json.loads(out)
    assert printed == GENUINE  # nothing merged in
    assert "warning: another answer with this request's correlation data" in err
    assert "error bad_signature" in err and "could not verify" in err


def test_a_second_answer_on_the_reply_topic_is_not_merged(
    mosquitto: LocalBroker, send_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    other = {
        "schema": "edge-agent/response/1",
        "command": "status",
        "ok": False,
        "error": {"code": "refused", "message": "x"},
    }
    gateway = StandIn(mosquitto, [(None, GENUINE), (None, other)])
    try:
        status = client_main([*send_args[:-1], "1"])  # a second's wait: the second answer comes meanwhile
    finally:
        gateway.close()
    out, _err = capsys.readouterr()
    assert status == 0 and json.loads(out) == GENUINE


def test_only_a_refusal_on_cmd_response_is_printed_with_a_warning_at_the_timeout(
    mosquitto: LocalBroker, send_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The operator's key is not the gateway's: the gateway refuses on cmd/response only."""
    gateway = StandIn(mosquitto, [(f"{ROOT}/cmd/response", FORGED)])
    try:
        status = client_main([*send_args[:-1], "2"])
    finally:
        gateway.close()
    out, err = capsys.readouterr()
    assert status == 1 and json.loads(out) == FORGED
    assert "no other answer came" in err and "the wrong --key" in err
