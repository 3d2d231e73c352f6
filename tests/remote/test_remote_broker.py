"""Remote management end to end: the real agent (in-process) and a real mosquitto, commands sent by a
paho MQTT v5 client with ResponseTopic and CorrelationData, as a back end would send them."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from uplink_probe import Subscriber

from agent.config import load_config
from agent.daemon import Agent
from agent.localbroker import LocalBroker
from agent.privacy import Pseudonymizer, load_or_create_key
from agent.remote import ModelStore, pack_bundle, sign_command
from agent.remote.client import main as client_main
from agent.uplink.connection import new_properties

from .conftest import signed_model

ROOT = "edge/lab/gw-r"
ALL = '["status", "reload", "models/list", "models/activate", "models/install", "snippet"]'
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
id = "wearable-1"
kind = "wearable"
transport = "simulator"
[devices.simulator]
seed = 1
speed = 4.0

[[devices]]
id = "wearable-2"
kind = "wearable"
transport = "simulator"

# What the "beats" detector watches (the MIT-BIH lead "MLII", which no simulator produces): a recording,
# empty here, as the test is about the commands, not about the beats.
[[devices]]
id = "ecg-recording"
kind = "wearable"
transport = "replay"
lost_after_s = 3600
[devices.replay]
path = "recordings"

[[detectors]]
id = "beats"
type = "autoencoder"
stream = "beats"
channels = ["MLII"]
params = {{ model = "models/ecg-beat/current", public_key = "ops.pub", backend = "onnx", input = "beats" }}

[privacy]
raw_snippets = true

[remote]
enabled = true
public_key_file = "ops.pub"
models_dir = "models"
snippet_devices = ["wearable-1"]
allowed_commands = {allowed}
"""


class Backend:
    """The operator's side: signs commands, publishes them, collects responses by correlation data."""

    def __init__(self, port: int, key: Ed25519PrivateKey) -> None:
        self.key = key
        self.responses: Queue[tuple[str, bytes | None, dict[str, Any]]] = Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="backend", protocol=mqtt.MQTTv5)
        self.client.on_message = self._message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([("replies/#", 1), (f"{ROOT}/cmd/response", 1)])
        self.client.loop_start()
        assert subscribed.wait(10)

    def _message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        corr = getattr(msg.properties, "CorrelationData", None)
        self.responses.put((msg.topic, corr, json.loads(msg.payload)))

    def publish(
        self, name: str, payload: bytes, *, reply: bool = True, reply_to: str = "replies/ops"
    ) -> bytes:
        correlation = uuid.uuid4().bytes
        props = new_properties(PacketTypes.PUBLISH)
        if reply:
            props.ResponseTopic = reply_to
        props.CorrelationData = correlation
        self.client.publish(f"{ROOT}/cmd/{name}", payload, qos=1, properties=props).wait_for_publish(5)
        return correlation

    def call(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        *,
        payload: bytes | None = None,
        timeout: float = 15,
    ) -> dict[str, Any]:
        payload = payload if payload is not None else sign_command(self.key, ROOT, name, args)
        correlation = self.publish(name, payload)
        return self.answer(correlation, timeout)

    def answer(self, correlation: bytes, timeout: float = 15) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                topic, corr, doc = self.responses.get(timeout=left)
            except Empty:
                break
            if corr == correlation:
                doc["_topic"] = topic
                return doc
        raise AssertionError("no response with this correlation data")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class RunningAgent:
    """`Agent.run()` on its own event loop thread, stopped the way SIGTERM stops it."""

    def __init__(self, config: Path) -> None:
        self.agent = Agent(load_config(config))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.agent.run(),))
        self.thread.start()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.agent.stopping.set)
        self.thread.join(30)
        assert not self.thread.is_alive()
        self.loop.close()


