"""One root error for the agent; each subclass says whose fault it is and carries the fields to act on."""

from __future__ import annotations


class AgentError(Exception):
    """Root of every error the agent raises on purpose."""


class ConfigError(AgentError):
    """A configuration value is wrong. `path` is the key path, e.g. ``devices[1].serial.baudrate``;
    `choices`: the values the key allows, when the problem lists them (the code's words, never the
    file's, so they are not withheld where the file's values are: `agent.config.withheld`)."""

    def __init__(self, path: str, problem: str, choices: tuple[str, ...] = ()) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem
        self.choices = choices


class InvalidConfigError(AgentError):
    """Every problem found in one configuration file, reported together (one line each)."""

    def __init__(self, source: str, errors: list[ConfigError]) -> None:
        lines = "\n".join(str(e) for e in errors)
        super().__init__(f"{source}: {len(errors)} problem(s)\n{lines}")
        self.source = source
        self.errors = errors


class DeviceProtocolError(AgentError):
    """A device sent something the decoder cannot use; counted and survived by sources."""

    def __init__(self, device: str, reason: str) -> None:
        super().__init__(f"device {device}: {reason}")
        self.device = device
        self.reason = reason


class ModelError(AgentError):
    """A model file or its card is missing, corrupt, unsigned or does not match its stream."""

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"model {model}: {reason}")
        self.model = model
        self.reason = reason


class UplinkError(AgentError):
    """The broker refused or could not take a message; `reason_code` is the MQTT v5 reason code."""

    def __init__(self, reason_code: int, reason: str) -> None:
        super().__init__(f"uplink: {reason} (reason code 0x{reason_code:02x})")
        self.reason_code = reason_code
        self.reason = reason
