"""Remote management over MQTT v5: signed commands answered on a response topic (docs/remote-management.md).

`commands` authenticates and dispatches, `envelope` is the wire format (signatures, freshness, responses),
`bundles` the managed models directory, `snippets` the raw-snippet taps.
"""

from agent.remote.bundles import ModelStore, pack_bundle
from agent.remote.commands import RemoteCommands, check_remote
from agent.remote.envelope import COMMAND_SCHEMA, RESPONSE_SCHEMA, CommandRefusedError, sign_command

__all__ = [
    "COMMAND_SCHEMA",
    "RESPONSE_SCHEMA",
    "CommandRefusedError",
    "ModelStore",
    "RemoteCommands",
    "check_remote",
    "pack_bundle",
    "sign_command",
]
