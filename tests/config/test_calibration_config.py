"""`calibration = { baseline_s, target_false_alarms_per_hour }` on a detector: good and bad files through
`edge-agent check-config`, each problem one line naming its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import main
from agent.config import load_config
from agent.config.schema import CalibrationConfig

BASE = """
[gateway]
id = "gw-1"
site = "ward-3"

[mqtt]
url = "mqtt://127.0.0.1:1883"

[outbox]
path = "outbox.sqlite"

[[devices]]
id = "wearable-1"
kind = "wearable"
transport = "simulator"

# Names its streams and channels in its HELLO, so the "pump" and "vibration" streams below may be wired.
[[devices]]
id = "bench-1"
kind = "equipment"
transport = "serial"
[devices.serial]
port = "/dev/ttyUSB0"

[[detectors]]
id = "hr-change"
type = "robust_z"
stream = "vitals"
channels = ["hr"]
params = { window_s = 60, hop_s = 2 }
@CALIBRATION@

[[alarms]]
condition = "hr_change"
detector = "hr-change"

[[detectors]]
@SECOND@
"""

GOOD = "calibration = { baseline_s = 3600, target_false_alarms_per_hour = 0.5 }"
LIMIT = 'id = "hr-high"\ntype = "limit"\nstream = "vitals"\nchannels = ["hr"]\nparams = { above = 120 }'


def text(calibration: str = GOOD, second: str = LIMIT) -> str:
    return BASE.replace("@CALIBRATION@", calibration).replace("@SECOND@", second)


def check(tmp_path: Path, content: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    path = tmp_path / "agent.toml"
    path.write_text(content)
    code = main(["check-config", str(path)])
    return code, [line for line in capsys.readouterr().err.splitlines() if line]


def test_a_calibration_table_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, errors = check(tmp_path, text(), capsys)
    assert (code, errors) == (0, [])
    config = load_config(tmp_path / "agent.toml")
    assert config.detectors[0].calibration == CalibrationConfig(3600.0, 0.5)
    assert config.detectors[1].calibration is None


BAD = [
    pytest.param(
        "calibration = { baseline_s = 0, target_false_alarms_per_hour = 0.5 }",
        "detectors[0].calibration.baseline_s: must be greater than 0, got 0",
        id="zero-baseline",
    ),
    pytest.param(
        "calibration = { baseline_s = 3600, target_false_alarms_per_hour = -1 }",
        "detectors[0].calibration.target_false_alarms_per_hour: must be greater than 0, got -1",
        id="negative-target",
    ),
    pytest.param(
        'calibration = { baseline_s = "1h", target_false_alarms_per_hour = 0.5 }',
        'detectors[0].calibration.baseline_s: expected a number, got "1h"',
        id="text-baseline",
    ),
    pytest.param(
        "calibration = { baseline_s = 3600 }",
        "detectors[0].calibration.target_false_alarms_per_hour: missing (expected a number)",
        id="missing-target",
    ),
    pytest.param(
        "calibration = { baseline_s = 3600, target_false_alarms_per_hour = 0.5, target = 1 }",
        "detectors[0].calibration.target: unknown key",
        id="unknown-key",
    ),
    pytest.param(
        "calibration = 3600",
        "detectors[0].calibration: expected a table, got 3600",
        id="not-a-table",
    ),
    pytest.param(
        "calibration = { baseline_s = 30, target_false_alarms_per_hour = 0.5 }",
        "detectors.hr-change.calibration.baseline_s: 30 s gives 15 score(s) at one per 2 s; calibration "
        "needs at least 20: use baseline_s >= 40",
        id="baseline-too-short-for-the-hop",
    ),
    pytest.param(
        "calibration = { baseline_s = 3600, target_false_alarms_per_hour = 1800 }",
        "detectors.hr-change.calibration.target_false_alarms_per_hour: 1800/h at one score per 2 s would "
        "alarm on every score; must be below 1800",
        id="target-every-hop",
    ),
]


@pytest.mark.parametrize(("calibration", "expected"), BAD)
def test_bad_calibration_is_refused_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], calibration: str, expected: str
) -> None:
    code, errors = check(tmp_path, text(calibration), capsys)
    assert code == 2
    assert [e.split(": ", 1)[1] for e in errors] == [expected], errors


@pytest.mark.parametrize(
    ("second", "kind", "reason"),
    [
        (LIMIT, "limit", "its limits are clinical settings, never learned"),
        (
            'id = "hr-high"\ntype = "spo2_desaturation"\nstream = "vitals"\nchannels = ["spo2"]',
            "spo2_desaturation",
            "a desaturation is a clinical definition",
        ),
        (
            'id = "hr-high"\ntype = "vibration"\nstream = "vibration"\nchannels = ["x"]\nrate_hz = 1000',
            "vibration",
            "its ISO 10816 zone boundaries are a standard's settings",
        ),
    ],
)
def test_detectors_with_nothing_to_calibrate_refuse_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], second: str, kind: str, reason: str
) -> None:
    code, errors = check(tmp_path, text(second=second + "\n" + GOOD), capsys)
    assert code == 2 and len(errors) == 1, errors
    where, problem = errors[0].split(": ", 1)[1].split(": ", 1)
    assert where == "detectors.hr-high.calibration"
    assert problem.startswith(f"nothing to calibrate for a {kind} detector: {reason}")
    assert problem.endswith("; remove this key")


PUMP_MODEL = Path(__file__).resolve().parents[2] / "models" / "pump"


@pytest.mark.parametrize("adapt_rows", [0, 200])
def test_an_autoencoder_calibrates_unless_it_adapts_per_stream(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], adapt_rows: int
) -> None:
    import json

    channels = json.loads((PUMP_MODEL / "card.json").read_text())["channels"]
    second = (
        f'id = "pump-ae"\ntype = "autoencoder"\nstream = "pump"\nchannels = {json.dumps(channels)}\n'
        f'params = {{ model = "{PUMP_MODEL}", adapt_rows = {adapt_rows} }}\n{GOOD}'
    )
    code, errors = check(tmp_path, text(second=second), capsys)
    if adapt_rows == 0:
        assert (code, errors) == (0, [])
    else:
        assert code == 2 and len(errors) == 1, errors
        assert errors[0].endswith(
            "detectors.pump-ae.calibration: nothing to calibrate for an autoencoder detector: per-stream "
            "adaptation (params.adapt_rows) already sets each stream's own threshold; remove this key"
        )
