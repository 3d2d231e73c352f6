"""How the gateway connects to its broker: transport checks, credentials, TLS, the Will, the protocol
version and the reconnect backoff. `agent.uplink.mqtt` uses these to build and drive its paho client.

Strategy: everything decided before the first byte is sent lives here as small functions, so each rule
is checked once and can be tested without a broker:
- plain MQTT to a non-loopback host is a configuration error unless `insecure` is set; TLS always
  verifies the server (system trust store or `tls.ca_file`), with an optional client certificate;
- the password comes from `auth.password_file` (one trailing newline stripped), never the config;
  that file and the TLS client key are refused when group or others can read them (`agent.keyfile`);
- MQTT v5 with clean_start=False and SessionExpiryInterval; MQTT 3.1.1 (persistent session) only when
  `mqtt.protocol = "3.1.1"` chose it, for a plain loopback broker (the demo's embedded amqtt): it has no
  PUBACK reason codes, so a refusal would look like a delivery. `speaks_v5` tells a plain loopback
  broker that cannot do v5, which the uplink then refuses with a clear line;
- reconnect delays grow exponentially to a cap, each drawn in [1/2, 1] x the step ("equal jitter"),
  so a fleet of gateways does not reconnect in lockstep after a broker restart.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
import re
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config.host_names import host_name_problem
from agent.config.schema import MQTT_311, MQTT_311_PROBLEM, MqttConfig, TlsConfig
from agent.errors import ConfigError
from agent.events import encode, iso_time
from agent.keyfile import loose_mode_problem

STATUS_SCHEMA = "edge-agent/status/1"


def new_properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho leaves it unannotated


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_transport(config: MqttConfig) -> None:
    """ConfigError for a connection the agent must not make (or cannot: a host name the socket layer
    cannot encode would kill paho's network thread at its first attempt)."""
    if (problem := host_name_problem(config.host)) is not None:
        raise ConfigError("mqtt.url", problem)
    if config.tls is None and not config.insecure and not is_loopback(config.host):
        raise ConfigError(
            "mqtt.host",
            f"plain mqtt:// to non-loopback host {config.host!r} sends alarms in clear text; "
            "use mqtts:// or set mqtt.insecure = true",
        )
    if config.protocol == MQTT_311 and (config.tls is not None or not is_loopback(config.host)):
        raise ConfigError("mqtt.protocol", MQTT_311_PROBLEM)
    if config.tls is not None and (config.tls.cert_file is None) != (config.tls.key_file is None):
        raise ConfigError("mqtt.tls", "cert_file and key_file go together (mutual TLS)")
    if config.max_inflight < 2:
        raise ConfigError("mqtt.max_inflight", "must be at least 2 (one slot is kept for status messages)")


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """The client's TLS context, as paho's `tls_set` builds it (TLS client, the server verified against
    `ca_file` or the system store, the broker's name checked), with the files loaded here so that a bad
    one is a `ConfigError` naming its key and file rather than a bare `ssl.SSLError`. `preflight` asks
    `tls_problems`, the same loading: `check-config` and a reload refuse what the uplink would fail on.
    """
    context, problems = _load_tls(tls)
    if problems:
        raise problems[0]
    return context


def tls_problems(tls: TlsConfig) -> list[ConfigError]:
    """Every problem `tls_context` would raise the first of (each TLS file is tried)."""
    return _load_tls(tls)[1]


def _load_tls(tls: TlsConfig) -> tuple[ssl.SSLContext, list[ConfigError]]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
    problems: list[ConfigError] = []
    if tls.cert_file is not None:
        try:
            _load_client_chain(context, tls.cert_file, tls.key_file)
        except ConfigError as exc:
            problems.append(exc)
    try:
        if tls.ca_file is None:
            context.load_default_certs()
        else:
            context.load_verify_locations(cafile=str(tls.ca_file))
    except ssl.SSLError as exc:
        why = f"{tls.ca_file} holds no PEM certificate ({_why(exc)})"
        problems.append(ConfigError("mqtt.tls.ca_file", why))
    except OSError as exc:
        why = f"cannot read {tls.ca_file}: {exc.strerror or exc}"
        problems.append(ConfigError("mqtt.tls.ca_file", why))
    return context, problems


def _load_client_chain(context: ssl.SSLContext, cert_file: Path, key_file: Path | None) -> None:
    """The client certificate and its key into `context`; each failure names the file at fault."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:  # the certificate alone first: a failure of the pair below is then the key's
        probe.load_verify_locations(cafile=str(cert_file))
    except ssl.SSLError as exc:
        raise ConfigError(
            "mqtt.tls.cert_file", f"{cert_file} holds no PEM certificate ({_why(exc)})"
        ) from None
    except OSError as exc:
        raise ConfigError("mqtt.tls.cert_file", f"cannot read {cert_file}: {exc.strerror or exc}") from None
    setting, named = (
        ("mqtt.tls.key_file", key_file) if key_file is not None else ("mqtt.tls.cert_file", cert_file)
    )
    if (loose := loose_mode_problem(named)) is not None:  # the gateway's private key
        raise ConfigError(setting, loose)
    try:
        # An encrypted key would make OpenSSL ask for its pass phrase on the terminal: refuse it instead.
        context.load_cert_chain(str(cert_file), None if key_file is None else str(key_file), _no_pass_phrase)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(setting, f"{named} is not the key of the certificate in {cert_file}") from None
        raise ConfigError(
            setting, f"{named} holds no usable PEM private key (unencrypted) ({_why(exc)})"
        ) from None
    except OSError as exc:
        raise ConfigError(setting, f"cannot read {named}: {exc.strerror or exc}") from None


def _no_pass_phrase() -> str:
    return ""  # an encrypted key then fails to load: the agent has no pass phrase to give


def _why(exc: ssl.SSLError) -> str:
    """OpenSSL's reason in words ("no certificate or crl found"), without the `_ssl.c` line."""
    if exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(exc.strerror or exc))


