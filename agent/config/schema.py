"""The configuration as frozen, typed dataclasses; `agent.config.loader` builds them from TOML.

Defaults live here and only here. Every field maps to one TOML key of the same name; the reference
is docs/configuration.md and the commented examples in examples/.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agent.events import AlarmKind, Priority

DeviceKind = Literal["wearable", "equipment"]
MQTT_5, MQTT_311 = "5", "3.1.1"
PROTOCOLS = (MQTT_5, MQTT_311)  # mqtt.protocol's values
MQTT_311_PROBLEM = (
    '"3.1.1" is only for a broker on this gateway (a plain mqtt:// loopback url, such as the demo\'s '
    "amqtt): with MQTT 3.1.1 a broker's refusal of an alarm looks like its delivery; use an MQTT v5 broker"
)
Transport = Literal["simulator", "serial", "ble", "replay", "modbus"]


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    id: str
    site: str
    heartbeat_interval_s: float = 30.0
    state_dir: Path = Path("/var/lib/edge-agent")  # session counter, calibration, pseudonym key


@dataclass(frozen=True, slots=True)
class TlsConfig:
    ca_file: Path | None = None  # None: the system trust store
    cert_file: Path | None = None  # client certificate (mutual TLS)
    key_file: Path | None = None


@dataclass(frozen=True, slots=True)
class AuthConfig:
    username: str
    password_file: Path  # the password is read from this file, never written in the config


@dataclass(frozen=True, slots=True)
class MqttConfig:
    host: str
    port: int
    tls: TlsConfig | None  # None for mqtt://, set for mqtts://
    topic_prefix: str = "edge"
    client_id: str = ""  # "" means the gateway id
    auth: AuthConfig | None = None
    insecure: bool = False  # must be true to use plain mqtt:// to a non-loopback host
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 24 * 3600  # the broker keeps our session (and our QoS 1 state) this long
    max_inflight: int = 20
    heartbeat_expiry_s: int = 120  # a heartbeat older than this is worthless to the receiver
    # "5", or "3.1.1" (opt-in, a loopback broker only: the demo's amqtt): 3.1.1 has no PUBACK reason
    # codes, so a broker's refusal of an alarm looks like its delivery and the alarm is deleted.
    protocol: str = MQTT_5


@dataclass(frozen=True, slots=True)
class OutboxConfig:
    path: Path
    max_bytes: int = 64 * 1024 * 1024
    warn_fraction: float = 0.8  # raise the technical "outbox_filling" alarm at this fill level
    encryption_key_file: Path | None = None  # AES-256-GCM key sealing payloads at rest; None: plaintext


@dataclass(frozen=True, slots=True)
class EpisodeConfig:
    """An injected episode for a simulated device: ground truth for tests and demos."""

    condition: str
    start_s: float
    duration_s: float


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    seed: int = 0
    speed: float = 1.0  # simulated seconds per real second
    ecg: bool = False  # also stream a 250 Hz ECG lead (wearables only)
    episodes: tuple[EpisodeConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class SerialConfig:
    port: str  # prefer a stable /dev/serial/by-id/... path
    baudrate: int = 115200
    protocol: Literal["frames", "csv", "jsonl"] = "frames"
    channels: tuple[str, ...] = ()  # for csv/jsonl: the declared channel map, in column order
    rate_hz: float = 0.0  # for csv/jsonl: lines per second the device sends (0: unknown), to space a backlog


@dataclass(frozen=True, slots=True)
class BleConfig:
    address: str = ""
    name: str = ""
    service_uuid: str = ""
    profiles: tuple[str, ...] = (
        "heart_rate",
    )  # heart_rate, plx, thermometer, blood_pressure, battery, polar_pmd
    connect_timeout_s: float = 20.0


ModbusRegisterType = Literal["uint16", "int16", "uint32", "int32", "float32"]


@dataclass(frozen=True, slots=True)
class ModbusRegisterConfig:
    """One channel read from Modbus: physical = raw * scale + offset."""

    name: str  # channel name, e.g. "vibration_rms"
    address: int  # 0-based register address, as on the wire
    table: Literal["holding", "input"] = "holding"
    type: ModbusRegisterType = "uint16"  # 32-bit types take two registers
    scale: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True, slots=True)
class ModbusConfig:
    """Modbus TCP (`host`) or RTU (`serial_port`) polling of one unit."""

    registers: tuple[ModbusRegisterConfig, ...]
    host: str = ""
    port: int = 502
    serial_port: str = ""  # RTU: prefer a stable /dev/serial/by-id/... path
    baudrate: int = 19200
    unit: int = 1  # Modbus device id (slave address)
    poll_interval_s: float = 1.0
    timeout_s: float = 1.0
    word_order: Literal["big", "little"] = "big"  # order of the two registers of a 32-bit value


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    path: Path
    speed: float = 1.0  # 0 means as fast as possible


@dataclass(frozen=True, slots=True)
class BeatsConfig:
    """Heart beats found in a device's ECG (agent.ecg): its RR intervals become a stream of their own."""

    ecg_stream: str = "ecg"  # the waveform stream to find beats in (its "ecg" channel, else its first)
    rr_stream: str = "rr"  # where the intervals go; the device's own readings on it are replaced


