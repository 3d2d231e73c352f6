"""MqttUplink over TLS (mqtts) to mosquitto with mutual TLS: verification is on by default."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from uplink_probe import Pki, make_tls_material, mqtt_config

from agent.config.schema import OutboxConfig, TlsConfig
from agent.localbroker import BrokerTls, LocalBroker
from agent.outbox import Kind, Outbox, OutboxItem
from agent.uplink.mqtt import MqttUplink
from agent.uplink.topics import Topics

BrokerFactory = Callable[..., LocalBroker]
TOPICS = Topics("edge", "site1", "gw1")


def run_for(uplink: MqttUplink, done: Callable[[], bool], timeout_s: float) -> None:
    async def main() -> None:
        task = asyncio.create_task(uplink.run())
        try:
            for _ in range(int(timeout_s / 0.05)):
                if done():
                    return
                await asyncio.sleep(0.05)
        finally:
            await uplink.stop(timeout_s=1.0)
            await asyncio.wait_for(task, 10)

    asyncio.run(main())


def tls_broker(make_broker: BrokerFactory, tmp_path: Path) -> tuple[LocalBroker, TlsConfig]:
    pki = make_tls_material(tmp_path / "pki")
    broker = make_broker(tls=BrokerTls(pki.ca, pki.server_cert, pki.server_key, require_certificate=True))
    return broker, TlsConfig(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)


def test_mutual_tls_delivers(make_broker: BrokerFactory, tmp_path: Path) -> None:
    broker, tls = tls_broker(make_broker, tmp_path)
    assert broker.url.startswith("mqtts://")
    outbox = Outbox(OutboxConfig(tmp_path / "o.db"))
    outbox.put(OutboxItem("ev1", TOPICS.alarm, json.dumps({"id": "ev1"}).encode(), Kind.ALARM, 0, 0.0))
    uplink = MqttUplink(mqtt_config(broker, tls=tls), TOPICS, outbox, 1, backoff_min_s=0.1)
    run_for(uplink, lambda: outbox.depth() == 0, 10.0)
    assert outbox.depth() == 0 and uplink.counters().delivered == 1


def test_server_certificate_from_an_unknown_ca_is_refused(make_broker: BrokerFactory, tmp_path: Path) -> None:
    broker, tls = tls_broker(make_broker, tmp_path)
    other = make_tls_material(tmp_path / "other-pki", name="other")
    wrong_ca = TlsConfig(ca_file=other.ca, cert_file=tls.cert_file, key_file=tls.key_file)
    outbox = Outbox(OutboxConfig(tmp_path / "o.db"))
    outbox.put(OutboxItem("ev1", TOPICS.alarm, b"{}", Kind.ALARM, 0, 0.0))
    uplink = MqttUplink(mqtt_config(broker, tls=wrong_ca), TOPICS, outbox, 1, backoff_min_s=0.1)
    run_for(uplink, lambda: False, 1.5)
    assert uplink.counters().connects == 0
    assert outbox.depth() == 1  # still waiting, not lost
    assert "unknown ca" in broker.log_tail(200)  # the client rejected the server's chain


@pytest.mark.parametrize("insecure", [False, True])
def test_server_certificate_for_another_host_name_is_refused(
    insecure: bool, make_broker: BrokerFactory, tmp_path: Path
) -> None:
    """Host-name verification is on: a certificate from the trusted CA, but for another name, is
    refused; `mqtt.insecure` (which only permits plain mqtt:// to remote hosts) does not change that."""
    pki = Pki(tmp_path / "pki")
    wrong_name = pki.issue("broker.example", stem="server", server=True, hosts=("broker.example",))
    broker = make_broker(tls=BrokerTls(pki.ca, wrong_name.cert, wrong_name.key))
    outbox = Outbox(OutboxConfig(tmp_path / "o.db"))
    outbox.put(OutboxItem("ev1", TOPICS.alarm, b"{}", Kind.ALARM, 0, 0.0))
    config = replace(mqtt_config(broker, tls=TlsConfig(ca_file=pki.ca)), insecure=insecure)
    uplink = MqttUplink(config, TOPICS, outbox, 1, backoff_min_s=0.1)
    run_for(uplink, lambda: "bad certificate" in broker.log_tail(200), 8.0)
    assert "bad certificate" in broker.log_tail(200)  # the agent aborted the handshake
    assert uplink.counters().connects == 0 and outbox.depth() == 1