def read_password(config: MqttConfig) -> str | None:
    """The broker password (one trailing line end stripped); refused, as the other secret files are,
    when group or others can read its file."""
    if config.auth is None:
        return None
    path = config.auth.password_file
    if (loose := loose_mode_problem(path)) is not None:
        raise ConfigError("mqtt.auth.password_file", loose)
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError("mqtt.auth.password_file", f"cannot read {path}: {exc}") from exc
    except UnicodeDecodeError:
        raise ConfigError("mqtt.auth.password_file", f"{path} is not UTF-8 text") from None


def speaks_v5(host: str, port: int, timeout_s: float = 3.0) -> bool | None:
    """Whether the broker answers an MQTT v5 CONNECT (any reason code but "unsupported protocol").

    A bare CONNECT without a Will: a 3.1.1-only broker (amqtt) refuses it at once, whereas a real
    CONNECT with a Will makes amqtt misparse the v5 properties and stall. None: no answer.
    """
    # CONNECT: "MQTT", level 5, clean start, keepalive 5 s, no properties, empty client id.
    connect = bytes([0x10, 13, 0, 4, *b"MQTT", 5, 0x02, 0, 5, 0, 0, 0])
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(connect)
            answer = b""
            while len(answer) < 4:
                chunk = sock.recv(4 - len(answer))
                if not chunk:
                    break
                answer += chunk
            with contextlib.suppress(OSError):
                sock.sendall(bytes([0xE0, 0]))  # DISCONNECT
    except OSError:
        return None
    if len(answer) < 4 or answer[0] != 0x20:
        return None
    # 0x84 is v5's "Unsupported protocol version"; 0x01 is the same refusal in a 3.1.1 CONNACK.
    return answer[3] not in (0x01, 0x84)


def status_payload(
    gateway: str,
    session: int,
    state: str,
    now: float,
    *,
    clean: bool | None = None,
    reason: str | None = None,
) -> bytes:
    """Birth (`online`), Will (`offline`, clean false, no time: it is written at connect) or clean stop
    (`reason`: "stop", or "reload" when the next session's birth follows at once)."""
    body: dict[str, object] = {
        "schema": STATUS_SCHEMA,
        "state": state,
        "gateway": gateway,
        "session": session,
    }
    if clean is not None:
        body["clean"] = clean
    if reason is not None:
        body["reason"] = reason
    if state == "online" or clean:
        body["time"] = iso_time(now)
    return encode(body)


def backoff_delay(
    failures: int, min_s: float, max_s: float, rand: Callable[[], float] = random.random
) -> float:
    """Delay before the next attempt after `failures` consecutive failures (1 = the first)."""
    step = min(max_s, min_s * 2.0 ** min(max(0, failures - 1), 30))
    return step / 2 + rand() * step / 2


class RecordingClient(paho.Client):
    """paho's client, keeping the exception of its last failed connection attempt: paho's own
    `on_connect_fail` is told that an attempt failed, not why (DNS, refused, TLS); and telling
    `on_network_death` what ended its network thread, which paho lets die unseen."""

    last_connect_error: OSError | None = None  # set and read in paho's network thread only
    # Called in the dying network thread with the exception that ended its loop.
    on_network_death: Callable[[Exception], None] | None = None

    def reconnect(self) -> MQTTErrorCode:
        try:
            return super().reconnect()
        except OSError as exc:  # what paho's loop catches before calling on_connect_fail
            self.last_connect_error = exc
            raise

    def loop_forever(self, timeout: float = 1.0, retry_first_connection: bool = False) -> MQTTErrorCode:
        """paho's loop (the body of `loop_start`'s thread). paho retries an OSError from a connection
        attempt only: anything else (a `UnicodeError` from the host's look-up, an OSError from its
        reconnect wait's `time.sleep`, an error in a callback) ends the loop and so the thread, with
        a traceback on stderr and no word to the agent. It is handed to `on_network_death` instead."""
        try:
            return super().loop_forever(timeout, retry_first_connection)
        except Exception as exc:
            if self.on_network_death is None:
                raise
            self.on_network_death(exc)
            return MQTTErrorCode.MQTT_ERR_UNKNOWN


def new_client(
    config: MqttConfig, client_id: str, *, v5: bool, password: str | None, will_topic: str, will: bytes
) -> RecordingClient:
    """A configured, not yet connected paho client (callback API v2) with the retained QoS 1 Will."""
    client = RecordingClient(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        clean_session=None if v5 else False,  # 3.1.1: a persistent session
        reconnect_on_failure=True,
    )
    if config.auth is not None:
        client.username_pw_set(config.auth.username, password)
    if config.tls is not None:
        client.tls_set_context(tls_context(config.tls))
        client.tls_insecure_set(False)  # verify the broker's name too (what tls_set did)
    client.will_set(will_topic, will, qos=1, retain=True)
    client.max_inflight_messages_set(config.max_inflight)
    client.max_queued_messages_set(0)  # the uplink's window bounds what it hands over
    return client


def connect_async(client: paho.Client, config: MqttConfig, *, v5: bool) -> None:
    """Ask paho to connect (it retries until it succeeds once its loop runs)."""
    if v5:
        props = new_properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = config.session_expiry_s
        client.connect_async(
            config.host, config.port, keepalive=config.keepalive_s, clean_start=False, properties=props
        )
    else:
        client.connect_async(config.host, config.port, keepalive=config.keepalive_s)
