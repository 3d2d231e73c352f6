"""An accepted activation whose reload is then refused (the config file was edited between the
activation's check and the reload) does not leave the gateway "busy" for every later model change
(review finding 4): the real agent (in-process) and mosquitto, as in test_remote_activation, with the
config file a FIFO so that each read of it is served in turn: the start's, the activation check's
(good), the reload's (bad), then good again."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest

from agent.remote import ModelStore, pack_bundle

from .conftest import signed_model
from .test_remote_activation import GOOD, current, session, started
from .test_remote_broker import Backend, setup

__all__ = ["setup"]  # the fixture, used here by name


class ServedConfig:
    """A FIFO at `path` whose n-th reader gets `contents[n]` (the last one from then on)."""

    def __init__(self, path: Path, contents: list[bytes]) -> None:
        os.mkfifo(path)
        self.path, self.contents, self.reads = path, contents, 0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            with self.path.open("wb") as fifo:  # blocks until the agent opens it to read
                if self._stop:
                    return
                fifo.write(self.contents[min(self.reads, len(self.contents) - 1)])
            self.reads += 1
            # Let that reader see the end and close before the next open, which would otherwise join
            # it (a writer opening while a reader is still there): a later reader only waits longer.
            time.sleep(0.3)

    def close(self) -> None:
        self._stop = True
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)  # wakes the writer waiting for a reader
        os.close(fd)
        self._thread.join(5)


def test_a_refused_reload_after_an_activation_is_told_and_later_changes_are_taken(
    setup: tuple[Path, Backend], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, backend = setup
    ModelStore(tmp_path / "models", tmp_path / "ops.pub").install(
        pack_bundle(signed_model(tmp_path / "build" / GOOD, GOOD, backend.key))
    )
    good = config.read_bytes()
    served = ServedConfig(tmp_path / "agent-served.toml", [good, good, b"gateway = [not toml", good])
    try:
        with caplog.at_level(logging.INFO, logger="agent"), started(served.path, backend) as first:
            before = first["result"]["heartbeat"]["session"]
            accepted = backend.call("models/activate", {"name": "ecg-beat", "version": GOOD})
            assert accepted["ok"] and accepted["result"]["reloading"] is True, accepted
            assert current(tmp_path) == GOOD
            # The reload read the bad file and was refused: same session, on the old version.
            assert session(backend) == before and served.reads >= 3
            back = backend.call("models/activate", {"name": "ecg-beat", "version": "1.0.0", "reload": False})
            assert back["ok"], back  # was "busy" for every later change until a restart
            assert current(tmp_path) == "1.0.0"
    finally:
        served.close()
    told = [r.getMessage() for r in caplog.records if "is current but not running" in r.getMessage()]
    assert told == [
        f"remote: model version {GOOD} is current but not running: the reload after its activation was "
        "refused (see the reload's lines); the running detectors keep the version they loaded until a "
        "reload or start succeeds"
    ]
