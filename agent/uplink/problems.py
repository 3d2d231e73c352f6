"""What is wrong with the broker link, in one sentence an operator can act on.

paho reports a failed connection attempt without its cause (`on_connect_fail` gets no exception)
and a refused CONNECT or PUBLISH as a bare reason code. These functions turn the exception of the
failed attempt (kept by `agent.uplink.connection.new_client`'s client) or the reason code into a line
that names the broker address, what went wrong and the configuration key to look at, so the log
says "check mqtt.tls.ca_file" rather than "0x87" or nothing at all. Pure functions: tested without
a broker, and the uplink decides how often to log them.
"""

from __future__ import annotations

import socket
import ssl
import time
from datetime import UTC, datetime

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from agent.config.schema import MqttConfig

CERT_NOT_YET_VALID = 9  # OpenSSL X509_V_ERR_CERT_NOT_YET_VALID
CERT_HAS_EXPIRED = 10  # OpenSSL X509_V_ERR_CERT_HAS_EXPIRED
HOSTNAME_MISMATCH = 62  # OpenSSL X509_V_ERR_HOSTNAME_MISMATCH
IP_ADDRESS_MISMATCH = 64  # OpenSSL X509_V_ERR_IP_ADDRESS_MISMATCH
KEEPALIVE_TIMEOUT = 0x8D  # the DISCONNECT reason paho reports when its own keepalive ran out
CREDENTIAL_REFUSALS = (0x86, 0x87, 0x8C)  # bad user name or password, not authorized, bad auth method


def reason_name(packet_type: int, code: int) -> str:
    """The MQTT v5 name of a reason code ("Not authorized"), or "reason 0x.." if paho knows none."""
    try:
        return str(ReasonCode(packet_type, identifier=code).getName())
    except (KeyError, ValueError):
        return f"reason 0x{code:02x}"


def broker_address(config: MqttConfig) -> str:
    scheme = "mqtts" if config.tls is not None else "mqtt"
    return f"{scheme}://{config.host}:{config.port}"


