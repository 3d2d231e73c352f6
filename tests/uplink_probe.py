"""Test helpers for the uplink: a real paho v5 subscriber that records what the broker delivers."""

from __future__ import annotations

import datetime
import ipaddress
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config.schema import AuthConfig, MqttConfig, TlsConfig


class BrokerAddress(Protocol):
    """Where a broker listens: a LocalBroker, or a broker a test starts from its own config."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    properties: dict[str, Any] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """Subscribes (QoS 1) to `topic_filter`; with `persistent`, a clean_start=False session that the
    broker keeps across this client's reconnects and broker restarts (when the broker persists)."""

    def __init__(
        self,
        broker: BrokerAddress,
        topic_filter: str,
        *,
        client_id: str = "",
        persistent: bool = False,
        username: str | None = None,
        password: str | None = None,
        tls: TlsConfig | None = None,
    ) -> None:
        self.messages: list[Received] = []
        self.granted: list[int] = []  # SUBACK reason codes (>= 0x80: refused)
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.connects = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls is not None:
            self.client.tls_set(
                ca_certs=None if tls.ca_file is None else str(tls.ca_file),
                certfile=None if tls.cert_file is None else str(tls.cert_file),
                keyfile=None if tls.key_file is None else str(tls.key_file),
            )
        self.client.reconnect_delay_set(0.05, 0.2)  # type: ignore[arg-type,unused-ignore]
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.topic_filter = topic_filter
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if persistent:
            props.SessionExpiryInterval = 600
        self.client.connect_async(
            broker.host, broker.port, clean_start=not persistent, properties=props, keepalive=10
        )
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError(f"subscriber could not subscribe on {broker.host}:{broker.port}")

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        self.connects += 1
        if not flags.session_present:
            client.subscribe(self.topic_filter, qos=1)
        else:
            self._subscribed.set()

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, reasons: list[Any], _p: Any) -> None:
        self.granted.extend(int(r.value) for r in reasons)
        self._subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        props: dict[str, Any] = {}
        if getattr(msg, "properties", None) is not None:
            props = msg.properties.json()  # type: ignore[union-attr]
        with self._cond:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain), props))
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"condition not met in {timeout} s; got {len(self.messages)} messages")
                self._cond.wait(left)
            return list(self.messages)

    def snapshot(self) -> list[Received]:
        with self._cond:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def mqtt_config(
    broker: BrokerAddress,
    *,
    tls: TlsConfig | None = None,
    auth: AuthConfig | None = None,
    host: str | None = None,
    port: int | None = None,
    client_id: str = "gw1",
    max_inflight: int = 20,
) -> MqttConfig:
    return MqttConfig(
        host=host or broker.host,
        port=broker.port if port is None else port,
        tls=tls,
        topic_prefix="edge",
        client_id=client_id,
        auth=auth,
        keepalive_s=10,
        session_expiry_s=600,
        max_inflight=max_inflight,
        heartbeat_expiry_s=120,
    )


@dataclass(frozen=True)
class TlsMaterial:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


class Pki:
    """A throw-away certificate authority (EC P-256) that writes what it issues into `directory`.

    Certificates are valid from 5 minutes ago for a day unless `valid_from` / `valid_until` say
    otherwise, so a test can make an expired one (`valid_until` in the past) from the same CA.
    """

    def __init__(self, directory: Path, name: str = "test") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
        now = datetime.datetime.now(datetime.UTC)
        ca = (
            self._builder(self._name, self._key, now - datetime.timedelta(minutes=5), now + _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(self._key, hashes.SHA256())
        )
        self.ca = directory / "ca.pem"
        self.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def _builder(
        self,
        subject: x509.Name,
        key: ec.EllipticCurvePrivateKey,
        valid_from: datetime.datetime,
        valid_until: datetime.datetime,
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid_from)
            .not_valid_after(valid_until)
        )

    def issue(
        self,
        common_name: str,
        *,
        stem: str | None = None,
        server: bool = False,
        hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
        valid_from: datetime.datetime | None = None,
        valid_until: datetime.datetime | None = None,
    ) -> Issued:
        """A client certificate with CN `common_name` (with `server`: a server certificate whose
        subjectAltName lists `hosts`), written as `<stem>.pem` and `<stem>.key`."""
        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        builder = self._builder(
            subject,
            key,
            valid_from or now - datetime.timedelta(minutes=5),
            valid_until or now + _DAY,
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_alt_name(host) for host in hosts]),
                critical=False,
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
        cert = builder.sign(self._key, hashes.SHA256())
        stem = stem or common_name
        cert_path, key_path = self.directory / f"{stem}.pem", self.directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        key_path.chmod(0o600)
        return Issued(cert_path, key_path)

    def revoke(self, *revoked: Issued) -> Path:
        """A CRL signed by this CA listing `revoked` (none: an empty CRL), written as `crl.pem`."""
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self._name)
            .last_update(now - datetime.timedelta(minutes=5))
            .next_update(now + _DAY)
        )
        for issued in revoked:
            serial = x509.load_pem_x509_certificate(issued.cert.read_bytes()).serial_number
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
            )
        path = self.directory / "crl.pem"
        path.write_bytes(builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        return path


_DAY = datetime.timedelta(days=1)


def _alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_tls_material(directory: Path, name: str = "test") -> TlsMaterial:
    """A throw-away CA, a server certificate for 127.0.0.1/localhost and a client certificate (CN gw1)."""
    pki = Pki(directory, name)
    server = pki.issue("127.0.0.1", stem="server", server=True)
    client = pki.issue("gw1", stem="client")
    return TlsMaterial(pki.ca, server.cert, server.key, client.cert, client.key)
