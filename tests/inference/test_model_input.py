"""A model runs only on the input it was trained on (audit audml, findings 3 and 4), checked by the real
`edge-agent check-config` (the same build a start and a reload run) on the shipped models.

Before: ecg-beat (one R-aligned, resampled beat per window) was accepted on a raw 360 Hz ECG stream, where
every window of a normal record scored above its threshold, and a 1 Hz model on a 50 Hz stream."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.cli import main
from agent.errors import ModelError
from agent.inference.card import load_card, parse_card
from agent.inference.signing import sign_artifacts

MODELS = Path(__file__).resolve().parents[2] / "models"
PUMP_CHANNELS = json.loads((MODELS / "pump" / "card.json").read_text())["channels"]

CONFIG = """
[gateway]
id = "gw"
site = "lab"
state_dir = "state"

[mqtt]
url = "mqtt://127.0.0.1:1883"

[outbox]
path = "state/outbox.sqlite"

[[devices]]
id = "rec"
kind = "equipment"
transport = "replay"
[devices.replay]
path = "recordings"

[[detectors]]
id = "{id}"
type = "autoencoder"
stream = "{stream}"
channels = {channels}
rate_hz = {rate_hz}
params = {{ model = "{model}", public_key = "{key}"{extra} }}

[[alarms]]
condition = "anomaly"
detector = "{id}"
"""


def check_config(tmp_path: Path, capsys: pytest.CaptureFixture[str], **fields: object) -> tuple[int, str]:
    (tmp_path / "recordings").mkdir(exist_ok=True)
    values = {"key": MODELS / "edge-agent-models.pub", "extra": "", **fields}
    (tmp_path / "agent.toml").write_text(CONFIG.format(**values))
    code = main(["check-config", str(tmp_path / "agent.toml")])
    return code, capsys.readouterr().err


def ecg(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str = "") -> tuple[int, str]:
    return check_config(
        tmp_path,
        capsys,
        id="pvc",
        stream="ecg",
        channels='["MLII"]',
        rate_hz=360,
        model=MODELS / "ecg-beat",
        extra=extra,
    )


def test_the_beat_model_is_refused_on_a_raw_ecg_stream(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = ecg(tmp_path, capsys)
    assert code == 2
    assert "detectors.pvc.params.model: model ecg-beat scores one heart beat per window" in err
    assert "not 64 consecutive samples of stream 'ecg'" in err and 'params.input = "beats"' in err


def test_the_beat_model_runs_where_the_config_says_the_stream_carries_beats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ecg(tmp_path, capsys, ', input = "beats"') == (0, "")
    assert load_card(MODELS / "ecg-beat").input_kind == "beats"  # from its signed preprocessing


def test_a_stream_model_refuses_beats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = check_config(
        tmp_path,
        capsys,
        id="pump",
        stream="pump",
        channels=json.dumps(PUMP_CHANNELS),
        rate_hz=1,
        model=MODELS / "pump",
        extra=', input = "beats"',
    )
    assert code == 2 and "detectors.pump.params.input: model pump scores 10 consecutive samples" in err


def pump_with_rate(tmp_path: Path, rate_hz: float) -> tuple[Path, Path]:
    """models/pump with `input` in its card, signed by a key made here: (model folder, public key)."""
    folder = Path(shutil.copytree(MODELS / "pump", tmp_path / "pump-rated"))
    raw = json.loads((folder / "card.json").read_text())
    raw["input"] = {"kind": "stream", "rate_hz": rate_hz}
    (folder / "card.json").write_text(json.dumps(raw, indent=2))
    key = Ed25519PrivateKey.generate()
    sign_artifacts(folder, load_card(folder), key)
    public = tmp_path / "models.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return folder, public


@pytest.mark.parametrize(("rate_hz", "refused"), [(50, True), (1, False), (1.005, False), (0.5, True)])
def test_a_stream_model_whose_card_states_its_rate_runs_only_at_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rate_hz: float, refused: bool
) -> None:
    model, public = pump_with_rate(tmp_path, 1.0)
    code, err = check_config(
        tmp_path,
        capsys,
        id="pump",
        stream="pump",
        channels=json.dumps(PUMP_CHANNELS),
        rate_hz=rate_hz,
        model=model,
        key=public,
    )
    if refused:
        assert code == 2
        assert (
            f"detectors.pump.rate_hz: model pump was trained on samples at 1 Hz (its card's"
            f" input.rate_hz); this detector reads stream 'pump' at {rate_hz:g} Hz" in err
        )
    else:
        assert (code, err) == (0, "")


def test_input_is_checked_when_present_and_optional_for_older_cards() -> None:
    raw = json.loads((MODELS / "pump" / "card.json").read_text())
    old = parse_card(raw, "pump")
    assert (old.input_kind, old.rate_hz) == ("stream", None)  # the shipped card, signed before the field
    for bad, problem in (
        ({"kind": "rows", "rate_hz": 1}, "'input.kind' must be one of stream, beats"),
        ({"kind": "stream"}, "'input.rate_hz' is missing"),
        ({"kind": "stream", "rate_hz": 0}, "'input.rate_hz' must be a finite number > 0"),
        ("stream", "'input' must be an object"),
    ):
        with pytest.raises(ModelError, match=problem):
            parse_card(raw | {"input": bad}, "pump")
    for bad, problem in (
        ({"licence": 3}, "'licence' must be a string"),
        ({"limits": "none"}, "'limits' must be a list"),
        ({"limits": [1]}, "'limits' must be a list of strings"),
        ({"build": {"tool": "x"}}, "'build.command' is missing"),
    ):
        with pytest.raises(ModelError, match=problem):
            parse_card(raw | bad, "pump")
    documented = raw | {
        "licence": "weights Apache-2.0",
        "intended_use": "pumps",
        "limits": ["SKAB only"],
        "build": {"command": "python -m tools.train.skab", "tool": "tools.train.skab", "commit": ""},
    }
    assert parse_card(documented, "pump").raw["limits"] == ["SKAB only"]
