"""Configuration: typed dataclasses (`schema`) loaded and checked from TOML (`loader`)."""

from agent.config.loader import load_config, parse_config
from agent.config.schema import AgentConfig

__all__ = ["AgentConfig", "load_config", "parse_config"]
