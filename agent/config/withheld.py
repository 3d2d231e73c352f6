"""What a refused config file's problems may say off the gateway (a remote `reload`'s answer, over MQTT):
the key and the kind of problem, never a value. A problem quotes what it found ("no recording file or
folder: /var/lib/edge-agent/recordings/MRN-0055555_Doe_Jane"), and any key's value may name a patient,
not only the keys read as private (whose values are never quoted, `agent.config.reader`); the new
file's identifiers are not known to the log redaction either. So the answer withholds every string
the file holds, as a whole word, and each part of one that is a path, and every path (a value
resolved against the file's folder, or through a symlink, is not the string written). Numbers are
kept ("must be at least 1, got 0"), and so is what comes from elsewhere, such as a model card's
channels, or the values a key allows that its problem lists (`ConfigError.choices`: "expected one of
simulator, serial, ...", though another device's transport is "simulator").

Two kinds of the file's own strings name nobody, and withholding them hid what to fix ("a … detector
takes exactly 1 channel(s)"; "the rule on … could never end"): the code's words (detector types,
device kinds, transports, priorities, alarm kinds), kept wherever they stand, and the names every alarm
event already carries off the gateway (detector ids, which the problem's key shows anyway, streams,
channels, conditions, units), kept where they stand at such a key (`_NAMES`) and at no other: a device
id or a path that happens to equal a channel's name is still withheld. The gateway's own log gets the
same lines (`agent.daemon`), with the file's full path: its redaction knows the running file's
identifiers, not the refused file's.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, get_args

from agent.config.schema import DeviceKind, Transport
from agent.detectors.registry import TYPES
from agent.errors import ConfigError
from agent.events import AlarmKind, Priority

WITHHELD = "…"
_PATH = re.compile(r"(?<!\S)~?\.{0,2}/\S*")  # a word that starts as a path does: /…, ./…, ~/…

# The code's own words: a file string equal to one of them names nobody, wherever it stands.
_CODE_WORDS = frozenset([*TYPES, *get_args(DeviceKind), *get_args(Transport), *Priority, *AlarmKind])
# Keys whose values every alarm event carries off the gateway (payloads.md: detector, stream,
# top_channels, condition, unit), or that name them (a detector's type, a rule's detector). "*" is any
# index or table key.
_NAMES = (
    ("detectors", "*", "id"),
    ("detectors", "*", "type"),
    ("detectors", "*", "stream"),
    ("detectors", "*", "channels", "*"),
    ("alarms", "*", "detector"),
    ("alarms", "*", "condition"),
    ("alarms", "*", "superseded_by", "*"),
    ("alarms", "*", "unit"),
    ("devices", "*", "units", "*"),
    ("devices", "*", "serial", "channels", "*"),
    ("devices", "*", "modbus", "registers", "*", "name"),
    ("devices", "*", "running_when", "channel"),
    ("devices", "*", "beats", "ecg_stream"),
    ("devices", "*", "beats", "rr_stream"),
)


def without_values(problems: Iterable[ConfigError], config_text: bytes) -> list[str]:
    """`problems` of the config file that holds `config_text`, one "key: kind of problem" line each,
    the values withheld."""
    strings = _strings(config_text)
    withhold_all = _value_pattern(strings)
    lines = []
    for problem in problems:
        # the key's own allowed values are the code's words: withholding them hid what to write
        withhold = _value_pattern(strings - set(problem.choices)) if problem.choices else withhold_all
        text = withhold.sub(WITHHELD, problem.problem) if withhold else problem.problem
        text = _PATH.sub(WITHHELD, text)
        lines.append(f"{problem.path}: {text}" if problem.path else text)
    return lines


def with_hint(line: str, path: Path | None) -> str:
    """`line` (one of `without_values`), with where to see what it withholds when it withholds anything:
    the console of whoever runs `check-config`, not the log or the journal."""
    return (
        f"{line} (values withheld: edge-agent check-config {path} shows them)" if WITHHELD in line else line
    )


def _strings(config_text: bytes) -> set[str]:
    """The file's strings to withhold: every string value at any depth, and each part of one that is a
    path, but the code's words and the names at `_NAMES` keys that stand at no other key; none when it
    does not read as TOML (its problem then says so, and quotes nothing of it)."""
    try:
        data = tomllib.loads(config_text.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return set()
    found: set[str] = set()

    def walk(value: Any, key: tuple[str | int, ...]) -> None:
        if isinstance(value, str):
            if not any(_matches(key, name) for name in _NAMES):
                found.update([value, *re.split(r"[/\\]", value)])
        elif isinstance(value, dict):
            for name, item in value.items():
                walk(item, (*key, name))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, (*key, index))

    walk(data, ())
    # a name at a `_NAMES` key is kept unless it also stands elsewhere (then it is in `found`)
    return {s for s in found - _CODE_WORDS if any(c.isalnum() for c in s)}  # "" and "/" are nobody's name


def _matches(key: tuple[str | int, ...], pattern: tuple[str, ...]) -> bool:
    return len(key) == len(pattern) and all(p in ("*", k) for k, p in zip(key, pattern, strict=True))


def _value_pattern(values: set[str]) -> re.Pattern[str] | None:
    """Any of `values` as a whole word (a short "hr" is not withheld from "three")."""
    if not values:
        return None
    longest_first = sorted(values, key=len, reverse=True)
    return re.compile("|".join(rf"(?<!\w){re.escape(v)}(?!\w)" for v in longest_first))
