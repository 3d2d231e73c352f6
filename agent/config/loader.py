"""Load a TOML file into `AgentConfig`, reporting every problem with its key path.

Structure checks (types, ranges, unknown keys, files readable) happen here; cross-references
(alarm → detector, duplicate ids, the alarm hierarchy of `agent.config.alarm_hierarchy`) after the whole
file is read. Detector parameters are checked by each detector type when the pipeline is built
(`agent.pipeline.build`), which `check-config` runs too.
A device's tables (`[[devices]]` and its transport's) are read in `agent.config.devices`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent.config.alarm_hierarchy import hierarchy_problems
from agent.config.devices import _device
from agent.config.host_names import host_name_problem
from agent.config.reader import Table, describe
from agent.config.schema import (
    MQTT_311,
    MQTT_311_PROBLEM,
    PROTOCOLS,
    REMOTE_COMMANDS,
    AgentConfig,
    AlarmRuleConfig,
    AuthConfig,
    CalibrationConfig,
    DetectorConfig,
    DeviceConfig,
    GatewayConfig,
    MqttConfig,
    OutboxConfig,
    PrivacyConfig,
    RemoteConfig,
    TlsConfig,
)
from agent.errors import ConfigError, InvalidConfigError
from agent.events import AlarmKind, Priority


def load_config(path: str | Path) -> AgentConfig:
    """Read and check `path`; raises `InvalidConfigError` listing every problem found."""
    return config_from_bytes(read_config_file(path), Path(path))


def read_config_file(path: str | Path) -> bytes:
    """The bytes of the config file at `path`; `InvalidConfigError` when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidConfigError(
            str(path), [ConfigError("", f"cannot read config file: {exc.strerror}")]
        ) from None


