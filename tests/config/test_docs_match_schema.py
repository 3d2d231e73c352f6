"""docs/configuration.md says what the loader does: the same keys per section, and the same defaults.

The code side is observed, not copied: every `Table` getter the loader calls is recorded while it reads
a file with every section present (that gives each section's keys, and which are required), and each
default is read back from the `AgentConfig` the loader builds, in a table of that file that leaves the
key out (that is what an operator gets by leaving it out). The loader repeats the defaults of
`agent.config.schema`, so a last test checks the two copies agree.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from agent.config.loader import parse_config
from agent.config.reader import REQUIRED, Table
from agent.config.schema import AgentConfig

ROOT = Path(__file__).resolve().parents[2]
CONFIGURATION_MD = ROOT / "docs" / "configuration.md"

# Documented defaults written as prose because the code's value is a placeholder resolved elsewhere.
# Each entry: (section, key) -> (the docs' text, the code's placeholder, why they mean the same).
PROSE_DEFAULTS: dict[tuple[str, str], tuple[str, Any, str]] = {
    ("mqtt", "client_id"): ("gateway id", "", '"" is replaced by gateway.id when connecting'),
    ("privacy", "key_file"): ("`<state_dir>/pseudonym.key`", None, "None resolves under gateway.state_dir"),
    ("remote", "models_dir"): ("`<state_dir>/models`", None, "None resolves under gateway.state_dir"),
    ("remote", "model_public_key_file"): ("`public_key_file`", None, "None falls back to public_key_file"),
}

# Keys whose value is a table or an array of tables: their presence is what matters (a "required"
# array of tables is an empty list in code, refused afterwards), so only their being documented is checked.
TABLE_KINDS = ("a table", "an array of tables")


# -- the docs side -----------------------------------------------------------------------------------

HEADING = re.compile(r"^#{2,4} `\[\[?([A-Za-z_.]+)\]\]?`")
TABLE_HEADER = "| key | type | default | meaning |"


def _cells(row: str) -> list[str]:
    """A markdown table row's cells; `\\|` inside a cell is a literal bar."""
    parts = re.split(r"(?<!\\)\|", row.strip())[1:-1]
    return [p.strip().replace("\\|", "|") for p in parts]


def documented_keys(markdown: str, column: str = "default") -> dict[str, dict[str, str]]:
    """{section: {key: its `column` cell}} from every key table under a `[section]` heading."""
    sections: dict[str, dict[str, str]] = {}
    section: str | None = None
    in_table = False
    for line in markdown.splitlines():
        if line.startswith("#"):  # any heading ends a section; only `[section]` headings start one
            heading = HEADING.match(line)
            section, in_table = (heading.group(1) if heading else None), False
            if section is not None:
                sections.setdefault(section, {})
        elif line.strip() == TABLE_HEADER:
            assert section is not None, "a key table outside a `[section]` heading"
            in_table = True
        elif in_table and section is not None and line.startswith("|"):
            if set(line) <= set("|- "):
                continue
            key_cell, type_cell, default_cell, _meaning = _cells(line)[:4]
            keys = re.findall(r"`([A-Za-z_]+)`", key_cell)
            defaults = [default_cell] if len(keys) == 1 else [d.strip() for d in default_cell.split(",")]
            assert len(defaults) == len(keys), f"[{section}] row {key_cell}: one default per key"
            for key, default in zip(keys, defaults, strict=True):
                assert key not in sections[section], f"[{section}] documents {key} twice"
                sections[section][key] = default if column == "default" else type_cell
        else:
            in_table = False
    return sections


NUMBER = re.compile(r"^-?\d[\d_]*(\.\d+)?([eE][-+]?\d+)?(?=$| \()")


def parse_default(cell: str) -> Any:
    """The value a default cell states; a trailing "(…)" is explanation. Prose raises ValueError."""
    text = cell.strip()
    if text.startswith("required"):
        return REQUIRED
    if text == "none" or text.startswith("none ("):
        return None
    if text in ("true", "false"):
        return text == "true"
    if text == '""':
        return ""
    if text == "{}":
        return {}
    number = NUMBER.match(text)
    if number:
        value = number.group(0).replace("_", "")
        return float(value) if any(c in value for c in ".eE") else int(value)
    if text.startswith("all: "):
        return tuple(re.findall(r"`([^`]+)`", text))
    code = re.match(r"^`([^`]*)`(?=$| \()", text)
    if code:
        inner = code.group(1)
        if inner.startswith("["):
            return tuple(tomllib.loads(f"v = {inner}")["v"])
        return inner
    if re.fullmatch(r"[a-z]+", text):
        return text
    raise ValueError(f"not a value: {cell!r}")


