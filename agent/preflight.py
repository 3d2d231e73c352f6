"""What a start or a reload would refuse, found without starting, creating or changing anything.

`check-config`, `run` (before the first session) and every reload (SIGHUP, the remote `reload`
command) call `preflight`, so what a session start would refuse is refused before anything starts.

Strategy: each check asks the start-up's own code, never a copy of its rules: the same functions
(`Topics`, `build_detectors`, the uplink's `check_transport`, `read_password` and `tls_problems`, the
privacy key's `read_key`). Where the start-up acts, a look-only prediction next to the code that acts:
`agent.state.folder_problem` (which `ensure_state_dir` also asks first) for the folders it makes,
`agent.keyfile.create_problem` for the key files `create_private` makes. Every check returns its
problems as `ConfigError`s naming the key; `preflight` raises them together. A new check is one more
function in `CHECKS`. What a start goes past but an operator should hear of (the state folder on a
read-only file system: a failing SD card) is `preflight_warnings`, which `check-config` prints.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from agent.config.schema import AgentConfig
from agent.errors import ConfigError, InvalidConfigError
from agent.keyfile import create_problem
from agent.pipeline import build_detectors
from agent.pipeline.wiring import check_wiring
from agent.privacy import KEY_SETTING as PRIVACY_KEY_SETTING
from agent.privacy import read_key
from agent.read_only import on_read_only_fs
from agent.remote import check_remote
from agent.sources import check_transport as check_source
from agent.state import folder_problem, read_only_warning
from agent.status import SOCKET_NAME
from agent.uplink import connection
from agent.uplink.topics import Topics

__all__ = ["CHECKS", "preflight", "preflight_warnings"]

Check = Callable[[AgentConfig], list[ConfigError]]
UNIX_PATH_MAX = 107  # bytes of an AF_UNIX socket path on Linux (108 with the final NUL)
DEFAULT_PRIVACY_KEY = "pseudonym.key"  # in gateway.state_dir, when privacy.key_file is not set


def preflight(config: AgentConfig) -> None:
    """`InvalidConfigError` with every problem a session start would meet with `config`."""
    problems = [problem for check in CHECKS for problem in check(config)]
    if problems:
        raise InvalidConfigError(str(config.source_path or "<config>"), problems)


def preflight_warnings(config: AgentConfig) -> list[str]:
    """What a start would go past with a warning, each naming its key: the state folder and the
    outbox's on a read-only file system (they start as on a full disk: docs/robustness.md)."""
    warnings = []
    for key, folder in (
        ("gateway.state_dir", config.gateway.state_dir),
        ("outbox.path", config.outbox.path.parent),
    ):
        if folder_problem(folder) is None and folder.is_dir() and (note := read_only_warning(folder)):
            warnings.append(f"{key}: {note}")
    if len(warnings) == 2 and config.outbox.path.parent == config.gateway.state_dir:
        warnings.pop()  # one folder, one line
    return warnings


def _topics(config: AgentConfig) -> list[ConfigError]:
    try:
        Topics(config.mqtt.topic_prefix, config.gateway.site, config.gateway.id)
    except ConfigError as exc:
        return [exc]
    return []


def _sources(config: AgentConfig) -> list[ConfigError]:
    problems: list[ConfigError] = []
    for i, device in enumerate(config.devices):
        try:
            check_source(device, i)
        except ConfigError as exc:
            problems.append(exc)
    return problems


def _detectors(config: AgentConfig) -> list[ConfigError]:
    try:
        build_detectors(config)
    except InvalidConfigError as exc:
        return exc.errors
    return []


def _uplink(config: AgentConfig) -> list[ConfigError]:
    """What `MqttUplink` checks and loads when it is made: the transport rules, the password file and
    the TLS files (read and parsed as the connection will: a file that is no PEM, a key that is not
    the certificate's)."""
    mqtt = config.mqtt
    problems: list[ConfigError] = []
    for step in (connection.check_transport, connection.read_password):
        try:
            step(mqtt)
        except ConfigError as exc:
            problems.append(exc)
    if mqtt.tls is not None:
        problems += connection.tls_problems(mqtt.tls)
    return problems


def _state_dir(config: AgentConfig) -> list[ConfigError]:
    state_dir = config.gateway.state_dir
    problem = folder_problem(state_dir)
    if problem is not None:
        return [ConfigError("gateway.state_dir", problem)]
    socket_path = os.fsencode(state_dir / SOCKET_NAME)
    if len(socket_path) > UNIX_PATH_MAX:
        return [
            ConfigError(
                "gateway.state_dir",
                f"{state_dir} is too long a path for the status socket {SOCKET_NAME} in it "
                f"({len(socket_path)} bytes with the name; at most {UNIX_PATH_MAX})",
            )
        ]
    return []


def _privacy_key(config: AgentConfig) -> list[ConfigError]:
    """An existing key as the start-up reads it (mode, length); an absent one: can it be created."""
    path = config.privacy.key_file or config.gateway.state_dir / DEFAULT_PRIVACY_KEY
    return _key_file(config, path, PRIVACY_KEY_SETTING, read_key)


def _outbox(config: AgentConfig) -> list[ConfigError]:
    """The outbox's folder (made with its parents when absent), an existing outbox file SQLite must
    open for writing, and, when encrypted, an absent key's folder (an existing key is the loader's)."""
    problems: list[ConfigError] = []
    path = config.outbox.path
    folder = path.parent
    if not _made_at_start(config, folder) and (problem := folder_problem(folder)) is not None:
        problems.append(ConfigError("outbox.path", problem))
    try:
        mode = path.stat().st_mode
    except OSError:
        pass  # absent (created at start) or in a folder already named above
    else:
        if not stat.S_ISREG(mode):
            problems.append(ConfigError("outbox.path", f"{path} is not a file"))
        elif on_read_only_fs(path):  # read and sent, not written: see `preflight_warnings`
            if not os.access(path, os.R_OK):
                problems.append(ConfigError("outbox.path", f"{path} is not readable by this user"))
        elif not os.access(path, os.R_OK | os.W_OK):
            problems.append(ConfigError("outbox.path", f"{path} is not readable and writable by this user"))
    key_file = config.outbox.encryption_key_file
    if key_file is not None:
        problems += _key_file(config, key_file, "outbox.encryption_key_file", None)
    return problems


def _key_file(
    config: AgentConfig, path: Path, setting: str, read: Callable[[Path], object] | None
) -> list[ConfigError]:
    try:
        path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        # Created at start-up, in a folder that must exist by then (no folder is made for a key file).
        if _made_at_start(config, path.parent):
            return []
        problem = create_problem(path)
        return [] if problem is None else [ConfigError(setting, problem)]
    except OSError:
        pass  # there, or not visible: reading it says which
    if read is not None:
        try:
            read(path)
        except ConfigError as exc:
            return [exc]
    return []


def _made_at_start(config: AgentConfig, folder: Path) -> bool:
    """Whether the start-up creates `folder` before anything goes in it: the state folder and its
    missing parents (whether it can is `_state_dir`'s problem)."""
    state_dir = config.gateway.state_dir
    if folder != state_dir and folder not in state_dir.parents:
        return False
    try:
        folder.stat()
    except OSError:
        return True
    return False


CHECKS: tuple[Check, ...] = (
    _topics,
    _sources,
    _detectors,
    check_remote,
    check_wiring,
    _uplink,
    _state_dir,
    _privacy_key,
    _outbox,
)
