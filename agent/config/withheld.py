"""What a refused config file's problems may say off the gateway (a remote `reload`'s answer, over MQTT):
the key and the kind of problem, never a value. A problem quotes what it found ("no recording file or
folder: /var/lib/edge-agent/recordings/MRN-0055555_Doe_Jane"), and any key's value may name a patient,
not only the keys read as private (whose values are never quoted, `agent.config.reader`); the new
file's identifiers are not known to the log redaction either. So the answer withholds every string
the file holds, as a whole word, and each part of one that is a path, and every path (a value
resolved against the file's folder, or through a symlink, is not the string written). Numbers are
kept ("must be at least 1, got 0"), and so is what comes from elsewhere, such as a model card's
channels, or the values a key allows that its problem lists (`ConfigError.choices`: "expected one of
simulator, serial, ...", though another device's transport is "simulator"). The gateway's own log
gets the same lines (`agent.daemon`), with the file's full path: its redaction knows the running
file's identifiers, not the refused file's.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from typing import Any

from agent.errors import ConfigError

WITHHELD = "…"
_PATH = re.compile(r"(?<!\S)~?\.{0,2}/\S*")  # a word that starts as a path does: /…, ./…, ~/…


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


def _strings(config_text: bytes) -> set[str]:
    """Every string value in the file, at any depth, and each part of one that is a path; none when
    it does not read as TOML (its problem then says so, and quotes nothing of it)."""
    try:
        data = tomllib.loads(config_text.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return set()
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str):
            found.update([value, *re.split(r"[/\\]", value)])
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(data)
    return {s for s in found if any(c.isalnum() for c in s)}  # "" and "/" are nobody's name


def _value_pattern(values: set[str]) -> re.Pattern[str] | None:
    """Any of `values` as a whole word (a short "hr" is not withheld from "three")."""
    if not values:
        return None
    longest_first = sorted(values, key=len, reverse=True)
    return re.compile("|".join(rf"(?<!\w){re.escape(v)}(?!\w)" for v in longest_first))