def same_value(documented: Any, code: Any) -> bool:
    if documented is REQUIRED or code is REQUIRED:
        return documented is code
    if documented is None or code is None:
        return documented is code
    if isinstance(documented, bool) or isinstance(code, bool):
        return type(documented) is type(code) and documented == code
    if isinstance(documented, int | float):
        return isinstance(code, int | float) and float(documented) == float(code)
    if isinstance(code, enum.Enum):
        code = code.value
    if isinstance(code, Path):
        code = str(code)
    if isinstance(documented, tuple):
        return isinstance(code, tuple | list) and tuple(code) == documented
    if isinstance(documented, dict):
        return isinstance(code, Mapping) and dict(code) == documented
    return bool(documented == code)


# -- the code side -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CodeKey:
    default: Any  # the getter's default: REQUIRED when the key must be given
    expected: str  # the getter's kind: "a table", "a number", ...


def _section(path: str) -> str:
    """`devices[2].modbus.registers[0]` -> `devices.modbus.registers`."""
    return re.sub(r"\[\d+\]", "", path)


def _full_config(tmp: Path) -> str:
    """Every section the loader reads, each with its required keys (and the files they name)."""
    (tmp / "password").write_text("secret\n")
    (tmp / "recording").mkdir()
    return """
[gateway]
id = "gw-1"
site = "ward-3"

[mqtt]
url = "mqtts://broker.example:8883"
[mqtt.tls]
[mqtt.auth]
username = "gw-1"
password_file = "password"

[outbox]
path = "outbox.sqlite"

[[devices]]
id = "sim"
kind = "wearable"
transport = "simulator"
[devices.simulator]
episodes = [{ condition = "tachycardia", start_s = 1, duration_s = 1 }]
[devices.running_when]
channel = "motor_current"
above = 1.0

[[devices]]
id = "serial"
kind = "wearable"
transport = "serial"
[devices.serial]
port = "/dev/ttyUSB0"
[devices.beats]

[[devices]]
id = "ble"
kind = "wearable"
transport = "ble"
[devices.ble]
name = "Polar H10"

[[devices]]
id = "ble-by-address"
kind = "wearable"
transport = "ble"
[devices.ble]
address = "A0:9E:1A:00:00:01"

[[devices]]
id = "replay"
kind = "wearable"
transport = "replay"
[devices.replay]
path = "recording"

[[devices]]
id = "modbus"
kind = "equipment"
transport = "modbus"
[devices.modbus]
host = "plc.example"
registers = [{ name = "temp", address = 0 }]

[[devices]]
id = "modbus-rtu"
kind = "equipment"
transport = "modbus"
[devices.modbus]
serial_port = "/dev/ttyUSB1"
registers = [{ name = "temp", address = 0 }]

[[detectors]]
id = "hr"
type = "robust_z"
stream = "vitals"
channels = ["hr"]
calibration = { baseline_s = 60, target_false_alarms_per_hour = 1 }

[[alarms]]
condition = "tachycardia"
detector = "hr"

[privacy]

[remote]
"""


@dataclasses.dataclass(frozen=True)
class Bounds:
    """The kind of a number and the range the loader accepts (None: unbounded on that side)."""

    kind: str  # "int" or "number"
    low: float | None
    low_exclusive: bool  # "> low" rather than ">= low"
    high: float | None


def documented_bounds(type_cell: str) -> Bounds:
    """`int 5–65535`, `number > 0`, `number > 0, ≤ 300`, `int ≥ 1, N ≤ M`, `0.1–1` as a `Bounds`."""
    kind = "int" if type_cell.startswith("int") else "number"
    value = r"(-?\d+(?:\.\d+)?)"
    span = re.search(rf"{value}–{value}", type_cell)
    above = re.search(rf"([>≥]) {value}", type_cell)
    below = re.search(rf"≤ {value}", type_cell)
    low = float(span.group(1)) if span else float(above.group(2)) if above else None
    high = float(span.group(2)) if span else float(below.group(1)) if below else None
    return Bounds(kind, low, bool(above and above.group(1) == ">"), high)


@dataclasses.dataclass(frozen=True)
class Loaded:
    data: dict[str, Any]  # the fixture file's TOML
    config: AgentConfig  # what the loader built from it
    asked: dict[str, dict[str, CodeKey]]  # every key the loader asked for, per section
    bounds: dict[tuple[str, str], Bounds]  # (section, key) of every number the loader checks
    choices: dict[tuple[str, str], tuple[str, ...]]  # (section, key) of every text with a fixed set of values


