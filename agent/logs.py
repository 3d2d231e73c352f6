"""Logging set-up: readable lines, or one JSON object per line for log collectors.

Log lines never carry device ids, patient ids or measured values: code logs pseudonyms, condition
codes and counts only. A rate limit per kind of line (`agent.log_rate`) keeps a misbehaving device
or a command flood from filling the disk of a gateway that runs for months, and says what it held
back. As a safety net under that rule, the handler replaces every identifier the running config
names (device and patient ids, serial ports, BLE addresses) by its pseudonym in each line and
traceback (`redact_identifiers`), whatever the logger.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping

from agent.events import iso_time
from agent.log_rate import RateLimit


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": iso_time(record.created),  # UTC with milliseconds, as the payloads' times
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)  # redacted text
        return json.dumps(entry)


class Redact(logging.Filter):
    """Replaces registered identifiers (any letter case) by their stand-ins in a record's text."""

    MIN_LENGTH = 3  # shorter strings turn up by chance in ordinary words and numbers

    def __init__(self) -> None:
        super().__init__()
        self._stand_ins: dict[str, str] = {}
        self._pattern: re.Pattern[str] | None = None

    def register(self, stand_ins: Mapping[str, str]) -> None:
        kept = {k: v for k, v in stand_ins.items() if len(k) >= self.MIN_LENGTH}
        self._stand_ins = {k.casefold(): v for k, v in kept.items()}
        longest_first = sorted(kept, key=len, reverse=True)  # "bed-10" before "bed-1"
        alternatives = "|".join(re.escape(k) for k in longest_first)
        self._pattern = re.compile(alternatives, re.IGNORECASE) if kept else None

    def scrub(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: self._stand_ins.get(m.group(0).casefold(), "<redacted>"), text)

    def filter(self, record: logging.LogRecord) -> bool:
        if self._pattern is None:
            return True
        message = record.getMessage()
        clean = self.scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        return True


_REDACT = Redact()
_LIMITS: list[RateLimit] = []  # the rate limit of the handler `configure_logging` set up last


def redact_identifiers(stand_ins: Mapping[str, str]) -> None:
    """From now on, log lines show `stand_ins[x]` wherever identifier `x` would appear."""
    _REDACT.register(stand_ins)


def scrub_identifiers(text: str) -> str:
    """`text` as a log line would show it: for text sent off the gateway outside the log."""
    return _REDACT.scrub(text)


def configure_logging(level: str = "INFO", *, json_lines: bool = False) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
    )
    limit = RateLimit(report=handler.handle)  # its summaries pass the redaction too
    close_rate_limits()  # the handler they report to is replaced
    _LIMITS[:] = [limit]
    handler.addFilter(limit)
    handler.addFilter(_REDACT)  # after the rate limit, which keys on the message template
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("amqtt").setLevel(logging.WARNING)  # the demo's fallback broker is chatty


def close_rate_limits() -> None:
    """Cancel the pending reports of the rate limit `configure_logging` set up last."""
    for limit in _LIMITS:
        limit.close()


def flush_suppressed() -> None:
    """Tell what the rate limit holds back in periods not yet ended (the process is ending)."""
    for limit in _LIMITS:
        limit.flush(everything=True)