@dataclass(frozen=True, slots=True)
class RunningWhenConfig:
    """When a machine counts as running: its `channel` above `above` (motor current, speed). While it
    does not, and for `settle_s` after it starts, its streams get no verdict (agent.pipeline.running)."""

    channel: str
    above: float
    settle_s: float = 0.0


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    id: str  # local name; only its pseudonym leaves the gateway
    kind: DeviceKind
    transport: Transport
    patient: str = ""  # patient identifier, if any: never published, only pseudonymised
    lost_after_s: float = 30.0  # no data this long raises the technical "device_lost" alarm
    simulator: SimulatorConfig | None = None
    serial: SerialConfig | None = None
    ble: BleConfig | None = None
    replay: ReplayConfig | None = None
    modbus: ModbusConfig | None = None
    beats: BeatsConfig | None = None  # find beats in the ECG: an RR stream for ECG-only devices
    running_when: RunningWhenConfig | None = None  # None: always judged (no operating-state gate)
    # (channel, unit): the unit each listed channel is sent in (agent.units spellings), converted to the
    # unit its detectors read it in; over a serial HELLO's own (agent.sources.declared_units). Pairs, not
    # a dict: the config stays hashable.
    units: tuple[tuple[str, str], ...] = ()
    # (channel, (low, high)): the span the sensor can measure (its datasheet), replacing the quality
    # gate's built-in range for this device's channel; `context` quantises within it (docs/config.md).
    # Pairs, as `units`: `dict(device.ranges)` where a lookup is wanted.
    ranges: tuple[tuple[str, tuple[float, float]], ...] = ()


@dataclass(frozen=True, slots=True)
class CalibrationConfig:
    """Live calibration of one detector on the gateway (docs/detectors.md, "Calibration on the gateway")."""

    baseline_s: float  # seconds of stream data that passed the quality gate to learn from
    target_false_alarms_per_hour: float  # score exceedances per stream per hour on normal data


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """One detector over one stream name (e.g. "vitals") of every device that has it."""

    id: str
    type: str  # "limit", "robust_z", ... (see agent.detectors.registry)
    stream: str
    channels: tuple[str, ...]
    rate_hz: float = 1.0  # samples per second of the stream: converts window_s / hop_s to samples
    params: Mapping[str, Any] = field(default_factory=dict)  # checked by the detector type itself
    base_dir: Path = Path()  # the config file's folder: relative paths in params (a model) start here
    calibration: CalibrationConfig | None = None  # None: the configured threshold is kept


@dataclass(frozen=True, slots=True)
class AlarmRuleConfig:
    """Turns one detector's scores into alarm episodes through the alarm state machine."""

    condition: str
    detector: str  # a DetectorConfig.id
    priority: Priority = Priority.MEDIUM
    kind: AlarmKind = AlarmKind.PHYSIOLOGICAL
    min_duration_s: float = 10.0  # abnormal this long before the alarm starts
    confirm_n: int = 1  # N of the last M hops must exceed (N-of-M confirmation)
    confirm_m: int = 1
    clear_after_s: float = 10.0  # normal this long before the alarm ends
    # Clearing needs score <= threshold * (1 - h); for a threshold of 0 (limit detectors, whose score
    # is the distance past the limit in the channel's unit) h is an absolute margin in that unit.
    hysteresis: float = 0.0
    cooldown_s: float = 60.0  # after an end, the same alarm cannot restart for this long
    escalate_after_s: float | None = None  # still active this long: raise one priority level
    unit: str = ""
    # Conditions of rules on the same stream that outrank this one (an alarm hierarchy, transitive):
    # while one of them is PENDING on a stream this rule cannot start there, and while one is ACTIVE or
    # CLEARING it starts nothing there (agent.pipeline.stream, agent.alarms.book).
    superseded_by: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PrivacyConfig:
    key_file: Path | None = None  # per-site HMAC key (0600); None: <state_dir>/pseudonym.key
    raw_snippets: bool = False
    # beats_per_min and desaturation_index_per_h in each heartbeat (payloads.md); False: left out
    vitals_in_heartbeat: bool = True


REMOTE_COMMANDS = ("status", "reload", "models/list", "models/activate", "models/install", "snippet")


@dataclass(frozen=True, slots=True)
class RemoteConfig:
    """Remote management over MQTT (docs/remote-management.md); off unless `enabled`."""

    enabled: bool = False
    public_key_file: Path | None = None  # Ed25519 PEM: commands must carry a signature by its private key
    model_public_key_file: Path | None = None  # verifies model bundles; None: public_key_file
    allow_unsigned: bool = False  # accept unsigned commands (no public_key_file): broker ACLs alone guard
    models_dir: Path | None = None  # <name>/<version>/ + <name>/current; None: <state_dir>/models
    allowed_commands: tuple[str, ...] = REMOTE_COMMANDS
    max_age_s: float = 60.0  # a command's issued_at must be this close to the gateway clock
    max_bundle_bytes: int = 16 * 1024 * 1024  # a larger models/install payload (+ 32 KiB) is refused unread
    max_snippet_s: float = 30.0
    snippet_devices: tuple[str, ...] = ()  # device ids allowed raw snippets; () = all (if privacy allows)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    gateway: GatewayConfig
    mqtt: MqttConfig
    outbox: OutboxConfig
    devices: tuple[DeviceConfig, ...]
    detectors: tuple[DetectorConfig, ...] = ()
    alarms: tuple[AlarmRuleConfig, ...] = ()
    privacy: PrivacyConfig = PrivacyConfig()
    source_path: Path | None = None  # the file this came from, for messages
    digest: str = ""  # sha256 of the file's bytes: the config hash carried by alarms
    remote: RemoteConfig = RemoteConfig()