@pytest.fixture
def loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Loaded:
    """The config built from `_full_config`, and every key the loader asked for, per section."""
    asked: dict[str, dict[str, CodeKey]] = {}
    original_get = Table._get

    def recording_get(self: Table, key: str, default: Any, expected: str, accept: Any, **options: Any) -> Any:
        asked.setdefault(_section(self.path), {}).setdefault(key, CodeKey(default, expected))
        return original_get(self, key, default, expected, accept, **options)

    original_has = Table.has

    def recording_has(self: Table, key: str) -> bool:  # an optional key read only when present
        asked.setdefault(_section(self.path), {}).setdefault(key, CodeKey(None, "a value, when present"))
        return original_has(self, key)

    bounds: dict[tuple[str, str], Bounds] = {}
    original_integer, original_number = Table.integer, Table.number

    def recording_integer(self: Table, key: str, default: Any = REQUIRED, **limits: Any) -> Any:
        low, high = limits.get("minimum"), limits.get("maximum")
        bounds.setdefault((_section(self.path), key), Bounds("int", low, False, high))
        return original_integer(self, key, default, **limits)

    def recording_number(self: Table, key: str, default: Any = REQUIRED, **limits: Any) -> Any:
        positive = limits.get("positive", False)
        low = 0 if positive else limits.get("minimum")
        bounds.setdefault((_section(self.path), key), Bounds("number", low, positive, limits.get("maximum")))
        return original_number(self, key, default, **limits)

    monkeypatch.setattr(Table, "_get", recording_get)
    monkeypatch.setattr(Table, "has", recording_has)
    accepted_values: dict[tuple[str, str], tuple[str, ...]] = {}
    original_text = Table.text

    def recording_text(
        self: Table, key: str, default: Any = REQUIRED, *, choices: Any = None, **options: Any
    ) -> Any:
        if choices is not None:
            accepted_values.setdefault((_section(self.path), key), tuple(choices))
        return original_text(self, key, default, choices=choices, **options)

    monkeypatch.setattr(Table, "text", recording_text)
    monkeypatch.setattr(Table, "integer", recording_integer)
    monkeypatch.setattr(Table, "number", recording_number)
    data = tomllib.loads(_full_config(tmp_path))
    return Loaded(data, parse_config(data, base_dir=tmp_path), asked, bounds, accepted_values)


def _objects(value: Any, data: Any, parts: list[str]) -> Iterator[tuple[Any, Mapping[str, Any]]]:
    """(config object, its TOML table) at a section path; an array of tables gives every element."""
    if isinstance(value, tuple):
        for item, item_data in zip(value, data, strict=True):
            yield from _objects(item, item_data, parts)
        return
    if not parts:
        yield value, data
        return
    child = getattr(value, parts[0], None)
    if child is not None:
        yield from _objects(child, data[parts[0]], parts[1:])


def effective_default(loaded: Loaded, section: str, key: str) -> Any:
    """The field's value wherever the fixture file leaves `key` out: what leaving it out gives."""
    values = [
        getattr(obj, key)
        for obj, table in _objects(loaded.config, loaded.data, section.split("."))
        if key not in table and dataclasses.is_dataclass(obj) and hasattr(obj, key)
    ]
    assert values, f"the fixture file sets [{section}] {key} everywhere, or the schema has no field {key}"
    assert all(v == values[0] for v in values), f"[{section}] {key}: different defaults {values}"
    return values[0]


# -- the tests ---------------------------------------------------------------------------------------


def test_every_section_the_loader_reads_is_documented_and_no_other(loaded: Loaded) -> None:
    asked = loaded.asked
    documented = documented_keys(CONFIGURATION_MD.read_text())
    code_sections = {s for s in asked if s} | set(asked[""])  # root keys are the top-level sections
    assert sorted(set(documented) - code_sections) == [], "documented sections the loader does not read"
    missing = sorted(code_sections - set(documented))
    assert missing == [], "sections the loader reads that configuration.md has no key table for"


