"""`edge-agent check-config` refuses bad files with one line per problem naming the key, exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from uplink_probe import make_tls_material

from agent.cli import main
from agent.config import load_config

GOOD = """
[gateway]
id = "gw-1"
site = "ward-3"
heartbeat_interval_s = 30
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:1883"

[outbox]
path = "state/outbox.sqlite"

[[devices]]
id = "wearable-1"
kind = "wearable"
transport = "simulator"
[devices.simulator]
seed = 1
episodes = [{ condition = "tachycardia", start_s = 60, duration_s = 120 }]

[[devices]]
id = "pump-1"
kind = "equipment"
transport = "simulator"

[[detectors]]
id = "hr-high"
type = "limit"
stream = "vitals"
channels = ["hr"]
params = { above = 120 }

[[alarms]]
condition = "tachycardia"
detector = "hr-high"
priority = "medium"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["check-config", str(write(tmp_path, text))])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line]


def test_good_config_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check-config", str(write(tmp_path, GOOD))])
    out = capsys.readouterr().out
    assert code == 0
    assert "ok" in out and "2 device(s)" in out
    config = load_config(tmp_path / "agent.toml")
    assert config.mqtt.host == "127.0.0.1" and config.mqtt.port == 1883 and config.mqtt.tls is None
    assert (
        config.devices[0].simulator is not None and config.devices[0].simulator.episodes[0].duration_s == 120
    )
    assert config.gateway.state_dir == (tmp_path / "state").resolve()
    assert len(config.digest) == 64


