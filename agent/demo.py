"""`edge-agent demo`: the whole job on one machine, with nothing installed beforehand but the package.

It starts a private broker (mosquitto when installed, otherwise the embedded amqtt broker), the
agent with simulated devices from the embedded default config (or the one given), and a central
receiver that prints every alarm and heartbeat as it arrives. Ctrl-C or `--duration` ends it
cleanly: the agent publishes its offline status, then the broker stops.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import sys
import tempfile
import time
import tomllib
from importlib import resources
from pathlib import Path

from agent.config import AgentConfig, load_config, parse_config
from agent.config.schema import MQTT_5, MQTT_311
from agent.daemon import Agent, preflight
from agent.localbroker import LocalBroker
from agent.receiver import Receiver


def demo_config(
    workdir: Path, port: int, speed: float | None, config_path: Path | None, *, protocol: str = MQTT_5
) -> AgentConfig:
    """The config to demo, pointed at the private broker and a throw-away state folder; `protocol`
    "3.1.1" for the embedded amqtt broker (no MQTT v5: its refusals would go unseen, which a demo
    without an ACL can live with; a gateway's config must choose that itself, `mqtt.protocol`)."""
    if config_path is not None:
        config = load_config(config_path)
    else:
        text = resources.files("agent").joinpath("defaults/demo.toml").read_bytes()
        config = parse_config(tomllib.loads(text.decode()), base_dir=workdir, source="<embedded demo config>")
    state = workdir / "state"
    devices = config.devices
    if speed is not None:
        devices = tuple(
            dataclasses.replace(d, simulator=dataclasses.replace(d.simulator, speed=speed))
            if d.simulator
            else d
            for d in devices
        )
    return dataclasses.replace(
        config,
        gateway=dataclasses.replace(config.gateway, state_dir=state),
        mqtt=dataclasses.replace(
            config.mqtt, host="127.0.0.1", port=port, tls=None, auth=None, protocol=protocol
        ),
        outbox=dataclasses.replace(config.outbox, path=state / "outbox.sqlite"),
        devices=devices,
    )


def run_demo(*, duration: float | None, config_path: Path | None, speed: float | None) -> int:
    with tempfile.TemporaryDirectory(prefix="edge-demo-") as tmp, LocalBroker() as broker:
        workdir = Path(tmp)
        protocol = MQTT_311 if broker.backend == "amqtt" else MQTT_5  # amqtt speaks 3.1.1 only
        config = demo_config(workdir, broker.port, speed, config_path, protocol=protocol)
        preflight(config)
        print(
            f"edge-agent demo: broker {broker.backend} on {broker.url}; gateway {config.gateway.id} with "
            f"{len(config.devices)} simulated device(s); "
            f"{'Ctrl-C to stop' if duration is None else f'stopping after {duration:g} s'}"
        )
        print("device ids and patient ids never leave the gateway: the receiver sees pseudonyms (d-…)\n")
        receiver = Receiver("127.0.0.1", broker.port, config.mqtt.topic_prefix, show=_print).start()
        receiver.subscribed.wait(5)
        try:
            asyncio.run(_run_agent(config, duration))
        finally:
            time.sleep(0.5)  # let the receiver print the offline status
            receiver.stop()
        alarms, beats = len(receiver.alarms), len(receiver.heartbeats)
        print(f"\ndemo ended: {alarms} alarm event(s), {beats} heartbeat(s) received")
    return 0


async def _run_agent(config: AgentConfig, duration: float | None) -> None:
    agent = Agent(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, agent.stopping.set)
    if duration is not None:
        loop.call_later(duration, agent.stopping.set)
    await agent.run()


def _print(line: str) -> None:
    print(line, flush=True)
    sys.stdout.flush()
