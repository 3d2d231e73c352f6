"""A broker certificate outside its dates is told as such, with the gateway's date: renew it, or set the
clock. Before, an expired one from the right CA sent the operator to mqtt.tls.ca_file. Real
certificates (`uplink_probe.Pki`), a real mosquitto serving them, the real uplink."""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

import pytest
from test_operator_uplink_errors import (
    BrokerFactory,
    fails_several_times,
    outbox_with_alarm,
    uplink_lines,
)
from uplink_probe import Pki, mqtt_config

from agent.config.schema import TlsConfig
from agent.localbroker import BrokerTls

DAY = datetime.timedelta(days=1)


@pytest.mark.parametrize(
    ("valid_from", "valid_until", "told", "hint"),
    [
        (-10 * DAY, -DAY, "has expired (certificate has expired)", "renew the broker's certificate"),
        (DAY, 10 * DAY, "is not valid yet (certificate is not yet valid)", "set the gateway's clock"),
    ],
    ids=["expired", "not-yet-valid"],
)
def test_a_broker_certificate_out_of_its_dates_is_told_with_the_gateways_date(
    make_broker: BrokerFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    valid_from: datetime.timedelta,
    valid_until: datetime.timedelta,
    told: str,
    hint: str,
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    pki = Pki(tmp_path / "pki")
    server = pki.issue(
        "127.0.0.1", stem="server", server=True, valid_from=now + valid_from, valid_until=now + valid_until
    )
    broker = make_broker(tls=BrokerTls(pki.ca, server.cert, server.key))
    outbox = outbox_with_alarm(tmp_path)
    uplink = fails_several_times(mqtt_config(broker, tls=TlsConfig(ca_file=pki.ca)), outbox, caplog)

    (warning,) = uplink_lines(caplog, logging.WARNING)  # one line for all the attempts
    assert f"the TLS certificate of mqtts://127.0.0.1:{broker.port} {told}" in warning
    assert f"the gateway's clock says {now:%Y-%m-%d} (UTC)" in warning
    assert hint in warning
    assert "must hold the CA" not in warning  # the CA is the right one
    assert uplink.counters().problem is not None and told in uplink.counters().problem
    assert outbox.depth() == 1
