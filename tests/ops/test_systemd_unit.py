"""deploy/edge-agent.service at boot on an offline gateway (offline review m3).

An offline clinic's gateway has no network after a power cut (its modem down for days). A unit ordered
after `network-online.target`, and pulling it in, waits at every boot until the wait-online service
gives up (1.5 to 2 minutes) before monitoring anyone. The agent needs nothing from the network to start:
`check-config` looks nothing up, and the uplink retries its connection, DNS failures included; the
second test runs it so.
"""

from __future__ import annotations

from pathlib import Path

from test_full_disk import CONFIG
from test_operator_errors import AgentRun

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "edge-agent.service"


def _settings(section: str) -> dict[str, list[str]]:
    """`section`'s settings, each key's space-separated values from all its lines (systemd's lists)."""
    found: dict[str, list[str]] = {}
    current = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
        elif current == section and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).extend(value.split())
    return found


def test_the_unit_does_not_wait_for_the_network_to_be_online() -> None:
    unit = _settings("Unit")
    ordering = unit.get("After", []) + unit.get("Wants", []) + unit.get("Requires", [])
    assert "network-online.target" not in ordering
    assert "network.target" in unit["After"]  # the stop still comes before the network goes down
    assert "bluetooth.target" in unit["After"]


def test_an_agent_started_without_a_network_monitors_and_keeps_trying_the_broker(tmp_path: Path) -> None:
    """No broker host can be resolved (`.invalid` is never in DNS): the start goes on, the episode is
    committed to the outbox, and the uplink names the DNS failure and tries again."""
    config = tmp_path / "agent.toml"
    text = CONFIG.format(port=19701).replace("127.0.0.1:19701", "broker.invalid:19701")
    config.write_text(text.replace("[mqtt]\n", "[mqtt]\ninsecure = true\n"))
    (tmp_path / "state").mkdir()
    agent = AgentRun(config)
    try:
        agent.wait_for("cannot resolve the broker host 'broker.invalid'")
        agent.wait_for("alarm start medium tachycardia", timeout_s=60)
        assert agent.proc.poll() is None
    finally:
        assert agent.stop() == 0
