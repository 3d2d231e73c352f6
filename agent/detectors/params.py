"""Validation of a detector's `params` table, reporting problems at their TOML key path.

Each detector type reads its params through one `ParamReader`, which records the keys it asked for so
`finish()` can reject misspelt ones. Errors are `ConfigError("detectors.<id>.params.<key>", problem)`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from agent.config.schema import DetectorConfig
from agent.errors import ConfigError


def show(value: Any) -> str:
    """A config value as the user wrote it in TOML: strings in double quotes."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class ParamReader:
    def __init__(self, config: DetectorConfig, rate_hz: float) -> None:
        if not (_is_number(rate_hz) and rate_hz > 0):
            where = f"detectors.{config.id}.rate_hz"
            raise ConfigError(where, f"stream rate must be positive, got {show(rate_hz)}")
        self.config = config
        self.rate_hz = float(rate_hz)
        self._seen: set[str] = set()

    def path(self, key: str) -> str:
        return f"detectors.{self.config.id}.params.{key}"

    def fail(self, key: str, problem: str, choices: tuple[str, ...] = ()) -> ConfigError:
        return ConfigError(self.path(key), problem, choices)

    def _get(self, key: str) -> Any:
        self._seen.add(key)
        return self.config.params.get(key)

    def number(self, key: str, default: float | None, *, positive: bool = False) -> float | None:
        value = self._get(key)
        if value is None:
            return default
        if not _is_number(value) or (positive and value <= 0):
            kind = "a positive number" if positive else "a number"
            raise self.fail(key, f"expected {kind}, got {show(value)}")
        return float(value)

    def text(self, key: str, default: str, *, choices: tuple[str, ...] | None = None) -> str:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {show(value)}")
        if choices is not None and value not in choices:
            raise self.fail(key, f"expected one of {', '.join(choices)}, got {show(value)}", choices)
        return value

    def count(self, key: str, default: int) -> int:
        """A whole number >= 0 (e.g. rows)."""
        value = self._get(key)
        if value is None:
            return default
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            raise self.fail(key, f"expected a whole number >= 0, got {show(value)}")
        return value

    def positive(self, key: str, default: float) -> float:
        value = self.number(key, default, positive=True)
        assert value is not None  # default is a number
        return value

    def fraction(self, key: str, default: float) -> float:
        value = self.positive(key, default)
        if value > 1:
            raise self.fail(key, f"expected a fraction in (0, 1], got {show(value)}")
        return value

    def bounded(self, key: str, default: float, low: float = -math.inf, high: float = math.inf) -> float:
        """A number within [low, high] (an infinite end is no bound)."""
        value = self.number(key, default)
        assert value is not None  # has a default
        if not low <= value <= high:
            if math.isinf(high):
                wanted = f"a number >= {low:g}"
            elif math.isinf(low):
                wanted = f"a number <= {high:g}"
            else:
                wanted = f"a number in [{low:g}, {high:g}]"
            raise self.fail(key, f"expected {wanted}, got {show(value)}")
        return value

    def samples(self, key: str, default_s: float, *, minimum: int = 1) -> int:
        """A duration in seconds converted to a whole number of samples at the stream's rate."""
        seconds = self.positive(key, default_s)
        return max(minimum, round(seconds * self.rate_hz))

    def per_channel(self, key: str, default: float | None) -> tuple[float, ...] | None:
        """A positive number for every channel, or a table ``{channel = number}`` naming each one."""
        value = self._get(key)
        channels = self.config.channels
        if value is None:
            return None if default is None else (default,) * len(channels)
        if _is_number(value) and value > 0:
            return (float(value),) * len(channels)
        if isinstance(value, Mapping):
            missing = [c for c in channels if c not in value]
            extra = [k for k in value if k not in channels]
            if missing or extra:
                raise self.fail(
                    key, f"expected a value for each of {list(channels)}, missing {missing}, extra {extra}"
                )
            for channel, item in value.items():
                if not (_is_number(item) and item > 0):
                    where = f"{self.path(key)}.{channel}"
                    raise ConfigError(where, f"expected a positive number, got {show(item)}")
            return tuple(float(value[c]) for c in channels)
        raise self.fail(key, f"expected a positive number or a table per channel, got {show(value)}")

    def window_and_hop(
        self, default_window_s: float, default_hop_s: float, *, min_window: int = 1
    ) -> tuple[int, int]:
        """`window_s` and `hop_s` in samples; the hop must fit in the window."""
        window = self.samples("window_s", default_window_s, minimum=min_window)
        hop = self.samples("hop_s", default_hop_s)
        if hop > window:
            raise self.fail("hop_s", f"hop ({hop} samples) must not exceed the window ({window} samples)")
        return window, hop

    def channel_count(self, exactly: int | None = None) -> None:
        count = len(self.config.channels)
        where = f"detectors.{self.config.id}.channels"
        if count == 0:
            raise ConfigError(where, "expected at least one channel")
        if exactly is not None and count != exactly:
            kind = self.config.type
            raise ConfigError(where, f"a {kind} detector takes exactly {exactly} channel(s), got {count}")

    def finish(self) -> None:
        """Reject params this detector type does not know (usually a typo)."""
        unknown = sorted(set(self.config.params) - self._seen)
        if unknown:
            known = ", ".join(sorted(self._seen))
            kind = self.config.type
            raise self.fail(unknown[0], f"unknown parameter for a {kind} detector (known: {known})")
