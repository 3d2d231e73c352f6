"""The topic layout of one gateway: ``{prefix}/{site}/{gateway}/...`` (documented in docs/topics.md).

Every topic of a gateway shares one root, so a broker ACL of ``{prefix}/{site}/{gateway}/#`` gives a
gateway exactly its own topics, and a back end subscribes to ``{prefix}/+/+/alarm`` for all of them.
Components are checked once, here: a ``+``, ``#`` or ``/`` inside one would silently change which
topics it names (or make publishing illegal), so they are configuration errors.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.errors import ConfigError

_FORBIDDEN = ("+", "#", "/", "\x00")


def check_component(key: str, value: str) -> str:
    """`value` if it can be one topic level; ConfigError naming `key` otherwise."""
    if not value:
        raise ConfigError(key, "must not be empty (it is one MQTT topic level)")
    bad = [c for c in _FORBIDDEN if c in value]
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise ConfigError(key, f"{value!r} contains {shown}, not allowed in one MQTT topic level")
    if value.startswith("$"):
        raise ConfigError(key, f"{value!r} starts with '$', which brokers reserve ($SYS)")
    if len(value.encode()) > 1024:
        raise ConfigError(key, "longer than 1024 bytes")
    return value


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics of one gateway. `command` is a subscription filter; the others are publish topics."""

    prefix: str
    site: str
    gateway: str

    def __post_init__(self) -> None:
        check_component("mqtt.topic_prefix", self.prefix)
        check_component("gateway.site", self.site)
        check_component("gateway.id", self.gateway)

    @property
    def root(self) -> str:
        return f"{self.prefix}/{self.site}/{self.gateway}"

    @property
    def alarm(self) -> str:
        """Alarm events (start/update/end, physiological and technical), QoS 1, not retained."""
        return f"{self.root}/alarm"

    @property
    def heartbeat(self) -> str:
        """Heartbeats, QoS 1 with a message expiry interval, not retained."""
        return f"{self.root}/heartbeat"

    @property
    def status(self) -> str:
        """Retained birth ("online") and Will / clean-stop ("offline") messages."""
        return f"{self.root}/status"

    @property
    def command(self) -> str:
        """Subscription filter for commands sent to this gateway."""
        return f"{self.root}/cmd/#"

    @property
    def response(self) -> str:
        """Where command responses go (the request's ResponseTopic wins when `may_answer_on` it)."""
        return f"{self.root}/cmd/response"

    def may_answer_on(self, topic: str) -> bool:
        """Whether a command's answer may go to `topic`, a request's ResponseTopic: this gateway's
        `response` topic, or a topic name outside the fleet's `{prefix}/` tree. Inside the tree are the
        alarm, heartbeat and status topics the gateway may write (its ACL grants `{prefix}/+/<id>/...`,
        so any site's), where an answer would pose as an event; wildcards, `$` topics and NUL are no
        topic names at all."""
        if topic == self.response:
            return True
        if not topic or topic.startswith("$") or any(c in topic for c in "+#\x00"):
            return False
        return topic != self.prefix and not topic.startswith(self.prefix + "/")