def config_from_bytes(raw: bytes, path: Path) -> AgentConfig:
    """Check `raw`, read from the config file at `path` (its folder resolves relative paths). A reload
    reads the file once and uses these bytes for what it tells about them too."""
    source = str(path)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidConfigError(source, [ConfigError("", "not UTF-8 text")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidConfigError(source, [ConfigError("", f"not valid TOML: {exc}")]) from None
    return parse_config(
        data, base_dir=path.resolve().parent, source=source, digest=hashlib.sha256(raw).hexdigest()
    )


def parse_config(
    data: dict[str, Any], *, base_dir: Path, source: str = "<config>", digest: str = ""
) -> AgentConfig:
    problems: list[ConfigError] = []
    root = Table(data, "", problems, base_dir)
    gateway = _gateway(root.table("gateway", required=True))
    mqtt = _mqtt(root.table("mqtt", required=True))
    outbox = _outbox(root.table("outbox", required=True))
    devices = tuple(_device(t) for t in root.tables("devices"))
    detectors = tuple(_detector(t) for t in root.tables("detectors"))
    alarms = tuple(_alarm(t) for t in root.tables("alarms"))
    privacy = _privacy(root.table("privacy"))
    remote = _remote(root.table("remote"), devices)
    root.finish()
    _cross_check(root, devices, detectors, alarms)
    if problems:
        raise InvalidConfigError(source, problems)
    assert gateway and mqtt and outbox  # guaranteed when no problem was recorded
    return AgentConfig(
        gateway,
        mqtt,
        outbox,
        devices,
        detectors,
        alarms,
        privacy,
        source_path=Path(source),
        digest=digest,
        remote=remote,
    )


def _gateway(t: Table | None) -> GatewayConfig | None:
    if t is None:
        return None
    cfg = GatewayConfig(
        id=t.name("id"),
        site=t.name("site"),
        heartbeat_interval_s=t.number("heartbeat_interval_s", 30.0, positive=True),
        state_dir=_dir(t, "state_dir", Path("/var/lib/edge-agent")),
    )
    t.finish()
    return cfg


def _dir(t: Table, key: str, default: Path) -> Path:
    value = t.text(key, str(default))
    return (t.resolved(key, value) or default) if isinstance(value, str) else default


def _mqtt(t: Table | None) -> MqttConfig | None:
    if t is None:
        return None
    url = t.text("url")
    host, port, secure = _broker_url(t, url) if isinstance(url, str) else ("", 0, False)
    tls_table = t.table("tls")
    tls: TlsConfig | None = None
    if tls_table is not None:
        tls = TlsConfig(
            ca_file=tls_table.file("ca_file", None),
            cert_file=tls_table.file("cert_file", None),
            key_file=tls_table.file("key_file", None),
        )
        if (tls.cert_file is None) != (tls.key_file is None):
            tls_table.problem(None, "cert_file and key_file go together (client certificate and its key)")
        tls_table.finish()
        if not secure and host:
            tls_table.problem(None, "TLS files given but the url is mqtt://; use mqtts://")
    elif secure:
        tls = TlsConfig()
    auth_table = t.table("auth")
    auth = None
    if auth_table is not None:
        auth = AuthConfig(
            username=auth_table.text("username"), password_file=auth_table.file("password_file")
        )
        auth_table.finish()
    insecure = t.flag("insecure", False)
    if host and not secure and not insecure and not _is_loopback(host):
        t.problem(
            "url",
            f"plain mqtt:// to non-loopback host '{host}' would send data unencrypted; "
            "use mqtts:// or set mqtt.insecure = true",
        )
    cfg = MqttConfig(
        host=host,
        port=port,
        tls=tls,
        topic_prefix=t.name("topic_prefix", "edge"),
        client_id=t.text("client_id", ""),
        auth=auth,
        insecure=insecure,
        keepalive_s=t.integer("keepalive_s", 30, minimum=5, maximum=65535),
        session_expiry_s=t.integer("session_expiry_s", 7 * 24 * 3600, minimum=0, maximum=0xFFFFFFFF),
        max_inflight=t.integer("max_inflight", 20, minimum=2, maximum=65535),
        heartbeat_expiry_s=t.integer("heartbeat_expiry_s", 120, minimum=1),
        protocol=t.text("protocol", "5", choices=PROTOCOLS),
    )
    if cfg.protocol == MQTT_311 and host and (secure or not _is_loopback(host)):
        t.problem("protocol", MQTT_311_PROBLEM)
    t.finish()
    return cfg


def _broker_url(t: Table, url: str) -> tuple[str, int, bool]:
    parts = urlsplit(url)
    if "@" in parts.netloc:  # never echo it: the error line goes to the journal
        shown = describe(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl())
        t.problem("url", f"credentials do not go in the URL: put them in [mqtt.auth] (got {shown})")
        return "", 0, False
    if parts.scheme not in ("mqtt", "mqtts"):
        t.problem("url", f"expected mqtt://host:port or mqtts://host:port, got {describe(url)}")
        return "", 0, False
    try:
        port = parts.port
    except ValueError:
        t.problem("url", f"bad port in {describe(url)}")
        return "", 0, False
    if not parts.hostname:
        t.problem("url", f"no host in {describe(url)}")
        return "", 0, False
    if (problem := host_name_problem(parts.hostname)) is not None:
        t.problem("url", problem)
        return "", 0, False
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        t.problem("url", f"expected only scheme, host and port, without a path or query, got {describe(url)}")
    secure = parts.scheme == "mqtts"
    return parts.hostname, port or (8883 if secure else 1883), secure


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _outbox(t: Table | None) -> OutboxConfig | None:
    if t is None:
        return None
    path = t.text("path")
    cfg = OutboxConfig(
        path=(t.resolved("path", path) or Path()) if isinstance(path, str) else Path(),
        max_bytes=t.integer("max_bytes", 64 * 1024 * 1024, minimum=64 * 1024),
        warn_fraction=t.number("warn_fraction", 0.8, minimum=0.1, maximum=1.0),
        encryption_key_file=t.file("encryption_key_file", None, readable=False),
    )
    key_file = cfg.encryption_key_file
    if key_file is not None and key_file.exists():  # an absent key file is created at start-up
        from agent.sealing import key_file_problem  # cryptography is imported only when configured

        problem = key_file_problem(key_file)
        if problem is not None:
            t.problem("encryption_key_file", problem)
    t.finish()
    return cfg


def _detector(t: Table) -> DetectorConfig:
    params = t.raw("params", {})
    if not isinstance(params, dict):
        t.problem("params", f"expected a table, got {describe(params)}")
        params = {}
    cfg = DetectorConfig(
        id=t.name("id"),
        type=t.text("type"),
        stream=t.name("stream"),
        channels=t.texts("channels"),
        rate_hz=t.number("rate_hz", 1.0, positive=True),
        params=params,
        base_dir=t.base_dir,
        calibration=_calibration(t.table("calibration")),
    )
    if cfg.channels == ():
        t.problem("channels", "must name at least one channel")
    t.finish()
    return cfg


def _calibration(t: Table | None) -> CalibrationConfig | None:
    """`calibration = { baseline_s, target_false_alarms_per_hour }`; whether the detector type has anything
    to calibrate, and whether the baseline is long enough for its hop, is checked when it is built."""
    if t is None:
        return None
    cfg = CalibrationConfig(
        baseline_s=t.number("baseline_s", positive=True),
        target_false_alarms_per_hour=t.number("target_false_alarms_per_hour", positive=True),
    )
    t.finish()
    return cfg


def _alarm(t: Table) -> AlarmRuleConfig:
    escalate = t.number("escalate_after_s", None, positive=True) if t.has("escalate_after_s") else None
    cfg = AlarmRuleConfig(
        condition=t.name("condition"),
        detector=t.text("detector"),
        priority=Priority(t.text("priority", "medium", choices=[p.value for p in Priority])),
        kind=AlarmKind(t.text("kind", "physiological", choices=[k.value for k in AlarmKind])),
        min_duration_s=t.number("min_duration_s", 10.0, minimum=0.0),
        confirm_n=t.integer("confirm_n", 1, minimum=1),
        confirm_m=t.integer("confirm_m", 1, minimum=1),
        clear_after_s=t.number("clear_after_s", 10.0, minimum=0.0),
        hysteresis=t.number("hysteresis", 0.0, minimum=0.0),
        cooldown_s=t.number("cooldown_s", 60.0, minimum=0.0),
        escalate_after_s=escalate,
        unit=t.text("unit", ""),
        superseded_by=t.texts("superseded_by", ()),
    )
    if cfg.confirm_n > cfg.confirm_m:
        t.problem("confirm_n", f"must not exceed confirm_m ({cfg.confirm_m}), got {cfg.confirm_n}")
    t.finish()
    return cfg


def _privacy(t: Table | None) -> PrivacyConfig:
    if t is None:
        return PrivacyConfig()
    cfg = PrivacyConfig(
        key_file=t.file("key_file", None, readable=False),
        raw_snippets=t.flag("raw_snippets", False),
        vitals_in_heartbeat=t.flag("vitals_in_heartbeat", True),
    )
    t.finish()
    return cfg


def _remote(t: Table | None, devices: tuple[DeviceConfig, ...]) -> RemoteConfig:
    if t is None:
        return RemoteConfig()
    models_dir = t.text("models_dir", "")
    cfg = RemoteConfig(
        enabled=t.flag("enabled", False),
        public_key_file=t.file("public_key_file", None),
        model_public_key_file=t.file("model_public_key_file", None),
        allow_unsigned=t.flag("allow_unsigned", False),
        models_dir=t.resolved("models_dir", models_dir)
        if isinstance(models_dir, str) and models_dir
        else None,
        allowed_commands=t.texts("allowed_commands", REMOTE_COMMANDS),
        max_age_s=t.number("max_age_s", 60.0, minimum=1.0, maximum=3600.0),
        max_bundle_bytes=t.integer("max_bundle_bytes", 16 * 1024 * 1024, minimum=1024),
        max_snippet_s=t.number("max_snippet_s", 30.0, positive=True, maximum=300.0),
        snippet_devices=t.texts("snippet_devices", (), private=True),
    )
    if isinstance(cfg.allowed_commands, tuple):
        unknown = [c for c in cfg.allowed_commands if c not in REMOTE_COMMANDS]
        if unknown:
            t.problem(
                "allowed_commands",
                f"unknown: {', '.join(unknown)} (one of {', '.join(REMOTE_COMMANDS)})",
                REMOTE_COMMANDS,
            )
    if cfg.enabled and cfg.public_key_file is None and not cfg.allow_unsigned:
        t.problem(
            "public_key_file",
            "remote commands need a signing key (Ed25519 PEM); set allow_unsigned = true to rely on"
            " broker ACLs alone",
        )
    if cfg.public_key_file is not None and cfg.allow_unsigned:
        t.problem("allow_unsigned", "contradicts public_key_file (signed commands are required with a key)")
    if isinstance(cfg.snippet_devices, tuple):
        known = {d.id for d in devices}
        for i, device_id in enumerate(cfg.snippet_devices):
            if device_id not in known:  # by position: a device id is not quoted (agent.config.reader)
                t.problem(f"snippet_devices[{i}]", "no device with this id")
    t.finish()
    return cfg


def _cross_check(
    root: Table,
    devices: tuple[DeviceConfig, ...],
    detectors: tuple[DetectorConfig, ...],
    alarms: tuple[AlarmRuleConfig, ...],
) -> None:
    for key, ids in (("devices", [d.id for d in devices]), ("detectors", [d.id for d in detectors])):
        for value, count in Counter(ids).items():
            if count > 1 and value:
                first = ids.index(value)
                second = ids.index(value, first + 1)
                shown = "" if key == "devices" else f" {describe(value)}"  # a device id is private
                root.problems.append(
                    ConfigError(f"{key}[{second}].id", f"duplicate id{shown} (also {key}[{first}])")
                )
    if not devices:
        root.problem("devices", "no device configured: add at least one [[devices]] table")
    known = {d.id for d in detectors if isinstance(d.id, str)}  # a wrong-typed id is already a problem
    for i, alarm in enumerate(alarms):
        if isinstance(alarm.detector, str) and alarm.detector not in known:
            root.problems.append(
                ConfigError(
                    f"alarms[{i}].detector",
                    f"no detector with id {describe(alarm.detector)} (known: {_listing(known)})",
                )
            )
    root.problems.extend(hierarchy_problems(alarms, detectors))


def _listing(names: set[str]) -> str:
    return ", ".join(sorted(names)) or "none"
