"""`edge-agent status` keeps the first cause of an outage beside the last one (offline review m2): at
1970 the TLS line said "not valid yet ... set the gateway's clock", then libfaketime's EINVAL killed
paho's network thread, and status showed only that. Real certificates, a real mosquitto serving them,
the real uplink; `time.sleep` fails in paho's threads as libfaketime's did (test_uplink_network_thread)."""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from pathlib import Path

import pytest
from test_operator_uplink_errors import BrokerFactory
from test_uplink_network_thread import TOPICS, SleepFailsInPaho, until
from uplink_probe import Pki, mqtt_config

from agent.config.schema import OutboxConfig, TlsConfig
from agent.localbroker import BrokerTls
from agent.outbox import Kind, Outbox, OutboxItem
from agent.status import render
from agent.uplink.mqtt import MqttUplink

DAY = datetime.timedelta(days=1)
NOT_YET = "is not valid yet"


def test_the_first_cause_of_an_outage_stays_in_status_after_a_later_one(
    make_broker: BrokerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    pki = Pki(tmp_path / "pki")
    server = pki.issue(
        "127.0.0.1", stem="server", server=True, valid_from=now + DAY, valid_until=now + 10 * DAY
    )
    broker = make_broker(tls=BrokerTls(pki.ca, server.cert, server.key))
    sleep = SleepFailsInPaho()
    sleep.failing = False
    monkeypatch.setattr(time, "sleep", sleep)
    outbox = Outbox(OutboxConfig(tmp_path / "o.db"))
    outbox.put(OutboxItem("a1", TOPICS.alarm, json.dumps({"id": "a1"}).encode(), Kind.ALARM, 0, 0.0))
    config = mqtt_config(broker, tls=TlsConfig(ca_file=pki.ca))
    uplink = MqttUplink(config, TOPICS, outbox, 1, poll_s=0.1, backoff_min_s=0.05, backoff_max_s=0.2)

    async def main() -> None:
        task = asyncio.create_task(uplink.run())
        try:
            await until(lambda: NOT_YET in (uplink.counters().problem or ""), "the TLS cause told")
            assert uplink.counters().first_problem is None  # one cause so far: nothing hidden
            sleep.failing = True  # then paho's thread dies (libfaketime's EINVAL)
            await until(lambda: "network thread" in (uplink.counters().problem or ""), "the later cause")
        finally:
            await uplink.stop(timeout_s=1.0)
            await asyncio.wait_for(task, 10)

    asyncio.run(main())
    counters = uplink.counters()
    assert NOT_YET in (counters.first_problem or "") and "set the gateway's clock" in (
        counters.first_problem or ""
    )
    shown = render(
        "live",
        {
            "heartbeat": {"gateway": "gw1"},
            "uplink": {
                "connected": False,
                "problem": counters.problem,
                "first_problem": counters.first_problem,
            },
        },
    )
    assert f"first cause in this outage: {counters.first_problem}" in shown
    outbox.close()
