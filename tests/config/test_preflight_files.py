"""`check-config` (preflight) refuses every file a session start would refuse, naming the key and the
file, without creating anything: the privacy key (mode, length), a state_dir or outbox folder that
cannot be made, the TLS files loaded as the uplink loads them (real certificates, made here). The
uplink itself turns a bad TLS file into a ConfigError naming the key, never a bare ssl.SSLError."""

from __future__ import annotations

from pathlib import Path

import pytest
from uplink_probe import Pki, TlsMaterial, make_tls_material

from agent.cli import main
from agent.config import load_config
from agent.config.schema import OutboxConfig
from agent.errors import ConfigError
from agent.outbox import Outbox
from agent.uplink.mqtt import MqttUplink
from agent.uplink.topics import Topics

BASE = """
[gateway]
id = "gw-1"
site = "ward-3"
state_dir = "{state_dir}"

[mqtt]
url = "{url}"
{mqtt_extra}

[outbox]
path = "{outbox}"
{outbox_extra}

{privacy}

[[devices]]
id = "wearable-1"
kind = "wearable"
transport = "simulator"

# a rule: without one check-config warns (tests/ops/test_nothing_alarms.py)
[[detectors]]
id = "hr-high"
type = "limit"
stream = "vitals"
channels = ["hr"]
params = {{ above = 120 }}

[[alarms]]
condition = "tachycardia"
detector = "hr-high"
"""


def write_config(
    tmp_path: Path,
    *,
    state_dir: str = "state",
    url: str = "mqtt://127.0.0.1:1883",
    mqtt_extra: str = "",
    outbox: str = "state/outbox.sqlite",
    outbox_extra: str = "",
    privacy: str = "",
) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        BASE.format(
            state_dir=state_dir,
            url=url,
            mqtt_extra=mqtt_extra,
            outbox=outbox,
            outbox_extra=outbox_extra,
            privacy=privacy,
        )
    )
    return path


def check(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["check-config", str(config)])
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines()


def tls_config(tmp_path: Path, ca: Path, cert: Path | None = None, key: Path | None = None) -> Path:
    lines = [f'ca_file = "{ca}"']
    if cert is not None and key is not None:
        lines += [f'cert_file = "{cert}"', f'key_file = "{key}"']
    return write_config(tmp_path, url="mqtts://127.0.0.1:8883", mqtt_extra="[mqtt.tls]\n" + "\n".join(lines))


@pytest.fixture
def pki(tmp_path: Path) -> TlsMaterial:
    return make_tls_material(tmp_path / "pki")