def test_every_documented_key_exists_and_every_key_is_documented(loaded: Loaded) -> None:
    asked = loaded.asked
    documented = documented_keys(CONFIGURATION_MD.read_text())
    problems = []
    for section, keys in sorted(documented.items()):
        code_keys = asked.get(section, {})
        for key in sorted(set(keys) - set(code_keys)):
            problems.append(f"[{section}] {key}: documented, but the loader does not read it")
        for key in sorted(set(code_keys) - set(keys)):
            if code_keys[key].expected in TABLE_KINDS and f"{section}.{key}" in documented:
                continue  # a sub-table with its own section
            problems.append(f"[{section}] {key}: read by the loader, not in configuration.md")
    assert problems == []


def test_documented_defaults_are_the_loaders(loaded: Loaded) -> None:
    asked = loaded.asked
    documented = documented_keys(CONFIGURATION_MD.read_text())
    problems = []
    exemptions_used = set()
    for section, keys in sorted(documented.items()):
        for key, cell in sorted(keys.items()):
            code_key = asked.get(section, {}).get(key)
            if code_key is None:
                continue  # reported by the test above
            if (section, key) in PROSE_DEFAULTS:
                prose, placeholder, _why = PROSE_DEFAULTS[(section, key)]
                exemptions_used.add((section, key))
                actual = effective_default(loaded, section, key)
                if cell != prose or not same_value(placeholder, actual):
                    problems.append(f"[{section}] {key}: exemption stale: docs {cell!r}, code {actual!r}")
                continue
            try:
                stated = parse_default(cell)
            except ValueError as exc:
                problems.append(f"[{section}] {key}: {exc} (add a value, or a PROSE_DEFAULTS entry)")
                continue
            if code_key.default is REQUIRED or stated is REQUIRED:
                if code_key.default is not stated and code_key.expected not in TABLE_KINDS:
                    problems.append(
                        f"[{section}] {key}: docs say {cell!r}, code default {code_key.default!r}"
                    )
                continue
            if code_key.expected in TABLE_KINDS:
                continue  # the fixture file sets every sub-table, so there is no default to read back
            actual = effective_default(loaded, section, key)
            if not same_value(stated, actual):
                problems.append(f"[{section}] {key}: docs say {cell!r}, the loader gives {actual!r}")
    assert problems == []
    assert exemptions_used == set(PROSE_DEFAULTS), "PROSE_DEFAULTS names keys the docs no longer document"


def test_the_loaders_defaults_are_the_schemas(loaded: Loaded) -> None:
    """schema.py says defaults live there; the loader passes its own copy: they must agree."""
    asked = loaded.asked
    problems = []
    for section, keys in sorted(asked.items()):
        if not section:
            continue
        for key, code_key in sorted(keys.items()):
            if code_key.default is REQUIRED or code_key.expected in TABLE_KINDS:
                continue
            objects = [o for o, _ in _objects(loaded.config, loaded.data, section.split("."))]
            fields = {f.name: f for f in dataclasses.fields(objects[0])} if objects else {}
            if key not in fields:
                problems.append(f"[{section}] {key}: no field of that name in the schema")
                continue
            schema_field = fields[key]
            if schema_field.default is not dataclasses.MISSING:
                schema_default = schema_field.default
            elif schema_field.default_factory is not dataclasses.MISSING:
                schema_default = schema_field.default_factory()
            else:
                problems.append(f"[{section}] {key}: optional in the loader, required in the schema")
                continue
            actual = effective_default(loaded, section, key)
            if actual != schema_default:
                problems.append(
                    f"[{section}] {key}: loader gives {actual!r}, schema default {schema_default!r}"
                )
    assert problems == []


@pytest.mark.parametrize(
    ("cell", "value"),
    [
        ("604800 (7 days)", 604800),
        ("30", 30),
        ("1.0", 1.0),
        ("true", True),
        ("none (payloads stored in clear)", None),
        ("`/var/lib/edge-agent`", "/var/lib/edge-agent"),
        ('`["heart_rate"]`', ("heart_rate",)),
        ("`[]` (all devices)", ()),
        ("all: `status`, `reload`", ("status", "reload")),
        ("required (at least one)", REQUIRED),
        ("medium", "medium"),
    ],
)
def test_default_cells_are_read_as_the_values_they_state(cell: str, value: Any) -> None:
    parsed = parse_default(cell)
    assert parsed is value if value is REQUIRED else (parsed == value and type(parsed) is type(value))


def test_prose_is_not_taken_for_a_value() -> None:
    with pytest.raises(ValueError):
        parse_default("gateway id")


# -- the README's summary table ------------------------------------------------------------------------

README = ROOT / "README.md"


