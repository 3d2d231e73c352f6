"""The operator tools end in one line naming the file, not a traceback (audit audml finding 11):
`agent.remote.client` and `tools.sign_model` on an invalid card, a missing key file, a closed broker port."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from agent.remote import client
from tools import sign_model

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture
def bad_card_model(tmp_path: Path) -> Path:
    """models/pump with a scale of 0 in its card, as a user's hand edit leaves it."""
    model = Path(shutil.copytree(MODELS / "pump", tmp_path / "pump"))
    card = json.loads((model / "card.json").read_text())
    card["normalisation"]["scale"][0] = 0.0
    (model / "card.json").write_text(json.dumps(card))
    return model


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return sign_model.keygen(tmp_path / "keys" / "ops")


def last_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def run_client(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        client.main(argv)
    return int(exc.value.code or 0)


def test_client_names_the_card_and_the_key_file(
    bad_card_model: Path, keys: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    priv, _ = keys
    base = ["sign", "models/install", "--root", "edge/lab/gw-1"]
    assert run_client([*base, "--key", str(priv), "--bundle", str(bad_card_model)]) == 2
    line = last_error_line(capsys)
    assert line.startswith(
        f"python -m agent.remote.client sign: --bundle {bad_card_model}/card.json: model pump:"
    )
    assert "normalisation.scale" in line

    missing = tmp_path / "keys" / "nope.key"
    assert run_client([*base, "--key", str(missing)]) == 2
    assert last_error_line(capsys).endswith(f"--key {missing}: No such file or directory")

    assert run_client([*base, "--key", str(priv), "--args", "[1]"]) == 2
    assert "--args must be a JSON object" in last_error_line(capsys)


def test_client_send_to_a_closed_port_is_one_line(
    keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    url = f"mqtt://127.0.0.1:{port}"
    argv = ["send", "status", "--root", "edge/lab/gw-1", "--key", str(keys[0]), "--url", url]
    assert run_client(argv) == 2
    assert f"--url {url}: cannot connect" in last_error_line(capsys)


def test_sign_model_names_the_card_and_the_key_file(
    bad_card_model: Path, keys: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    priv, pub = keys
    with pytest.raises(SystemExit) as exc:
        sign_model.main(["sign", str(bad_card_model), "--key", str(priv)])
    assert exc.value.code == 1
    line = last_error_line(capsys)
    assert f"sign: {bad_card_model}/card.json: model pump: card field 'normalisation.scale'" in line

    missing = tmp_path / "nope.key"
    with pytest.raises(SystemExit):
        sign_model.main(["sign", str(MODELS / "pump"), "--key", str(missing)])
    assert last_error_line(capsys).endswith(f"sign: {missing}: No such file or directory")

    with pytest.raises(SystemExit):
        sign_model.main(["verify", str(MODELS / "pump"), "--pub", str(pub)])  # another key
    assert "pump.fp32.onnx" in last_error_line(capsys)