def test_good_mutual_tls_files_pass_and_nothing_is_created(
    tmp_path: Path, pki: TlsMaterial, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tls_config(tmp_path, pki.ca, pki.client_cert, pki.client_key)
    code, lines = check(config, capsys)
    assert (code, lines) == (0, [])
    assert not (tmp_path / "state").exists()  # preflight only looks


@pytest.mark.parametrize("content", ["", "not a pem\n"])
def test_a_ca_file_that_holds_no_certificate_is_named(
    tmp_path: Path, pki: TlsMaterial, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    bad = tmp_path / "ca-bad.pem"
    bad.write_text(content)
    code, lines = check(tls_config(tmp_path, bad), capsys)
    assert code == 2
    assert lines == [f"{tmp_path / 'agent.toml'}: mqtt.tls.ca_file: {bad} holds no PEM certificate "
                     "(no certificate or crl found)"]  # fmt: skip


def test_an_empty_client_certificate_is_named(
    tmp_path: Path, pki: TlsMaterial, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.crt"
    empty.write_text("")
    code, lines = check(tls_config(tmp_path, pki.ca, empty, pki.client_key), capsys)
    assert code == 2
    (line,) = lines
    assert f": mqtt.tls.cert_file: {empty} holds no PEM certificate" in line


@pytest.mark.parametrize("content", ["", "garbage\n"])
def test_a_client_key_that_is_no_key_is_named(
    tmp_path: Path, pki: TlsMaterial, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    key = tmp_path / "bad.key"
    key.write_text(content)
    key.chmod(0o600)
    code, lines = check(tls_config(tmp_path, pki.ca, pki.client_cert, key), capsys)
    assert code == 2
    (line,) = lines
    assert f": mqtt.tls.key_file: {key} holds no usable PEM private key" in line


def test_a_key_of_another_certificate_is_named(
    tmp_path: Path, pki: TlsMaterial, capsys: pytest.CaptureFixture[str]
) -> None:
    other = Pki(tmp_path / "other").issue("gw2")  # a pair of its own: its key is not pki's client's
    code, lines = check(tls_config(tmp_path, pki.ca, pki.client_cert, other.key), capsys)
    assert code == 2
    assert lines == [
        f"{tmp_path / 'agent.toml'}: mqtt.tls.key_file: {other.key} is not the key of the certificate "
        f"in {pki.client_cert}"
    ]


def test_every_bad_tls_file_is_listed_not_only_the_first(
    tmp_path: Path, pki: TlsMaterial, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a pem\n")
    code, lines = check(tls_config(tmp_path, bad, bad, pki.client_key), capsys)
    assert code == 2
    assert [line.split(": ")[1] for line in lines] == ["mqtt.tls.cert_file", "mqtt.tls.ca_file"]


def test_the_uplink_refuses_a_bad_tls_file_with_a_config_error_naming_the_key(
    tmp_path: Path, pki: TlsMaterial
) -> None:
    bad = tmp_path / "ca-bad.pem"
    bad.write_text("not a pem\n")
    cfg = load_config(tls_config(tmp_path, bad))
    outbox = Outbox(OutboxConfig(tmp_path / "o.sqlite"))
    try:
        with pytest.raises(ConfigError) as caught:
            MqttUplink(cfg.mqtt, Topics("edge", "ward-3", "gw-1"), outbox, 1)
    finally:
        outbox.close()
    assert caught.value.path == "mqtt.tls.ca_file" and str(bad) in caught.value.problem


def test_a_privacy_key_readable_by_others_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "site.key"
    key.write_bytes(b"k" * 32)
    key.chmod(0o644)
    code, lines = check(write_config(tmp_path, privacy=f'[privacy]\nkey_file = "{key}"'), capsys)
    assert code == 2
    assert lines == [
        f"{tmp_path / 'agent.toml'}: privacy.key_file: {key} is readable by group or others (mode 644); "
        "chmod 600 it"
    ]


def test_a_privacy_key_too_short_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "site.key"
    key.write_bytes(b"secret")
    key.chmod(0o600)
    code, lines = check(write_config(tmp_path, privacy=f'[privacy]\nkey_file = "{key}"'), capsys)
    assert code == 2
    assert lines == [
        f"{tmp_path / 'agent.toml'}: privacy.key_file: {key} holds 6 bytes; a key needs at least 16"
        " (delete it for a new one to be made: pseudonyms then change)"
    ]


def test_the_default_privacy_key_in_the_state_dir_is_checked_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "state").mkdir()
    key = tmp_path / "state" / "pseudonym.key"
    key.write_bytes(b"k" * 32)
    key.chmod(0o640)
    code, lines = check(write_config(tmp_path), capsys)
    assert code == 2
    (line,) = lines
    assert f"privacy.key_file: {key} is readable by group or others (mode 640)" in line


def test_a_privacy_key_to_create_in_a_missing_folder_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "no-such-folder" / "site.key"
    code, lines = check(write_config(tmp_path, privacy=f'[privacy]\nkey_file = "{key}"'), capsys)
    assert code == 2
    (line,) = lines
    assert f"privacy.key_file: cannot create {key}: its folder {key.parent}: No such file" in line


def test_a_state_dir_that_cannot_be_created_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-file").write_text("")
    code, lines = check(write_config(tmp_path, state_dir="a-file/state", outbox="box/o.sqlite"), capsys)
    assert code == 2
    assert lines == [
        f"{tmp_path / 'agent.toml'}: gateway.state_dir: cannot create {tmp_path / 'a-file' / 'state'}: "
        "Not a directory"
    ]  # the same line as the start-up's (tests/ops/test_operator_errors.py)


def test_a_state_dir_too_deep_for_the_status_socket_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deep = tmp_path / ("d" * 120)
    code, lines = check(write_config(tmp_path, state_dir=str(deep), outbox="box/o.sqlite"), capsys)
    assert code == 2
    (line,) = lines
    assert f"gateway.state_dir: {deep} is too long a path for the status socket agent.sock" in line


def test_an_outbox_folder_that_cannot_be_created_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-file").write_text("")
    code, lines = check(write_config(tmp_path, outbox="a-file/box/outbox.sqlite"), capsys)
    assert code == 2
    folder = tmp_path / "a-file" / "box"
    assert lines == [f"{tmp_path / 'agent.toml'}: outbox.path: cannot create {folder}: Not a directory"]


def test_an_outbox_key_to_create_in_a_missing_folder_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The key is made before the outbox's folder: a key next to the outbox in a new folder fails.
    key = tmp_path / "box" / "outbox.key"
    config = write_config(tmp_path, outbox="box/o.sqlite", outbox_extra=f'encryption_key_file = "{key}"')
    code, lines = check(config, capsys)
    assert code == 2
    (line,) = lines
    assert f"outbox.encryption_key_file: cannot create {key}: its folder" in line


def test_key_files_to_create_in_the_state_dir_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "state" / "outbox.key"  # the state_dir is made before both keys
    config = write_config(tmp_path, outbox_extra=f'encryption_key_file = "{key}"')
    code, lines = check(config, capsys)
    assert (code, lines) == (0, [])
    assert not (tmp_path / "state").exists()


def test_an_encrypted_client_key_is_refused_without_asking_for_a_pass_phrase(
    tmp_path: Path, pki: TlsMaterial, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pki.client_key.read_bytes(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pass phrase"),
        )
    )
    encrypted.chmod(0o600)
    code, lines = check(tls_config(tmp_path, pki.ca, pki.client_cert, encrypted), capsys)
    assert code == 2
    (line,) = lines
    assert f": mqtt.tls.key_file: {encrypted} holds no usable PEM private key (unencrypted)" in line


def test_an_outbox_path_that_is_a_folder_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "box" / "outbox.sqlite").mkdir(parents=True)
    code, lines = check(write_config(tmp_path, outbox="box/outbox.sqlite"), capsys)
    assert code == 2
    assert lines == [
        f"{tmp_path / 'agent.toml'}: outbox.path: {tmp_path / 'box' / 'outbox.sqlite'} is not a file"
    ]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
@pytest.mark.parametrize("setting", ["mqtt.auth.password_file", "mqtt.tls.key_file"])
def test_a_broker_password_or_tls_key_others_can_read_is_refused_as_the_keys_are(
    tmp_path: Path, pki: TlsMaterial, capsys: pytest.CaptureFixture[str], setting: str, mode: int
) -> None:
    if setting == "mqtt.auth.password_file":
        secret = tmp_path / "mqtt.password"
        secret.write_text("pw\n")
        auth = f'[mqtt.auth]\nusername = "gw-1"\npassword_file = "{secret}"'
        config = write_config(tmp_path, mqtt_extra=auth)
    else:
        secret = pki.client_key
        config = tls_config(tmp_path, pki.ca, pki.client_cert, secret)
    secret.chmod(mode)
    code, lines = check(config, capsys)
    assert code == 2
    assert lines == [
        f"{config}: {setting}: {secret} is readable by group or others (mode {mode:o}); chmod 600 it"
    ]
    # In the words of the outbox key's refusal (the loader's, so that one comes alone).
    outbox_key = tmp_path / "outbox.key"
    outbox_key.write_bytes(b"k" * 32)
    outbox_key.chmod(mode)
    with_key = config.read_text().replace("[outbox]\n", f'[outbox]\nencryption_key_file = "{outbox_key}"\n')
    config.write_text(with_key)
    loose = f"is readable by group or others (mode {mode:o}); chmod 600 it"
    assert check(config, capsys) == (2, [f"{config}: outbox.encryption_key_file: {outbox_key} {loose}"])
    secret.chmod(0o600)
    outbox_key.chmod(0o600)
    assert check(config, capsys) == (0, [])
