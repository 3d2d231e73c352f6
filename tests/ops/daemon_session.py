"""A daemon `_Session` built as `Agent` builds it, minus sources and a broker: for tests of its parts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.config import parse_config
from agent.gc_pacing import CollectorPacer
from agent.outbox import Outbox
from agent.pipeline import Pipeline
from agent.privacy import Pseudonymizer
from agent.session import _Session
from agent.uplink.mqtt import MqttUplink
from agent.uplink.topics import Topics

CONFIG: dict[str, Any] = {
    "gateway": {"id": "gw", "site": "s"},
    "mqtt": {"url": "mqtt://127.0.0.1:1883"},
    "outbox": {"path": "outbox.sqlite"},
    "devices": [{"id": "bed-4", "kind": "wearable", "transport": "simulator", "lost_after_s": 30}],
}


def session(
    tmp_path: Path, config: dict[str, Any] = CONFIG, gc_pacer: CollectorPacer | None = None
) -> _Session:
    cfg = parse_config(config, base_dir=tmp_path)
    pseudonym = Pseudonymizer(b"k" * 32)
    topics = Topics("edge", "s", "gw")
    outbox = Outbox(cfg.outbox)
    uplink = MqttUplink(cfg.mqtt, topics, outbox, 1)  # never run: no connection is made
    pipeline = Pipeline(cfg, pseudonym)
    return _Session(cfg, topics, pipeline, outbox, uplink, 1, pseudonym, tmp_path, gc_pacer=gc_pacer)
