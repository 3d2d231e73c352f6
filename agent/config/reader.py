"""A checked reader over one TOML table that collects every problem with its key path.

Reading never stops at the first mistake: a wrong value records a `ConfigError` and yields a
placeholder, so `check-config` can list all problems of a file at once, one line each.

A problem quotes the bad value, except for the keys read as `private` (device ids, patient ids, serial
ports, BLE addresses): their messages say only the key and the kind of value, because a refused file's
identifiers are not yet known to the log redactor, and a remote `reload` sends its problems off the
gateway.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from agent.errors import ConfigError

T = TypeVar("T")


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


def describe(value: object, *, private: bool = False) -> str:
    """How a bad value is shown in a message: strings quoted, tables and arrays by kind; a `private`
    value (one that may identify a patient or a device) by its kind only."""
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if private:
        return _kind(value)
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def kind_of(value: object) -> str:
    """A value's type in a message's words ("an integer", "a table")."""
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return _kind(value)


def _kind(value: object) -> str:
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    return "a value of another type"


class Table:
    """One TOML table at `path`; each getter marks its key as known and checks its type."""

    def __init__(self, data: Mapping[str, Any], path: str, problems: list[ConfigError], base_dir: Path):
        self.data = data
        self.path = path
        self.problems = problems
        self.base_dir = base_dir
        self._known: set[str] = set()

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def problem(self, key: str | None, message: str, choices: Sequence[str] = ()) -> None:
        """Record a problem of `key` (None: of the table); `choices`: the values it allows, if listed."""
        path = self.path if key is None else self.key_path(key)
        self.problems.append(ConfigError(path, message, tuple(choices)))

    def has(self, key: str) -> bool:
        self._known.add(key)
        return key in self.data

    def _get(
        self,
        key: str,
        default: Any,
        expected: str,
        accept: Callable[[Any], bool],
        *,
        private: bool = False,
    ) -> Any:
        self._known.add(key)
        if key not in self.data:
            if default is REQUIRED:
                self.problem(key, f"missing (expected {expected})")
            return None if default is REQUIRED else default
        value = self.data[key]
        if not accept(value):
            self.problem(key, f"expected {expected}, got {describe(value, private=private)}")
            return None if default is REQUIRED else default
        return value

    def text(
        self,
        key: str,
        default: Any = REQUIRED,
        *,
        choices: Sequence[str] | None = None,
        private: bool = False,
    ) -> Any:
        """A string; `private`: an identifier, never quoted in a problem (see the module's docstring)."""
        value = self._get(key, default, "a string", lambda v: isinstance(v, str), private=private)
        if value is None or value is default:
            return value
        if choices is not None and value not in choices:
            shown = describe(value, private=private)
            self.problem(key, f"expected one of {', '.join(choices)}, got {shown}", choices)
            return None if default is REQUIRED else default
        if not value.strip() and default is REQUIRED:
            self.problem(key, "must not be empty")
        return value

    def name(self, key: str, default: Any = REQUIRED, *, private: bool = False) -> Any:
        """An identifier that may appear in topics and stream ids: no spaces, '/', '+' or '#'."""
        value = self.text(key, default, private=private)
        if isinstance(value, str) and value and any(c in value for c in " /+#\t\n"):
            shown = "" if private else f", got {describe(value)}"
            self.problem(key, f"must not contain spaces, '/', '+' or '#'{shown}")
        return value

    def integer(
        self, key: str, default: Any = REQUIRED, *, minimum: int | None = None, maximum: int | None = None
    ) -> Any:
        value = self._get(
            key, default, "an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)
        )
        return self._bounded(key, value, default, minimum, maximum)

    def number(
        self,
        key: str,
        default: Any = REQUIRED,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        positive: bool = False,
    ) -> Any:
        value = self._get(
            key,
            default,
            "a number",
            lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
        )
        if value is not None and value is not default and positive and value <= 0:
            self.problem(key, f"must be greater than 0, got {describe(value)}")
            return None if default is REQUIRED else default
        value = self._bounded(key, value, default, minimum, maximum)
        return float(value) if isinstance(value, int | float) else value

    def _bounded(
        self, key: str, value: Any, default: Any, minimum: float | None, maximum: float | None
    ) -> Any:
        if value is None or value is default:
            return value
        if minimum is not None and value < minimum:
            self.problem(key, f"must be at least {minimum}, got {describe(value)}")
            return None if default is REQUIRED else default
        if maximum is not None and value > maximum:
            self.problem(key, f"must be at most {maximum}, got {describe(value)}")
            return None if default is REQUIRED else default
        return value

    def flag(self, key: str, default: Any = REQUIRED) -> Any:
        return self._get(key, default, "true or false", lambda v: isinstance(v, bool))

    def texts(self, key: str, default: Any = REQUIRED, *, private: bool = False) -> Any:
        """An array of strings; an item of another type is a problem of its own, at `key[i]` with its
        type (`superseded_by = ["af", 3]`: `alarms[1].superseded_by[1]: expected a string, got an
        integer (3)`), so the file's author sees which item is wrong."""
        value = self._get(key, default, "an array of strings", lambda v: isinstance(v, list), private=private)
        if not isinstance(value, list) or value is default:
            return value
        wrong = [(i, item) for i, item in enumerate(value) if not isinstance(item, str)]
        for i, item in wrong:
            shown = "" if private or isinstance(item, Mapping | list) else f" ({describe(item)})"
            self.problems.append(
                ConfigError(f"{self.key_path(key)}[{i}]", f"expected a string, got {kind_of(item)}{shown}")
            )
        if wrong:
            return None if default is REQUIRED else default
        return tuple(value)

    def file(self, key: str, default: Any = REQUIRED, *, readable: bool = True) -> Any:
        """A path relative to the config file's folder; checked readable when `readable`."""
        value = self.text(key, default)
        if not isinstance(value, str) or value is default:
            return value
        path = self.resolved(key, value)
        if path is None:
            return None if default is REQUIRED else default
        try:
            if readable and not path.is_file():
                self.problem(key, f"file not found: {path}")
            elif readable and not os.access(path, os.R_OK):
                self.problem(key, f"file not readable: {path}")
        except OSError as exc:  # e.g. a name longer than the file system allows
            self.problem(key, f"not a usable path: {exc.strerror}")
        return path

    def resolved(self, key: str, value: str) -> Path | None:
        """`value` as an absolute path relative to the config file's folder; None (a problem recorded)
        for a text no file system takes, such as one holding a NUL character."""
        try:
            return (self.base_dir / Path(value).expanduser()).resolve()
        except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            self.problem(key, f"not a usable path: {exc}")
            return None

    def table(self, key: str, *, required: bool = False) -> Table | None:
        value = self._get(key, REQUIRED if required else None, "a table", lambda v: isinstance(v, Mapping))
        return None if value is None else Table(value, self.key_path(key), self.problems, self.base_dir)

    def tables(self, key: str) -> list[Table]:
        """An array of tables, `[[key]]`; each element's path is ``key[i]``."""
        value = self._get(key, [], "an array of tables", lambda v: isinstance(v, list))
        tables = []
        for i, item in enumerate(value):
            if isinstance(item, Mapping):
                tables.append(Table(item, f"{self.key_path(key)}[{i}]", self.problems, self.base_dir))
            else:
                self.problems.append(
                    ConfigError(f"{self.key_path(key)}[{i}]", f"expected a table, got {describe(item)}")
                )
        return tables

    def raw(self, key: str, default: Any = REQUIRED) -> Any:
        """A value handed on unchecked (e.g. a detector's params, checked by the detector type)."""
        return self._get(key, default, "a value", lambda v: True)

    def finish(self) -> None:
        """Report keys nobody asked for: almost always a typo."""
        for key in self.data:
            if key not in self._known:
                close = closest(key, self._known)
                hint = f" (did you mean '{close}'?)" if close else ""
                self.problem(key, f"unknown key{hint}")


def closest(word: str, known: Iterable[str]) -> str | None:
    """The name of `known` closest to `word` (case ignored: "SpO2" finds "spo2"), or None: the "did you
    mean" of an unknown key, and of a detector's stream or channel no device produces."""
    by_folded = {k.casefold(): k for k in sorted(known)}
    close = difflib.get_close_matches(word.casefold(), list(by_folded), n=1)
    return by_folded[close[0]] if close else None
