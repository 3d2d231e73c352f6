"""What a native library writes straight to the process's stderr (fd 2) during a call, logged instead.

LiteRT's C++ core prints `INFO: Created TensorFlow Lite XNNPACK delegate for CPU.` on fd 2 the first
time an interpreter of the process gets its default delegate; it has no Python switch for its log level
(`TF_CPP_MIN_LOG_LEVEL` does not reach it). With `--log-json` a log collector then meets a line that is
not JSON (ops review F4). `logged_native_stderr` points fd 2 at a temporary file around the call and logs
each line written there through a logger, so it takes the log's format, redaction and rate limit.

fd 2 belongs to the whole process: while it is pointed away, the root logger's handlers are locked, so
a line another thread logs waits (for the call: milliseconds) rather than landing in the capture.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

STDERR_FD = 2
_LEVELS = {"INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR, "FATAL": logging.ERROR}


@contextlib.contextmanager
def logged_native_stderr(log: logging.Logger) -> Iterator[None]:
    """Run the body with fd 2 captured; then log each captured line (`INFO: ...` at INFO, `WARNING:`,
    `ERROR:` likewise, anything else at WARNING) through `log`, also when the body raised (a native
    error message usually comes just before the exception)."""
    captured = b""
    try:
        with contextlib.ExitStack() as locks, tempfile.TemporaryFile() as sink:
            for handler in logging.getLogger().handlers:
                handler.acquire()
                locks.callback(handler.release)
            sys.stderr.flush()
            saved = os.dup(STDERR_FD)
            try:
                os.dup2(sink.fileno(), STDERR_FD)
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, STDERR_FD)
                os.close(saved)
                sink.seek(0)
                captured = sink.read()
    finally:
        _log_lines(log, captured.decode(errors="replace"))


def _log_lines(log: logging.Logger, text: str) -> None:
    for line in text.splitlines():
        if line.strip():
            prefix, _, rest = line.partition(": ")
            level = _LEVELS.get(prefix.strip())
            log.log(level or logging.WARNING, "%s", rest if level is not None else line)
