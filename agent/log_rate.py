"""The log's rate limit: a misbehaving device or a command flood cannot fill a gateway's disk, and what
it holds back is still counted in the log.

A kind of line is its logger and message template: at most `burst` lines of a kind every `period_s`.
For the audit loggers (remote commands: accepted, refused and why) a kind is also the line's arguments,
the command's name, the refusal's code and reason, so a flood of garbage `status` commands never hides a
`reload` that was accepted or refused for a bad signature. For every other logger a kind is also the
devices the line names (arguments that `names_device` knows: their pseudonyms), so one flapping device
never hides another device's line of the same template. When a period in which lines of a kind
were held back ends, one line says how many and shows the last of them; a timer writes it then, even
when no line of that kind comes again. At the end of the process `flush(everything=True)` tells the
periods still open.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

AUDIT_LOGGERS = ("agent.remote",)  # and their children: each distinct line is its own kind
MAX_KINDS = 1000  # kinds counted at once; past it an audit line is counted by its template alone
MAX_ARG_CHARS = 64  # of each argument kept in a kind's key

Key = tuple[str, str, tuple[str, ...]]


@dataclass(slots=True)
class _Window:
    start: float
    count: int = 0
    held: int = 0
    last_held: logging.LogRecord | None = None


class RateLimit(logging.Filter):
    """At most `burst` records of a kind every `period_s`; the rest are held back and reported by a
    "N similar line(s) suppressed" record, passed to `report` (the handler's `handle`) when the period
    ends. `suppressed` counts every record held back since the start."""

    def __init__(
        self,
        burst: int = 20,
        period_s: float = 60.0,
        *,
        report: Callable[[logging.LogRecord], object] | None = None,
        names_device: Callable[[str], bool] | None = None,
    ) -> None:
        super().__init__()
        self._names_device = names_device
        self.burst = burst
        self.period_s = period_s
        self.suppressed = 0
        self._report = report
        self._windows: dict[Key, _Window] = {}
        self._lock = threading.Lock()  # records come from the loop, paho's thread and worker threads
        self._timer: threading.Timer | None = None
        self._closed = False  # `close`d: no more timers

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "rate_limit_summary", False):
            return True  # at most one per kind and period: bounded by what it reports
        now = time.monotonic()
        with self._lock:
            summaries = []
            key = self._key(record)
            window = self._windows.get(key)
            if window is not None and now - window.start > self.period_s:
                summaries += self._close(key, window, now)
                window = None
            if window is None:
                if len(self._windows) >= MAX_KINDS:
                    summaries += self._close_ended(now)
                    if len(self._windows) >= MAX_KINDS:
                        key = (record.name, str(record.msg), ())
                window = self._windows.setdefault(key, _Window(now))
            window.count += 1
            passed = window.count <= self.burst
            if not passed:
                window.held += 1
                window.last_held = record
                self.suppressed += 1
                self._arm(window.start + self.period_s - now)
        self._emit(summaries)
        return passed

    def flush(self, everything: bool = False) -> None:
        """Report every period that has ended with lines held back (the timer calls this), or, with
        `everything`, every period that held lines back (the process ends)."""
        with self._lock:
            self._timer = None
            now = time.monotonic()
            summaries = self._close_ended(now, everything)
            pending = [w.start + self.period_s - now for w in self._windows.values() if w.held]
            if pending:
                self._arm(min(pending))
        self._emit(summaries)

    def close(self) -> None:
        """Cancel a pending report and arm no more (its handler is being replaced): a timer would write to
        a stream that may be closed by then. Lines it still sees are limited, told only by `flush`."""
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _key(self, record: logging.LogRecord) -> Key:
        template = str(record.msg)
        if not isinstance(record.args, tuple):
            return (record.name, template, ())
        audit = any(record.name == p or record.name.startswith(p + ".") for p in AUDIT_LOGGERS)
        if audit:
            return (record.name, template, tuple(str(a)[:MAX_ARG_CHARS] for a in record.args))
        names = self._names_device
        devices = () if names is None else tuple(a for a in record.args if isinstance(a, str) and names(a))
        return (record.name, template, devices)

    def _close_ended(self, now: float, everything: bool = False) -> list[logging.LogRecord]:
        ended = [(k, w) for k, w in self._windows.items() if everything or now - w.start > self.period_s]
        return [summary for key, window in ended for summary in self._close(key, window, now)]

    def _close(self, key: Key, window: _Window, now: float) -> list[logging.LogRecord]:
        del self._windows[key]
        if window.last_held is None:
            return []
        last = window.last_held
        span_s = min(max(now - window.start, 1.0), self.period_s)  # "in 0 s" would read as a glitch
        summary = logging.LogRecord(
            last.name,
            max(last.levelno, logging.WARNING),  # lines were lost: worth a warning whatever they were
            last.pathname,
            last.lineno,
            "%d similar line(s) suppressed in %.0f s by the log's rate limit; the last: %s",
            (window.held, span_s, last.getMessage()),
            None,
        )
        summary.rate_limit_summary = True
        return [summary]

    def _arm(self, delay_s: float) -> None:
        if self._timer is None and self._report is not None and not self._closed:
            self._timer = threading.Timer(max(delay_s, 0.0) + 0.01, self.flush)
            self._timer.daemon = True  # a pending report never holds up the agent's exit
            self._timer.start()

    def _emit(self, summaries: list[logging.LogRecord]) -> None:
        if self._report is not None:
            for summary in summaries:
                self._report(summary)
