"""The real daemon with a hung broker (SIGSTOP): a reload and a stop take a second or two (ops review F1
of 2026-11-30). They took 20-30 s: the old session's uplink waited for paho's network thread, which
does not end while messages are in flight until its CONNECT attempt to the frozen broker times out
(keepalive_s). Meanwhile no source was read and no WATCHDOG=1 sent (a reload could end in a watchdog
restart), and a stop overran the unit's TimeoutStopSec=20 (SIGKILL: no clean stop, no final save).

The broker is frozen once the agent has heartbeats in flight, until paho's keepalive drops the
connection; the signal comes while paho's next attempt waits for a CONNACK (the frozen broker's kernel
still takes the TCP connection), which is most of the time during a long hang. The reload comes late in
a watchdog period: the new session pinged only a whole period after its start, so the gap between two
WATCHDOG=1 was up to two periods plus the switch, over WatchdogSec (the unit's 30 s) with 15 s pings."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import test_daemon_lifecycle as lifecycle

from agent.localbroker import LocalBroker

REPO = Path(__file__).resolve().parents[2]  # the daemon runs this checkout's code, whatever its cwd
KEEPALIVE_S = 6  # the least is 5: an attempt then waits 6 s for its CONNACK before this fix's bound
SWITCH_LIMIT_S = 3.0  # a reload's READY, a stop's exit: the old session's end plus start-up
WATCHDOG_PERIOD_S = 2.0  # WATCHDOG_USEC / 2, as systemd advises and the agent does
PING_GAP_LIMIT_S = WATCHDOG_PERIOD_S + 1.5  # one period, plus a switch's second or so


class TimedNotifications:
    """systemd's notify socket, stood in for: each datagram's lines with the time they came."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.lines: list[tuple[float, str]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            except OSError:
                return
            self.lines += [(time.monotonic(), line) for line in data.splitlines()]

    def count(self, line: str) -> int:
        return sum(1 for _, seen in self.lines if seen == line)

    def pings(self) -> list[float]:
        return [at for at, line in self.lines if line == "WATCHDOG=1"]

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


def frozen_until_keepalive_lost(broker: LocalBroker, log: Path) -> None:
    """Freeze the broker, wait for paho's keepalive to drop the connection, then into its next attempt."""
    before = log.read_text().count("Keep alive timeout")
    broker.pause()
    assert lifecycle.wait_until(lambda: log.read_text().count("Keep alive timeout") > before, 4 * KEEPALIVE_S)
    time.sleep(2.0)  # the reconnect delay (about 1 s) has passed: the attempt waits for its CONNACK


def test_reload_and_stop_with_a_frozen_broker_are_prompt_and_clean(
    tmp_path: Path, mosquitto: LocalBroker
) -> None:
    config = tmp_path / "agent.toml"
    text = lifecycle.CONFIG.format(port=mosquitto.port, heartbeat=0.5)
    text = text.replace('url = "mqtt://', f'keepalive_s = {KEEPALIVE_S}\nurl = "mqtt://')
    config.write_text(text)
    log_path = tmp_path / "agent.log"
    notifications = TimedNotifications(tmp_path / "notify.sock")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "NOTIFY_SOCKET": str(notifications.path),
        "WATCHDOG_USEC": "4000000",
    }
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert lifecycle.wait_until(lambda: notifications.count("READY=1") == 1, 30), notifications.lines
        assert lifecycle.wait_until(lambda: "connected to" in log_path.read_text(), 10)

        frozen_until_keepalive_lost(mosquitto, log_path)
        config.write_text(text.replace("heartbeat_interval_s = 0.5", "heartbeat_interval_s = 0.6"))
        pinged = len(notifications.pings())
        assert lifecycle.wait_until(lambda: len(notifications.pings()) > pinged, 2 * WATCHDOG_PERIOD_S)
        time.sleep(0.9 * WATCHDOG_PERIOD_S)  # late in the period: the next ping is the new session's
        sent = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        assert lifecycle.wait_until(lambda: notifications.count("READY=1") == 2, 30)
        reload_took = time.monotonic() - sent
        assert lifecycle.wait_until(lambda: notifications.pings()[-1] > sent, 3 * WATCHDOG_PERIOD_S)
        pings = notifications.pings()
        ping_gap = max(later - earlier for earlier, later in itertools.pairwise(pings))
        mosquitto.resume()
        assert lifecycle.wait_until(lambda: log_path.read_text().count("connected to") >= 2, 20)
        time.sleep(1.0)  # heartbeats of session 2 published

        frozen_until_keepalive_lost(mosquitto, log_path)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        stop_took = time.monotonic() - sent
    finally:
        mosquitto.resume()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        notifications.close()
        log.close()
    print(
        f"with a frozen broker: reload to READY {reload_took:.2f} s, longest WATCHDOG=1 gap "
        f"{ping_gap:.2f} s, SIGTERM to exit {stop_took:.2f} s"
    )
    assert reload_took < SWITCH_LIMIT_S, f"reload took {reload_took:.1f} s"
    assert ping_gap < PING_GAP_LIMIT_S, f"{ping_gap:.1f} s between two WATCHDOG=1 over the reload"
    assert stop_took < SWITCH_LIMIT_S, f"stop took {stop_took:.1f} s"
    assert code == 0
    assert "stopped cleanly" in log_path.read_text()
    assert notifications.count("STOPPING=1") == 1
    # ops review F2: the keepalive loss is told once, not followed by a "wrong port?" line.
    assert "is it an MQTT broker's port" not in log_path.read_text()