def describe_connect_error(exc: BaseException, config: MqttConfig, now: float | None = None) -> str:
    """Why a connection attempt to the broker raised `exc` (DNS, TCP or TLS), and what to check;
    `now` (Unix time, the clock's by default): the gateway's date, told for a certificate's dates."""
    where = broker_address(config)
    if isinstance(exc, socket.gaierror):
        return (
            f"cannot resolve the broker host {config.host!r} ({exc.strerror or exc}): "
            "check the host name in mqtt.url and the gateway's DNS"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _certificate_problem(exc, config, time.time() if now is None else now)
    if isinstance(exc, ssl.SSLError):
        return (
            f"TLS handshake with {where} failed ({exc.reason or exc}): check that this port is a TLS "
            "listener (mqtts://) and the files in [mqtt.tls]"
        )
    if isinstance(exc, ConnectionResetError) and config.tls is not None:
        return (
            f"{where} reset the connection during the TLS handshake: is this port a TLS listener? "
            "(a plain one wants mqtt://); check mqtt.url"
        )
    if isinstance(exc, ConnectionRefusedError):
        return (
            f"nothing accepts connections at {where} (connection refused): is the broker running, "
            "and are the host and port in mqtt.url right?"
        )
    if isinstance(exc, TimeoutError):
        return f"no answer from {where} (timed out): check mqtt.url, the network route and firewalls"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot connect to {where} ({exc.strerror}): check mqtt.url and the network"
    return f"cannot connect to {where} ({type(exc).__name__}: {exc}): check mqtt.url and the network"


def _certificate_problem(exc: ssl.SSLCertVerificationError, config: MqttConfig, now: float) -> str:
    where = broker_address(config)
    detail = exc.verify_message or str(exc)
    if exc.verify_code in (HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH):
        return (
            f"the TLS certificate of {where} is not issued for {config.host!r} ({detail}): "
            "mqtt.url must name the broker as its certificate does"
        )
    ca_file = config.tls.ca_file if config.tls is not None else None
    trust = f"mqtt.tls.ca_file ({ca_file})" if ca_file is not None else "the system trust store"
    # The date only: the line is logged again whenever its words change (agent.link_trouble).
    today = f"the gateway's clock says {datetime.fromtimestamp(now, UTC):%Y-%m-%d} (UTC)"
    if exc.verify_code == CERT_HAS_EXPIRED:
        return (
            f"the TLS certificate of {where} has expired ({detail}) and {today}: renew the broker's "
            f"certificate (or the CA certificate in {trust}, if that is the one that expired); "
            "if that date is wrong, set the gateway's clock (NTP)"
        )
    if exc.verify_code == CERT_NOT_YET_VALID:
        return (
            f"the TLS certificate of {where} is not valid yet ({detail}) and {today}: if that date is "
            "wrong, set the gateway's clock (NTP; a gateway without a battery-backed clock starts at an "
            "old date); otherwise the broker's certificate was issued to start later"
        )
    return (
        f"the TLS certificate of {where} is not trusted ({detail}): "
        f"{trust} must hold the CA that signed the broker's certificate"
    )


def describe_connect_refusal(code: int, config: MqttConfig) -> str:
    """Why the broker answered CONNECT with reason `code` (>= 0x80), and what to check."""
    refused = f"the broker at {broker_address(config)} refused the connection: 0x{code:02x} " + reason_name(
        PacketTypes.CONNACK, code
    )
    if code in CREDENTIAL_REFUSALS:
        if config.auth is not None:
            return (
                f"{refused}: check mqtt.auth.username ({config.auth.username!r}) and the password in "
                f"mqtt.auth.password_file ({config.auth.password_file}) against the broker's accounts"
            )
        if config.tls is not None and config.tls.cert_file is not None:
            return f"{refused}: the broker does not accept the client certificate mqtt.tls.cert_file"
        return f"{refused}: the broker wants credentials; set [mqtt.auth] username and password_file"
    if code == 0x85:
        return f"{refused}: check mqtt.client_id (default: gateway.id)"
    if code == 0x84:
        return f"{refused}: the broker does not speak MQTT v5"
    return f"{refused}: a problem on the broker's side; see the broker's log"


def describe_early_close(code: int, config: MqttConfig, *, answered_before: bool = False) -> str:
    """The connection ended before the broker answered CONNECT (no CONNACK); `answered_before`: a
    CONNECT to this address was answered earlier (the port is right: the broker stopped answering)."""
    if code == KEEPALIVE_TIMEOUT and answered_before:  # a hung broker: its kernel still takes connections
        return (
            f"{broker_address(config)} took the connection but its broker, which answered before, did not "
            f"answer CONNECT (within {config.keepalive_s} s): the broker is hung or overloaded; "
            "see the broker's host and log"
        )
    if code == KEEPALIVE_TIMEOUT:  # paho gave up: the port took the connection and said nothing
        return (
            f"{broker_address(config)} took the connection but never answered CONNECT (within "
            f"{config.keepalive_s} s): is it an MQTT broker's port? check mqtt.url"
        )
    if config.tls is None:
        hint = "is this port a TLS listener that wants mqtts://? check mqtt.url"
    elif config.tls.cert_file is None:
        hint = (
            "does the broker want a client certificate (mqtt.tls.cert_file, key_file)? see the broker's log"
        )
    else:
        hint = "is the client certificate mqtt.tls.cert_file one the broker trusts? see the broker's log"
    name = reason_name(PacketTypes.DISCONNECT, code)
    return f"{broker_address(config)} closed the connection before accepting it ({name}): {hint}"


def describe_publish_refusal(code: int, topic: str, config: MqttConfig, client_id: str) -> str:
    """Why the broker refused a PUBLISH with PUBACK reason `code` (>= 0x80), and what to fix."""
    refused = f"0x{code:02x} {reason_name(PacketTypes.PUBACK, code)}"
    who = f"client {client_id!r}" + (f" (user {config.auth.username!r})" if config.auth is not None else "")
    if code == 0x87:
        return f"{refused}: the broker's ACL must let {who} publish to {topic}"
    if code == 0x90:
        return f"{refused}: the broker does not accept the topic name {topic}; check mqtt.topic_prefix"
    if code == 0x97:
        return f"{refused}: {who} is over a quota of the broker"
    return f"{refused}: see the broker's log"


def describe_network_death(error: Exception) -> str:
    """What ended paho's network thread: an error paho does not retry on (it retries an OSError from a
    connection attempt only). The uplink starts the thread again; the words name the error."""
    died = f"the MQTT network thread stopped on an error it does not handle ({type(error).__name__}: {error})"
    if isinstance(error, UnicodeError):
        return f"{died}: the broker host in mqtt.url cannot be looked up; check mqtt.url"
    return f"{died}; see the traceback logged with the first occurrence"


def describe_no_v5(config: MqttConfig) -> str:
    """A plain loopback broker answered a bare MQTT v5 CONNECT with "unsupported protocol version"."""
    return (
        f"the broker at {broker_address(config)} does not speak MQTT v5: nothing is sent to it, because "
        "with MQTT 3.1.1 a broker's refusal of an alarm (its ACL) looks like a delivery and the alarm "
        'would be deleted; use an MQTT v5 broker (mosquitto 2), or set mqtt.protocol = "3.1.1" to accept '
        "that risk"
    )
