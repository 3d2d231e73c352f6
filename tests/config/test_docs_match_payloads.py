"""docs/payloads.md and docs/topics.md list the fields and topics the code sends, no more and no fewer.

The code side is the code's own output: `to_payload()` of `agent.events` objects built with every
optional field set (and once with none, to tell which fields are optional), the status messages of
`agent.uplink.connection.status_payload`, and the properties of `agent.uplink.topics.Topics`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from agent.events import (
    ALARM_SCHEMA,
    HEARTBEAT_SCHEMA,
    AlarmEvent,
    AlarmKind,
    DeviceHealth,
    Explanation,
    Heartbeat,
    Phase,
    Priority,
)
from agent.uplink.connection import STATUS_SCHEMA, status_payload
from agent.uplink.topics import Topics

DOCS = Path(__file__).resolve().parents[2] / "docs"
FIELD_HEADER = "| field | type | meaning |"


def field_tables(markdown: str) -> dict[str, dict[str, str]]:
    """{table name: {field: its type and meaning}}; a table is named by its `## …`schema`` heading or a
    "`name`:" line above it."""
    tables: dict[str, dict[str, str]] = {}
    name: str | None = None
    in_table = False
    for line in markdown.splitlines():
        heading = re.match(r"^## .*`edge-agent/(\w+)/\d+`", line)
        label = re.match(r"^`(\w+)(\[\])?`:$", line.strip())
        if heading or label:
            name, in_table = (heading or label).group(1), False  # type: ignore[union-attr]
        elif line.startswith("#"):
            name, in_table = None, False
        elif line.strip() == FIELD_HEADER and name is not None:
            in_table = True
            tables.setdefault(name, {})
        elif in_table and name is not None and line.startswith("|"):
            if set(line) <= set("|- "):
                continue
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            for key in re.findall(r"`(\w+)`", cells[0]):
                tables[name][key] = " | ".join(cells[1:])
        else:
            in_table = False
    return tables


def _explanation() -> Explanation:
    return Explanation("hr-high", 22.0, 0.0, (("hr", 1.0),), {"hr": 70.0}, "ok", "hr 142 bpm above limit")


def _alarm(**optional: Any) -> AlarmEvent:
    return AlarmEvent(
        id="0190d3f0-0000-7000-8000-000000000000",
        seq=0,
        phase=Phase.END if "end_time" in optional else Phase.START,
        gateway="gw-1",
        device="d-aaaaaaaaaaaaaaaa",
        stream="vitals",
        condition="tachycardia",
        priority=Priority.MEDIUM,
        kind=AlarmKind.PHYSIOLOGICAL,
        onset_time=1.0,
        detection_time=2.0,
        value=142.0,
        threshold=120.0,
        unit="bpm",
        explanation=_explanation(),
        **optional,
    )


def _device(**optional: Any) -> DeviceHealth:
    return DeviceHealth("d-aaaaaaaaaaaaaaaa", 1.0, 1.0, 0, 0, True, **optional)


def _heartbeat(**optional: Any) -> Heartbeat:
    return Heartbeat("gw-1", 1.0, 10.0, 1, (_device(),), 0, None, 0, **optional)


ALL_OPTIONAL = {
    "alarm": (_alarm(), _alarm(end_time=3.0, config_hash="ab", model_hash="cd")),
    "explanation": (_explanation(), _explanation()),
    "heartbeat": (
        _heartbeat(),
        _heartbeat(
            models={"pump": "1.0.0"},
            cpu_percent=1.0,
            rss_bytes=1,
            temperature_c=40.0,
            calibration={"hr": {"state": "learning"}},
            running={"d-aaaaaaaaaaaaaaaa/machine": {"state": "off", "since": None}},
            learning={"pump-wear": {"of_s": 3600, "learnt_s": {"d-aaaaaaaaaaaaaaaa/machine": 10}}},
        ),
    ),
    "devices": (_device(), _device(reconnects=1, desaturation_index_per_h=2.0, beats_per_min=72.0)),
}


def _payload(obj: Any) -> dict[str, Any]:
    payload: dict[str, Any] = obj.to_payload()
    return payload


def test_every_payload_field_is_documented_and_every_documented_field_is_sent() -> None:
    tables = field_tables((DOCS / "payloads.md").read_text())
    assert sorted(tables) == sorted(ALL_OPTIONAL), "payloads.md's field tables, by name"
    for name, (bare, full) in ALL_OPTIONAL.items():
        sent = set(_payload(full))
        assert sorted(set(tables[name]) - sent) == [], f"{name}: documented but never sent"
        assert sorted(sent - set(tables[name])) == [], f"{name}: sent but not in payloads.md"
        only_sometimes = sorted(sent - set(_payload(bare)))
        unmarked = [f for f in only_sometimes if "optional" not in tables[name][f].lower()]
        assert unmarked == [], f"{name}: sent only when set, but payloads.md does not say optional"


def test_documented_schema_names_are_the_codes() -> None:
    tables = field_tables((DOCS / "payloads.md").read_text())
    assert tables["alarm"]["schema"] == f'string | `"{ALARM_SCHEMA}"`'
    assert tables["heartbeat"]["schema"] == f'string | `"{HEARTBEAT_SCHEMA}"`'


def test_documented_status_messages_have_the_codes_fields() -> None:
    """topics.md shows the three status payloads as JSON with `…` for values."""
    text = (DOCS / "topics.md").read_text()
    shown = [m for m in re.findall(r"`(\{[^`]*\})`", text) if '"state"' in m]
    # `{…,"state":…}`: "…" first stands for the fields above, then for any value; N is the session
    values = [re.sub(r":(…|N)", ":0", m).replace("{…,", "{") for m in shown]
    documented = [set(json.loads(v)) for v in values]
    assert f'"schema":"{STATUS_SCHEMA}"' in shown[0]
    sent = [
        set(json.loads(status_payload("gw", 1, "online", 1.0))),
        set(json.loads(status_payload("gw", 1, "offline", 1.0, clean=False))),
        set(json.loads(status_payload("gw", 1, "offline", 1.0, clean=True, reason="stop")))
        - {"schema", "gateway"},
    ]
    assert documented == sent


def test_the_topic_table_is_the_gateways_topics() -> None:
    topics = Topics("P", "S", "G")
    code = {
        getattr(topics, name).replace(topics.root, "{root}")
        for name, value in vars(Topics).items()
        if isinstance(value, property) and name != "root"
    }
    text = (DOCS / "topics.md").read_text()
    layout = text[text.index("## Topic layout") : text.index("## Status")]
    documented = set(re.findall(r"^\| `(\{root\}[^`]*)` \|", layout, flags=re.MULTILINE))
    assert documented == code
