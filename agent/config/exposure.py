"""Valid settings that let patient data out unguarded: said, never refused.

A privacy review (M2) found `remote.allow_unsigned = true` with `privacy.raw_snippets = true` serving
raw ECG to an anonymous, unsigned command, with `check-config` saying "ok" and the start saying nothing;
and (m3) `mqtt.insecure = true` sending everything in clear text to a broker on another host, in silence.
Each setting is meant for a lab or a link secured otherwise (a VPN), and a refusal would stop a gateway
upgraded with them from starting, and so from monitoring: they are warnings, printed by `check-config`
(the config stays "ok") and logged at each session's start (a start or a reload), where
`nothing_can_alarm` is. No line quotes a device id: it counts them.
"""

from __future__ import annotations

from agent.config.schema import AgentConfig
from agent.uplink.connection import is_loopback


def exposure_warnings(config: AgentConfig) -> list[str]:
    """One line for each way `config` lets data out unguarded; [] when it does not."""
    return [line for line in (_unsigned_snippets(config), _plain_text_uplink(config)) if line is not None]


def _unsigned_snippets(config: AgentConfig) -> str | None:
    """Raw samples to whoever can write the command topics: no signature is asked for a snippet."""
    remote = config.remote
    if not (remote.enabled and remote.allow_unsigned and config.privacy.raw_snippets):
        return None
    if "snippet" not in remote.allowed_commands:
        return None
    devices = (
        f"{len(remote.snippet_devices)} device(s) (remote.snippet_devices)"
        if remote.snippet_devices
        else "every device"
    )
    return (
        "remote.allow_unsigned = true with privacy.raw_snippets = true: whoever can write the command "
        f"topics (cmd/#) gets raw samples of {devices}, without a signature; set remote.public_key_file "
        'instead, or take "snippet" out of remote.allowed_commands (docs/remote-management.md)'
    )


def _plain_text_uplink(config: AgentConfig) -> str | None:
    """Plain MQTT to a broker off the gateway (`insecure` lets it): readable and alterable on the way."""
    mqtt = config.mqtt
    if mqtt.tls is not None or is_loopback(mqtt.host):
        return None
    password = ", and so does the MQTT password" if mqtt.auth is not None else ""
    return (
        f"mqtt.insecure = true: alarms and heartbeats go to {mqtt.host}:{mqtt.port} unencrypted, to a broker "
        f"nothing authenticates{password}; use mqtts:// unless the link is encrypted and authenticated "
        "otherwise (a VPN) (docs/security.md, insecure)"
    )
