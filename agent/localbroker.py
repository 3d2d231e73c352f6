"""A private MQTT broker on a free 127.0.0.1 port, for the test suite and `edge-agent demo`.

Strategy: run the real `mosquitto` binary (found with `shutil.which` or at /usr/sbin/mosquitto) as a
child process with a generated config in its own temporary directory; everything it needs (config,
password file, ACL file, persistence db, log) lives there, so two brokers never share state. The port
is picked once, at construction, and kept: `restart()` comes back on the SAME port, which is what a
reconnecting client expects. `start()` returns only when the port accepts TCP connections, and fails
with the broker's log tail if it does not within `start_timeout_s`.

When mosquitto is not installed, an embedded amqtt broker (the `demo` extra) runs instead, in a child
Python process. amqtt speaks MQTT 3.1.1 only and this fallback offers a plain anonymous listener only:
asking it for TLS, users, ACLs or persistence raises `LocalBrokerError`. Tests require mosquitto.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from agent.errors import AgentError

Backend = Literal["auto", "mosquitto", "amqtt"]
INSTALL_HINT = "install it with `apt-get install mosquitto` (Debian/Ubuntu)"


class LocalBrokerError(AgentError):
    """The private broker could not be configured or started; the message carries its log tail."""


@dataclass(frozen=True, slots=True)
class BrokerTls:
    """Server side of a TLS listener (PEM files). `require_certificate` turns on mutual TLS;
    `crlfile` refuses the client certificates a CA revoked."""

    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = False
    crlfile: Path | None = None


def find_mosquitto() -> Path | None:
    """The mosquitto binary: on PATH, or where Debian puts it (/usr/sbin is often not on PATH)."""
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    for candidate in (Path("/usr/sbin/mosquitto"), Path("/usr/local/sbin/mosquitto")):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def hash_password(password: str, *, iterations: int = 101, salt: bytes | None = None) -> str:
    """Mosquitto 2.x password-file hash: ``$7$iterations$salt$hash`` with PBKDF2-HMAC-SHA512.

    Written directly so the helper does not depend on `mosquitto_passwd` being installed.
    """
    salt = os.urandom(12) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


class LocalBroker:
    """A private broker; use as a context manager or call `start()` / `stop()`."""

    def __init__(
        self,
        *,
        port: int | None = None,
        workdir: Path | None = None,
        persistence: bool = False,
        autosave_interval_s: int = 1,
        allow_anonymous: bool = True,
        users: Mapping[str, str] | None = None,
        acl: str | None = None,
        tls: BrokerTls | None = None,
        extra_config: str = "",
        backend: Backend = "auto",
        start_timeout_s: float = 10.0,
    ) -> None:
        """`users` maps user name to clear password (hashed into the password file); `acl` is the text of
        a mosquitto ACL file; `extra_config` lines are appended verbatim to mosquitto.conf."""
        self.port = free_port() if port is None else port
        self._own_dir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="edge-broker-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.persistence = persistence
        self.autosave_interval_s = autosave_interval_s
        self.allow_anonymous = allow_anonymous
        self.users = dict(users or {})
        self.acl = acl
        self.tls = tls
        self.extra_config = extra_config
        self.start_timeout_s = start_timeout_s
        self.log_path = self.workdir / "broker.log"
        self.db_dir = self.workdir / "db"  # survives restart(): persistence is about exactly that
        self._proc: subprocess.Popen[bytes] | None = None
        self.binary = find_mosquitto()
        if backend == "auto":
            backend = "mosquitto" if self.binary is not None else "amqtt"
        if backend == "mosquitto" and self.binary is None:
            raise LocalBrokerError(f"the mosquitto binary was not found: {INSTALL_HINT}")
        self.backend: Literal["mosquitto", "amqtt"] = backend
        if backend == "amqtt":
            self._check_amqtt_options()

    # -- public surface ---------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        scheme = "mqtts" if self.tls is not None else "mqtt"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> LocalBroker:
        """Start the broker and wait until its port accepts connections."""
        if self.running:
            return self
        command = self._write_mosquitto() if self.backend == "mosquitto" else self._write_amqtt()
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir
            )
        finally:
            log.close()  # the child holds its own descriptor
        self._wait_ready()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Graceful stop (SIGTERM): mosquitto saves its persistence db on the way out."""
        self._signal(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """Crash the broker (SIGKILL): nothing is saved, sockets drop at once."""
        self._signal(signal.SIGKILL, 10.0)

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open but nothing is read or answered."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Undo `pause()` (SIGCONT)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)

    def restart(self, *, kill: bool = False) -> None:
        """Stop (or kill) and start again on the same port, with the same persistence db."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        """Stop the broker and remove its directory (if this object created it)."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalBroker({self.backend}, {self.url}, running={self.running})"

    # -- internals --------------------------------------------------------------------------------

    def _signal(self, sig: signal.Signals, timeout_s: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise LocalBrokerError(
                    f"{self.backend} exited with code {code} while starting on port {self.port}; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise LocalBrokerError(
            f"{self.backend} did not accept connections on port {self.port} within "
            f"{self.start_timeout_s:.0f} s; log {self.log_path}:\n{self.log_tail()}"
        )

    def _write_mosquitto(self) -> list[str]:
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp true",
        ]
        if os.geteuid() == 0:
            # As root, mosquitto drops to the "mosquitto" user, which cannot write our temp dir.
            lines.append("user root")
        if self.persistence:
            self.db_dir.mkdir(exist_ok=True)
            lines += [
                "persistence true",
                f"persistence_location {self.db_dir}/",
                "persistence_file mosquitto.db",
                f"autosave_interval {self.autosave_interval_s}",
            ]
        else:
            lines.append("persistence false")
        if self.users:
            pwfile = self.workdir / "passwd"
            pwfile.write_text("".join(f"{u}:{hash_password(p)}\n" for u, p in self.users.items()))
            pwfile.chmod(0o600)
            lines.append(f"password_file {pwfile}")
        if self.acl is not None:
            aclfile = self.workdir / "acl"
            aclfile.write_text(self.acl)
            aclfile.chmod(0o600)
            lines.append(f"acl_file {aclfile}")
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.cafile}",
                f"certfile {self.tls.certfile}",
                f"keyfile {self.tls.keyfile}",
                f"require_certificate {'true' if self.tls.require_certificate else 'false'}",
            ]
            if self.tls.crlfile is not None:
                lines.append(f"crlfile {self.tls.crlfile}")
        if self.extra_config:
            lines.append(self.extra_config)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        assert self.binary is not None
        return [str(self.binary), "-c", str(conf)]

    def _check_amqtt_options(self) -> None:
        unsupported = [
            name
            for name, wanted in (
                ("persistence", self.persistence),
                ("users", bool(self.users)),
                ("acl", self.acl is not None),
                ("tls", self.tls is not None),
                ("allow_anonymous=False", not self.allow_anonymous),
                ("extra_config", bool(self.extra_config)),
            )
            if wanted
        ]
        if unsupported:
            raise LocalBrokerError(
                f"mosquitto not found and the amqtt fallback does not support {', '.join(unsupported)}: "
                + INSTALL_HINT
            )
        try:
            import amqtt  # noqa: F401  (only checking that the extra is installed)
        except ImportError as exc:
            raise LocalBrokerError(
                f"neither mosquitto nor amqtt is available: {INSTALL_HINT}, "
                "or `pip install amqtt`"
            ) from exc

    def _write_amqtt(self) -> list[str]:
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        conf = self.workdir / "amqtt.yaml"
        conf.write_text(json.dumps(config, indent=2))  # JSON is valid YAML
        return [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(conf)]