@pytest.fixture
def setup(
    tmp_path: Path, mosquitto: LocalBroker, public_key_file: Path, private_key: Ed25519PrivateKey
) -> Iterator[tuple[Path, Backend]]:
    # The gateway starts with ecg-beat 1.0.0 installed and active, as a provisioning step would leave it.
    (tmp_path / "ops.pub").write_bytes(public_key_file.read_bytes())
    store = ModelStore(tmp_path / "models", public_key_file)
    store.install(pack_bundle(signed_model(tmp_path / "build" / "1.0.0", "1.0.0", private_key)))
    store.activate("ecg-beat", "1.0.0")
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG.format(port=mosquitto.port, allowed=ALL))
    (tmp_path / "recordings").mkdir()
    backend = Backend(mosquitto.port, private_key)
    yield config, backend
    backend.close()


def wait_for_status(backend: Backend, predicate: Any, timeout: float = 20) -> dict[str, Any]:
    """Ask `status` until its result satisfies `predicate` (the agent starts, or a reload lands)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        correlation = backend.publish("status", sign_command(backend.key, ROOT, "status"))
        try:
            doc = backend.answer(correlation, timeout=2)
        except AssertionError:
            continue  # not subscribed yet (first start) or between sessions
        if doc["ok"] and predicate(doc["result"]):
            return doc
        time.sleep(0.3)
    raise AssertionError("status never satisfied the condition")


@pytest.fixture
def running(setup: tuple[Path, Backend]) -> Iterator[tuple[Path, Backend, dict[str, Any]]]:
    """The agent, started and answering, with ecg-beat 1.0.0 loaded: (config, backend, first status)."""
    config, backend = setup
    agent = RunningAgent(config)
    try:
        first = wait_for_status(backend, lambda r: r["heartbeat"].get("models", {}) != {})
        yield config, backend, first
    finally:
        agent.stop()


def test_each_command_round_trips_with_its_correlation_data(
    running: tuple[Path, Backend, dict[str, Any]], tmp_path: Path
) -> None:
    config, backend, first = running
    assert first["schema"] == "edge-agent/response/1" and first["command"] == "status"
    assert first["_topic"] == "replies/ops"  # the request's ResponseTopic; correlation matched in answer()
    assert first["result"]["uplink"]["connected"] is True
    assert first["result"]["heartbeat"]["models"]["ecg-beat"].startswith("1.0.0")
    session = first["result"]["heartbeat"]["session"]

    listed = backend.call("models/list")
    assert listed["ok"] and listed["result"]["models"] == [
        {"name": "ecg-beat", "version": "1.0.0", "active": True, "managed": True}
    ]

    # A new signed bundle, installed and activated: the session reloads onto it.
    installed = backend.call(
        "models/install", {"bundle": bundle_at(tmp_path, backend, "1.1.0"), "activate": True}, timeout=30
    )
    assert installed["ok"], installed
    assert installed["result"]["activation"] == {
        "name": "ecg-beat",
        "version": "1.1.0",
        "previous": "1.0.0",
        "reloading": True,
    }
    reloaded = wait_for_status(
        backend, lambda r: r["heartbeat"].get("models", {}).get("ecg-beat", "").startswith("1.1.0")
    )
    assert reloaded["result"]["heartbeat"]["session"] > session

    # Deliberate activation of a version on disk (without reloading now).
    back = backend.call("models/activate", {"name": "ecg-beat", "version": "1.0.0", "reload": False})
    assert back["ok"] and back["result"]["previous"] == "1.1.0"
    assert (tmp_path / "models" / "ecg-beat" / "current").resolve().name == "1.0.0"

    # A raw snippet of an allowed device's vitals, named by pseudonym.
    pseudonym = Pseudonymizer(load_or_create_key(tmp_path / "state" / "pseudonym.key"))
    snippet = backend.call("snippet", {"device": pseudonym("wearable-1"), "stream": "vitals", "seconds": 2})
    assert snippet["ok"], snippet
    blocks = snippet["result"]["blocks"]
    assert snippet["result"]["device"] == pseudonym("wearable-1") and blocks
    assert "hr" in blocks[0]["channels"] and len(blocks[0]["values"][0]) == len(blocks[0]["channels"])
    assert snippet["result"]["samples"] == sum(len(b["values"]) for b in blocks)

    # Reload: a broken file is refused with its problems; a good one lands (and drops "snippet").
    good = config.read_text()
    config.write_text(good.replace("[privacy]", "[privacy]\nbogus_key = 1"))
    refused = backend.call("reload", timeout=30)
    assert refused["error"]["code"] == "refused"
    assert any("privacy.bogus_key" in p for p in refused["error"]["problems"])
    config.write_text(good.replace(ALL, '["status", "reload"]'))
    accepted = backend.call("reload", timeout=30)
    assert accepted["ok"] and accepted["result"] == {"accepted": True}
    later = reloaded["result"]["heartbeat"]["session"]
    wait_for_status(backend, lambda r: r["heartbeat"]["session"] > later)
    now_denied = backend.call("snippet", {"device": pseudonym("wearable-1"), "stream": "vitals"})
    assert now_denied["error"]["code"] == "not_allowed"


def test_forged_replayed_stale_old_and_unknown_commands_are_refused_and_logged(
    running: tuple[Path, Backend, dict[str, Any]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.remote")
    _config, backend, _first = running
    forged = backend.call("status", payload=sign_command(Ed25519PrivateKey.generate(), ROOT, "status"))
    assert forged["ok"] is False and forged["error"]["code"] == "bad_signature"
    unsigned = backend.call("status", payload=json.dumps({"command": "status"}).encode())
    assert unsigned["error"]["code"] == "bad_signature"
    # Refusals of commands that never verified go to cmd/response only, never to the request's
    # ResponseTopic (review remote #3: an insider's `{}` copy put one in the operator's tool).
    assert forged["_topic"] == unsigned["_topic"] == f"{ROOT}/cmd/response"

    listing = sign_command(backend.key, ROOT, "models/list")
    assert backend.call("models/list", payload=listing)["ok"]
    replay = backend.call("models/list", payload=listing)  # the same signed message, captured and resent
    assert replay["error"]["code"] == "replayed"
    stale = backend.call(
        "status", payload=sign_command(backend.key, ROOT, "status", issued_at=time.time() - 600)
    )
    assert stale["error"]["code"] == "stale"
    redirected = backend.call("status", payload=sign_command(backend.key, "edge/lab/gw-other", "status"))
    assert redirected["error"]["code"] == "bad_request"
    retargeted = backend.call("reload", payload=sign_command(backend.key, ROOT, "status"))
    assert retargeted["error"]["code"] == "bad_request"  # a signed status cannot become a reload

    # An old bundle, validly signed, cannot roll the model back.
    older = backend.call("models/install", {"bundle": bundle_at(tmp_path, backend, "0.9.0")}, timeout=30)
    assert older["error"]["code"] == "refused" and "anti-rollback" in older["error"]["message"]
    assert not (tmp_path / "models" / "ecg-beat" / "0.9.0").exists()

    pseudonym = Pseudonymizer(load_or_create_key(tmp_path / "state" / "pseudonym.key"))
    denied = backend.call("snippet", {"device": pseudonym("wearable-2"), "stream": "vitals", "seconds": 1})
    assert denied["error"]["code"] == "not_allowed" and "blocks" not in json.dumps(denied)

    # Unknown command, no ResponseTopic: answered on the gateway's response topic.
    bogus = backend.answer(backend.publish("bogus", sign_command(backend.key, ROOT, "bogus"), reply=False))
    assert bogus["_topic"] == f"{ROOT}/cmd/response" and bogus["error"]["code"] == "unknown_command"

    lines = [r.getMessage() for r in caplog.records if r.name.startswith("agent.remote")]
    for code in ("bad_signature", "replayed", "stale", "bad_request", "not_allowed", "unknown_command"):
        assert any(f"refused: {code}" in line for line in lines), code
    leaked = [
        line for line in lines if "wearable" in line or "gw-" in line or pseudonym("wearable-2") in line
    ]
    assert leaked == []


def test_a_response_topic_on_the_gateways_own_event_topics_is_refused(
    running: tuple[Path, Backend, dict[str, Any]], mosquitto: LocalBroker
) -> None:
    """Answers posing as the gateway's alarms, heartbeats or status (audit audsec, finding 7): such a
    ResponseTopic is refused as bad_request, answered on cmd/response; the command does not run."""
    _config, backend, _first = running
    events = Subscriber(mosquitto, f"{ROOT}/+")
    try:
        for leaf in ("alarm", "heartbeat", "status"):
            payload = sign_command(backend.key, ROOT, "status")
            answer = backend.answer(backend.publish("status", payload, reply_to=f"{ROOT}/{leaf}"))
            assert answer["_topic"] == f"{ROOT}/cmd/response" and answer["error"]["code"] == "bad_request"
            assert "ResponseTopic" in answer["error"]["message"]
        elsewhere = backend.answer(backend.publish("status", b"{}", reply_to="edge/other-site/gw-r/alarm"))
        assert elsewhere["_topic"] == f"{ROOT}/cmd/response"
        assert backend.call("status")["_topic"] == "replies/ops"  # outside the fleet's tree: as asked
    finally:
        events.close()
    posing = [m for m in events.snapshot() if b"edge-agent/response/1" in m.payload]
    assert posing == []


def test_a_signed_reply_to_binds_the_answer_to_its_response_topic(
    running: tuple[Path, Backend, dict[str, Any]],
) -> None:
    """Privacy review m4: the signature covered the body, not the ResponseTopic, so whoever could read a
    signed command before the gateway took it and write cmd/# could send it on first with a ResponseTopic
    of its own and read the answer (a snippet's raw values). A body that names its `reply_to` is
    answered only on that topic: sent with another ResponseTopic it is refused, on cmd/response, before
    its nonce is spent, so the operator's own copy still runs; a body without it is accepted as before."""
    _config, backend, _first = running
    payload = sign_command(backend.key, ROOT, "status", reply_to="replies/ops")
    stolen = backend.answer(backend.publish("status", payload, reply_to="replies/thief"))
    assert stolen["_topic"] == f"{ROOT}/cmd/response" and stolen["error"]["code"] == "bad_request"
    assert "reply_to" in stolen["error"]["message"] and "result" not in stolen
    without = backend.answer(backend.publish("status", payload, reply=False))
    assert without["_topic"] == f"{ROOT}/cmd/response" and without["error"]["code"] == "bad_request"
    genuine = backend.answer(backend.publish("status", payload, reply_to="replies/ops"))
    assert genuine["ok"] and genuine["_topic"] == "replies/ops", genuine
    old_style = backend.call("status")  # no reply_to: any allowed ResponseTopic, as before
    assert old_style["ok"] and old_style["_topic"] == "replies/ops"


def bundle_at(tmp_path: Path, backend: Backend, version: str) -> dict[str, Any]:
    return pack_bundle(signed_model(tmp_path / "build" / version, version, backend.key))


def _port(config_text: str) -> int:
    return int(config_text.split("127.0.0.1:", 1)[1].split('"', 1)[0])


def test_the_operator_client_sends_and_prints_the_answer(
    running: tuple[Path, Backend, dict[str, Any]],
    tmp_path: Path,
    mosquitto: LocalBroker,
    private_key: Ed25519PrivateKey,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key_file = tmp_path / "ops.key"
    key_file.write_bytes(
        private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    common = ["--root", ROOT, "--key", str(key_file), "--url", f"mqtt://127.0.0.1:{mosquitto.port}"]
    sent = Subscriber(mosquitto, f"{ROOT}/cmd/models/list")
    try:
        assert client_main(["send", "models/list", *common]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed["ok"] and printed["result"]["models"][0]["version"] == "1.0.0"
        # the broker may deliver the command to this watcher after the agent's answer came back
        (command,) = sent.wait_for(lambda got: len(got) >= 1)
    finally:
        sent.close()
    # its body names the ResponseTopic it went with (privacy review m4): answered there only
    body = json.loads(command.json()["signed"])
    assert body["reply_to"] == command.properties["ResponseTopic"]
    assert body["reply_to"].startswith("edge-ops/replies/")
    assert (
        client_main(["sign", "status", "--root", ROOT, "--key", str(key_file), "--reply-to", "ops/r1"]) == 0
    )
    assert json.loads(json.loads(capsys.readouterr().out)["signed"])["reply_to"] == "ops/r1"
    bundle_dir = signed_model(tmp_path / "build" / "0.1.0", "0.1.0", private_key)
    assert client_main(["send", "models/install", *common, "--bundle", str(bundle_dir)]) == 1
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "refused"  # older than the active one
