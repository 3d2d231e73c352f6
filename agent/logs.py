"""Logging set-up: readable lines, or one JSON object per line for log collectors.

Log lines never carry device ids, patient ids or measured values: code logs pseudonyms, condition
codes and counts only. A rate limit per logger and message keeps a misbehaving device from
filling the disk of a gateway that runs for months.
"""

from __future__ import annotations

import json
import logging
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class RateLimit(logging.Filter):
    """At most `burst` records per (logger, message template) every `period_s`; the rest are counted."""

    def __init__(self, burst: int = 20, period_s: float = 60.0) -> None:
        super().__init__()
        self.burst = burst
        self.period_s = period_s
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = time.monotonic()
        start, count = self._seen.get(key, (now, 0))
        if now - start > self.period_s:
            start, count = now, 0
        self._seen[key] = (start, count + 1)
        if count < self.burst:
            return True
        self.suppressed += 1
        return False


def configure_logging(level: str = "INFO", *, json_lines: bool = False) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
    )
    handler.addFilter(RateLimit())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("amqtt").setLevel(logging.WARNING)  # the demo's fallback broker is chatty