BAD_CASES = [
    pytest.param(
        GOOD.replace(
            'transport = "simulator"\n\n[[detectors]]',
            'transport = "serial"\n[devices.serial]\nport = "/dev/ttyUSB0"\n'
            'baudrate = "fast"\n\n[[detectors]]',
        ),
        'devices[1].serial.baudrate: expected an integer, got "fast"',
        id="wrong-type",
    ),
    pytest.param(
        GOOD.replace("heartbeat_interval_s = 30", "heartbeat_interval_s = 30\nheartbeat_s = 5"),
        "gateway.heartbeat_s: unknown key (did you mean 'heartbeat_interval_s'?)",
        id="unknown-key",
    ),
    pytest.param(
        GOOD.replace('[mqtt]\nurl = "mqtt://127.0.0.1:1883"\n', ""),
        "mqtt: missing (expected a table)",
        id="missing-broker",
    ),
    pytest.param(
        GOOD.replace("mqtt://127.0.0.1:1883", "http://broker:80"),
        'mqtt.url: expected mqtt://host:port or mqtts://host:port, got "http://broker:80"',
        id="bad-url-scheme",
    ),
    pytest.param(
        GOOD.replace("mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:99999"),
        'mqtt.url: bad port in "mqtt://127.0.0.1:99999"',
        id="bad-url-port",
    ),
    pytest.param(  # the password must not reach the journal through the error line
        GOOD.replace("mqtt://127.0.0.1:1883", "mqtt://gw:s3cret@127.0.0.1:1883"),
        'mqtt.url: credentials do not go in the URL: put them in [mqtt.auth] (got "mqtt://***@127.0.0.1:1883")',
        id="credentials-in-url",
    ),
    pytest.param(
        GOOD.replace("mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:1883/edge"),
        'mqtt.url: expected only scheme, host and port, without a path or query, got "mqtt://127.0.0.1:1883/edge"',
        id="path-in-url",
    ),
    pytest.param(  # a typed double dot: the connection would raise UnicodeError (idna), not retry
        GOOD.replace('"mqtt://127.0.0.1:1883"', '"mqtt://broker..hospital.example:1883"\ninsecure = true'),
        "mqtt.url: the host 'broker..hospital.example' is not a valid host name: a label (the text "
        "between dots) is empty or longer than 63 characters",
        id="empty-host-label",
    ),
    pytest.param(
        GOOD.replace("mqtt://127.0.0.1:1883", f"mqtts://{'b' * 64}.hospital.example:8883"),
        f"mqtt.url: the host '{'b' * 64}.hospital.example' is not a valid host name: a label",
        id="host-label-over-63",
    ),
    pytest.param(
        GOOD.replace('"mqtt://127.0.0.1:1883"', '"mqtt://127.0.0.1:1883"\nprotocol = "3"'),
        'mqtt.protocol: expected one of 5, 3.1.1, got "3"',
        id="bad-protocol",
    ),
    pytest.param(  # 3.1.1 hides refusals: only for a broker on the gateway itself (the demo's amqtt)
        GOOD.replace('"mqtt://127.0.0.1:1883"', '"mqtts://broker.example.org:8883"\nprotocol = "3.1.1"'),
        'mqtt.protocol: "3.1.1" is only for a broker on this gateway',
        id="mqtt-311-to-a-remote-broker",
    ),
    pytest.param(
        GOOD.replace("params = { above = 120 }", "params = { abovee = 120 }"),
        "detectors.hr-high.params.abovee: unknown parameter for a limit detector",
        id="misspelt-limit",
    ),
    pytest.param(
        GOOD.replace("heartbeat_interval_s = 30", "heartbeat_interval_s = -5"),
        "gateway.heartbeat_interval_s: must be greater than 0, got -5",
        id="negative-rate",
    ),
    pytest.param(
        GOOD.replace("seed = 1", "seed = 1\nspeed = -2.0"),
        "devices[0].simulator.speed: must be greater than 0, got -2.0",
        id="negative-speed",
    ),
    pytest.param(  # a device id is never quoted: see test_identifiers_are_never_quoted
        GOOD.replace('id = "pump-1"', 'id = "wearable-1"'),
        "devices[1].id: duplicate id (also devices[0])",
        id="duplicate-device",
    ),
    pytest.param(
        GOOD.replace(
            '[mqtt]\nurl = "mqtt://127.0.0.1:1883"',
            '[mqtt]\nurl = "mqtts://broker.example.org:8883"\n[mqtt.tls]\nca_file = "missing-ca.pem"',
        ),
        "mqtt.tls.ca_file: file not found: ",
        id="unreadable-tls-file",
    ),
    pytest.param(
        GOOD.replace("mqtt://127.0.0.1:1883", "mqtt://broker.example.org:1883"),
        "mqtt.url: plain mqtt:// to non-loopback host 'broker.example.org' would send data unencrypted",
        id="plaintext-remote",
    ),
    pytest.param(
        GOOD.replace('detector = "hr-high"', 'detector = "hr-hi"'),
        'alarms[0].detector: no detector with id "hr-hi" (known: hr-high)',
        id="dangling-detector",
    ),
    pytest.param(
        GOOD.replace('condition = "tachycardia", start_s', 'condition = "bearing_wear", start_s'),
        "devices[0].simulator.episodes[0].condition: unknown for kind 'wearable': \"bearing_wear\"",
        id="episode-for-wrong-kind",
    ),
    pytest.param(
        GOOD.replace('kind = "equipment"', 'kind = "toaster"'),
        'devices[1].kind: expected one of wearable, equipment, got "toaster"',
        id="bad-choice",
    ),
    pytest.param(
        GOOD.replace("params = { above = 120 }", 'params = { above = "high" }'),
        "detectors.hr-high.params.above",
        id="bad-detector-param",
    ),
    pytest.param(
        GOOD.replace('id = "gw-1"', 'id = "gw/1"'),
        "gateway.id: must not contain spaces, '/', '+' or '#', got \"gw/1\"",
        id="topic-unsafe-id",
    ),
    pytest.param("[gateway\nid=1", "not valid TOML", id="not-toml"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_CASES)
def test_bad_config_is_refused_with_one_line_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    code, lines = check(tmp_path, text, capsys)
    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith(str(tmp_path / "agent.toml") + ": ")
    assert expected in lines[0]
    assert "s3cret" not in lines[0]


# Values that may identify a patient or a device: a problem with one names the key and the kind of value,
# never the value (a refused reload's problems reach the log and, for a remote reload, the broker).
PRIVATE_CASES = [
    ('id = "pump-1"', 'id = "wearable-1"', "devices[1].id: duplicate id (also devices[0])"),
    ('id = "pump-1"', 'id = "MRN 0099999"', "devices[1].id: must not contain spaces, '/', '+' or '#'"),
    (
        'transport = "simulator"\n\n[[detectors]]',
        'transport = "simulator"\npatient = 120099999\n\n[[detectors]]',
        "devices[1].patient: expected a string, got an integer",
    ),
    ('id = "pump-1"', "id = 120099999", "devices[1].id: expected a string, got an integer"),
    (
        "[[detectors]]",
        '[remote]\nallow_unsigned = true\nsnippet_devices = ["wearable-1", "MRN-0099999"]\n\n[[detectors]]',
        "remote.snippet_devices[1]: no device with this id",
    ),
    (
        'id = "pump-1"\nkind = "equipment"\ntransport = "simulator"',
        'id = "pump-1"\nkind = "equipment"\ntransport = "serial"\n[devices.serial]\nport = 120099999',
        "devices[1].serial.port: expected a string, got an integer",
    ),
]


@pytest.mark.parametrize(("old", "new", "expected"), PRIVATE_CASES)
def test_identifiers_are_never_quoted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, expected: str
) -> None:
    assert GOOD.count(old) == 1
    code, lines = check(tmp_path, GOOD.replace(old, new), capsys)
    assert code == 2
    assert [line.removeprefix(f"{tmp_path / 'agent.toml'}: ") for line in lines] == [expected]
    assert not any(word in line for line in lines for word in ("MRN", "120099999", "wearable-1"))