def readme_keys(markdown: str) -> dict[str, set[str]]:
    """{section: keys} from the README's "| table | keys |" summary; `key = …` counts as `key`."""
    summary = markdown[markdown.index("| table | keys |") :]
    sections: dict[str, set[str]] = {}
    for line in summary.splitlines()[2:]:
        if not line.startswith("|"):
            break
        table_cell, keys_cell = _cells(line)[:2]
        section = re.fullmatch(r"`\[\[?([A-Za-z_.]+)\]\]?`", table_cell)
        assert section, f"README summary row without a `[table]`: {table_cell}"
        depth, top_level = 0, []
        for part in re.split(r"(`[^`]*`)", keys_cell):  # keys outside parentheses; inside them are values
            if part.startswith("`") and depth == 0:
                top_level.append(part.strip("`"))
            elif not part.startswith("`"):
                depth += part.count("(") - part.count(")")
        sections[section.group(1)] = {
            m.group(1) for k in top_level if (m := re.fullmatch(r"([a-z_]+)( = .*)?", k))
        }
    return sections


def test_the_readme_summary_names_every_key_and_no_other(loaded: Loaded) -> None:
    own_sections = set(documented_keys(CONFIGURATION_MD.read_text()))
    inline = {"episodes", "registers", "calibration"}  # sub-tables the README shows inline, `key = [...]`
    problems = []
    for section, keys in sorted(readme_keys(README.read_text()).items()):
        if section not in loaded.asked:
            problems.append(f"README [{section}]: the loader reads no such table")
        code_keys = {
            key
            for key, code_key in loaded.asked.get(section, {}).items()
            if key in inline or not (code_key.expected in TABLE_KINDS and f"{section}.{key}" in own_sections)
        }
        problems += [f"README [{section}] {k}: the loader does not read it" for k in sorted(keys - code_keys)]
        problems += [
            f"README [{section}] {k}: read by the loader, not in the README" for k in sorted(code_keys - keys)
        ]
    assert problems == []


def test_the_readme_lists_every_detector_type() -> None:
    from agent.detectors.registry import TYPES

    row = next(line for line in README.read_text().splitlines() if line.startswith("| `[[detectors]]` |"))
    listed = re.search(r"`type` \(([^)]*)\)", row)
    assert listed is not None
    assert sorted(t.strip() for t in listed.group(1).split(",")) == sorted(TYPES)


def test_documented_number_ranges_are_the_loaders(loaded: Loaded) -> None:
    """The type column's kind (int / number) and range of every number the loader range-checks."""
    types = documented_keys(CONFIGURATION_MD.read_text(), column="type")
    problems = []
    for (section, key), code in sorted(loaded.bounds.items()):
        cell = types.get(section, {}).get(key)
        if cell is None:
            continue  # undocumented keys are reported by the key test
        stated = documented_bounds(cell)
        as_float = Bounds(
            code.kind,
            None if code.low is None else float(code.low),
            code.low_exclusive,
            None if code.high is None else float(code.high),
        )
        if stated.kind != code.kind and not (stated.kind == "number" and not cell.startswith("number")):
            problems.append(f"[{section}] {key}: docs say {cell!r}, the loader reads {code.kind}")
        if (stated.low, stated.low_exclusive, stated.high) != (
            as_float.low,
            as_float.low_exclusive,
            as_float.high,
        ):
            problems.append(f"[{section}] {key}: docs say {cell!r}, the loader accepts {code}")
    assert problems == []


def test_range_cells_are_read_as_written() -> None:
    assert documented_bounds("int 5–65535") == Bounds("int", 5.0, False, 65535.0)
    assert documented_bounds("number > 0, ≤ 300") == Bounds("number", 0.0, True, 300.0)
    assert documented_bounds("int ≥ 1, N ≤ M") == Bounds("int", 1.0, False, None)
    assert documented_bounds("0.1–1") == Bounds("number", 0.1, False, 1.0)
    assert documented_bounds("number") == Bounds("number", None, False, None)


def test_documented_choices_are_the_loaders(loaded: Loaded) -> None:
    """A type cell `a` | `b` lists exactly the values the loader accepts for that key."""
    types = documented_keys(CONFIGURATION_MD.read_text(), column="type")
    problems = []
    for (section, key), accepted in sorted(loaded.choices.items()):
        cell = types.get(section, {}).get(key)
        if cell is None:
            continue  # undocumented keys are reported by the key test
        stated = re.findall(r"`([^`]+)`", cell) if "|" in cell else []
        if sorted(stated) != sorted(accepted):
            problems.append(f"[{section}] {key}: docs say {cell!r}, the loader accepts {accepted}")
    assert problems == []
