"""Shared pytest fixtures. Each fixture owns one real resource; add yours with a small edit below.

`mosquitto` starts a real, private mosquitto broker on a free 127.0.0.1 port for one test. The tests
need the binary: when it is missing they FAIL (with the install command), they never skip, because a
skipped uplink test would hide exactly the failures it exists to catch.

`refusing_port` is a 127.0.0.1 port that refuses connections for the whole test: bound but not
listening, so no other process can start listening on it meanwhile (a port that was merely free when
chosen can be taken by a parallel test's broker, and the test then meets a listener).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ports import RefusingPort

from agent.localbroker import LocalBroker, find_mosquitto
from agent.logs import close_rate_limits, redact_identifiers

BrokerFactory = Callable[..., LocalBroker]


def _require_mosquitto() -> None:
    if find_mosquitto() is None:
        pytest.fail(
            "the mosquitto broker is required by the tests and was not found on PATH or in /usr/sbin: "
            "apt-get install mosquitto",
            pytrace=False,
        )


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[BrokerFactory]:
    """Factory for started mosquitto brokers with options (persistence, users, acl, tls, ...)."""
    _require_mosquitto()
    brokers: list[LocalBroker] = []

    def make(**options: Any) -> LocalBroker:
        options.setdefault("workdir", tmp_path / f"broker{len(brokers)}")
        broker = LocalBroker(backend="mosquitto", **options)
        brokers.append(broker)
        return broker.start()

    yield make
    for broker in brokers:
        broker.close()


@pytest.fixture
def mosquitto(make_broker: BrokerFactory) -> LocalBroker:
    """A started private mosquitto broker (plain listener, anonymous), stopped after the test."""
    return make_broker()


@pytest.fixture
def refusing_port() -> Iterator[RefusingPort]:
    """A 127.0.0.1 port where nothing accepts connections, held for the test."""
    held = RefusingPort()
    yield held
    held.release()


@pytest.fixture(autouse=True)
def _no_agent_logging_after_the_test() -> Iterator[None]:
    """A test that set up the agent's logging in-process (`cli.main`) leaves its handler on the root
    logger: the rate limit's summary timer and the next tests' lines then wrote to a capture stream
    already closed ("Logging error" in the middle of a run), and its redaction filter rewrote the next
    tests' captured lines (a MAC read `<mac>` in one test only after another ran). Pytest's own
    handlers come and go per test phase and are left to it."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    close_rate_limits()
    for handler in list(root.handlers):
        if handler not in before and not type(handler).__module__.startswith("_pytest"):
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(autouse=True)
def _no_identifiers_registered_after_the_test() -> Iterator[None]:
    """A test that ran the agent leaves its config's identifiers registered with the log redaction, and
    the next test's sources would name their devices by those pseudonyms (`agent.logs.device_name`)."""
    yield
    redact_identifiers({})