def test_every_problem_is_listed_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (
        GOOD.replace("heartbeat_interval_s = 30", 'heartbeat_interval_s = "often"')
        .replace('kind = "equipment"', 'kind = "toaster"')
        .replace('priority = "medium"', 'priority = "urgent"')
    )
    code, lines = check(tmp_path, text, capsys)
    assert code == 2
    assert len(lines) == 3
    assert any("gateway.heartbeat_interval_s" in line for line in lines)
    assert any("devices[1].kind" in line for line in lines)
    assert any("alarms[0].priority" in line for line in lines)


def test_unreadable_tls_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret = tmp_path / "client.key"
    secret.write_text("key")
    secret.chmod(0)
    text = GOOD.replace(
        '[mqtt]\nurl = "mqtt://127.0.0.1:1883"',
        '[mqtt]\nurl = "mqtts://127.0.0.1:8883"\n[mqtt.tls]\n'
        'cert_file = "client.key"\nkey_file = "client.key"',
    )
    import os

    if os.geteuid() == 0:
        # root reads any file: an unreadable path is then a folder standing where the file should be
        secret.chmod(0o600)
        text = text.replace('"client.key"', f'"{tmp_path}"')
    code, lines = check(tmp_path, text, capsys)
    assert code == 2
    assert lines and all("mqtt.tls." in line for line in lines)


def test_run_refuses_bad_config_before_starting_anything(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:notaport"))
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f'{path}: mqtt.url: bad port in "mqtt://127.0.0.1:notaport"'
    ]
    assert not (tmp_path / "state").exists()  # nothing was started or created


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check-config", str(tmp_path / "nope.toml")])
    assert code == 2
    assert "cannot read config file" in capsys.readouterr().err


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_pump_room_example_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLES / "pump-room.toml")]) == 0


def test_ward_example_is_valid_once_its_secret_files_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (EXAMPLES / "ward-wearables.toml").read_text()
    tls = make_tls_material(tmp_path / "pki")  # check-config loads the TLS files as the uplink does
    (tmp_path / "mqtt.password").write_text("x")
    (tmp_path / "mqtt.password").chmod(0o600)  # a secret others can read is refused
    for name, path in (
        ("ca.pem", tls.ca),
        ("gw-ward3-01.crt", tls.client_cert),
        ("gw-ward3-01.key", tls.client_key),
        ("mqtt.password", tmp_path / "mqtt.password"),
    ):
        text = text.replace(f"/etc/edge-agent/{name}", str(path))
    text = text.replace("/var/lib/edge-agent", str(tmp_path / "state"))
    assert main(["check-config", str(write(tmp_path, text))]) == 0, capsys.readouterr().err
