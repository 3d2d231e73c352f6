"""Logging set-up: readable lines, or one JSON object per line for log collectors.

Log lines never carry device ids, patient ids or measured values: code logs pseudonyms, condition
codes and counts only. A rate limit per kind of line and device (`agent.log_rate`) keeps a misbehaving
device or a command flood from filling the disk of a gateway that runs for months, and says what it held
back. Code names a device by `device_name` (its pseudonym), never by its configured id. As a safety
net under that rule, the handler replaces every identifier the running config names (device and
patient ids, serial ports, BLE addresses and names, replay recording paths) by its pseudonym in each
line and traceback (`redact_identifiers`), whatever the logger, and so those a source meets at run
time (`learn_identifiers`: a BLE device found by its service UUID), and every MAC address written as six
hex pairs with one separator (':', '-' or '_'; not one without separators, see `_MAC`).
"""

from __future__ import annotations

import json
import logging
import re
import threading
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
    """Replaces identifiers in a record's text: the registered ones (any letter case) by their stand-ins,
    and every MAC address written with separators (`_MAC`) by the stand-in of the registered address it
    is or by ``<mac>``.

    A BLE stack writes one address several ways (``A4:C1:38:12:34:56``, BlueZ's D-Bus object name
    ``dev_A4_C1_38_12_34_56``, ``a4-c1-...``), and a device found by its service UUID has an address
    and an advertised name (often with the strap's serial) the config never names: its source
    registers them when it finds it (`learn`)."""

    MIN_LENGTH = 3  # shorter strings turn up by chance in ordinary words and numbers: see `_anywhere`

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()  # `learn` may come from any thread; lines are scrubbed in all
        self._registered: dict[str, str] = {}  # the running config's identifiers
        self._learnt: dict[str, str] = {}  # identifiers its sources met at run time
        self._rules = _Rules.of({})  # replaced as a whole: a line being scrubbed keeps a consistent set
        self._stand_ins: frozenset[str] = frozenset()  # replaced as a whole, as `_rules`

    def register(self, stand_ins: Mapping[str, str]) -> None:
        """The identifiers of the config now running; what was learnt for the previous one is dropped."""
        with self._lock:
            self._registered, self._learnt = dict(stand_ins), {}
            self._rules = _Rules.of(self._registered)
            self._stand_ins = frozenset(self._registered.values())

    def learn(self, stand_ins: Mapping[str, str]) -> None:
        """More identifiers, met at run time (a BLE device found by its service UUID)."""
        with self._lock:
            if all(self._learnt.get(k) == v for k, v in stand_ins.items()):
                return  # found again: nothing to compile
            self._learnt.update(stand_ins)
            self._rules = _Rules.of({**self._learnt, **self._registered})
            self._stand_ins = frozenset(self._registered.values()) | frozenset(self._learnt.values())

    def stand_in(self, identifier: str) -> str:
        """What a log line shows for `identifier` (a device id: its pseudonym). With nothing registered
        (outside the daemon: tests, tools) the identifier itself; an unknown one while a config is
        registered is hidden, never shown."""
        if not self._registered:
            return identifier
        return self._registered.get(identifier, "<redacted>")

    def scrub(self, text: str) -> str:
        return self._rules.scrub(text)

    def is_stand_in(self, text: str) -> bool:
        """Whether `text` is what a log line shows for a registered or learnt identifier (a device's
        pseudonym): the rate limit counts each device's lines apart."""
        return text in self._stand_ins

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        return True


# Six pairs of hex digits joined by one separator used throughout: ':', '-', or '_' (BlueZ's dev_...).
# Text cannot tell these from other six pairs: a date-time "rec_26_11_30_12_34_56" or "30-11-26-20-25-15"
# is masked too, and the first six pairs of a longer hex dump ("<mac>:6f:70"); hiding more is safe, and
# sparing them (e.g. '_' only after "dev_", or all-decimal pairs) would let a real address through. Twelve
# hex digits without separators ("A4C138123456") are not masked: as many serials and hashes look so.
_MAC = re.compile(r"(?<![0-9A-Za-z])[0-9A-F]{2}([:_-])[0-9A-F]{2}(?:\1[0-9A-F]{2}){4}(?![0-9A-Za-z])", re.I)


def _mac_key(text: str) -> str | None:
    """`text` as one spelling of a MAC address (upper case, ':'), or None if it is not one."""
    match = _MAC.fullmatch(text)
    return text.upper().replace(match.group(1), ":") if match else None


def _anywhere(identifier: str) -> str:
    """The pattern of `identifier` wherever it is written; a short one (a bed number "12", in every
    count and time too) only as a stream id's device ("12/vitals", which exception texts quote)."""
    if len(identifier) >= Redact.MIN_LENGTH:
        return re.escape(identifier)
    return rf"(?<![\w.:/-]){re.escape(identifier)}(?=/)"


class _Rules:
    """One compiled set of identifiers to replace (see `Redact`)."""

    def __init__(self, names: dict[str, str], pattern: re.Pattern[str] | None, macs: dict[str, str]) -> None:
        self._names, self._pattern, self._macs = names, pattern, macs

    @classmethod
    def of(cls, stand_ins: Mapping[str, str]) -> _Rules:
        kept = {k: v for k, v in stand_ins.items() if k}
        longest_first = sorted(kept, key=len, reverse=True)  # "bed-10" before "bed-1"
        alternatives = "|".join(_anywhere(k) for k in longest_first)
        pattern = re.compile(alternatives, re.IGNORECASE) if kept else None
        macs = {key: v for k, v in stand_ins.items() if (key := _mac_key(k)) is not None}
        return cls({k.casefold(): v for k, v in kept.items()}, pattern, macs)

    def scrub(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(lambda m: self._names.get(m.group(0).casefold(), "<redacted>"), text)
        return _MAC.sub(lambda m: self._macs.get(m.group(0).upper().replace(m.group(1), ":"), "<mac>"), text)


_REDACT = Redact()
_LIMITS: list[RateLimit] = []  # the rate limit of the handler `configure_logging` set up last


def redact_identifiers(stand_ins: Mapping[str, str]) -> None:
    """From now on, log lines show `stand_ins[x]` wherever identifier `x` would appear."""
    _REDACT.register(stand_ins)


def learn_identifiers(stand_ins: Mapping[str, str]) -> None:
    """Also hide identifiers met at run time (a BLE device's address and advertised name, found by its
    service UUID), until the next `redact_identifiers`."""
    _REDACT.learn(stand_ins)


def device_name(device_id: str) -> str:
    """What a log line calls device `device_id`: its pseudonym. Code formats this, never the id; the
    redaction is a safety net only, and cannot hide a short id (a bed number "12") in free text."""
    return _REDACT.stand_in(device_id)


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
    limit = RateLimit(report=handler.handle, names_device=_REDACT.is_stand_in)  # summaries are redacted too
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
