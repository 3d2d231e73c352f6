"""Detector streams and channels against what the configured devices produce (agent.pipeline.wiring):
the audit's typos found before start with their key and a "did you mean", and at run time a channel that
does not arrive logged once per (detector, stream, channel)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.config import AgentConfig, load_config, parse_config
from agent.logs import redact_identifiers
from agent.pipeline import Pipeline
from agent.pipeline.wiring import beat_channels_read, check_wiring, did_you_mean, produces
from agent.readings import Reading

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "agent" / "defaults" / "demo.toml"
PUMP_ROOM = ROOT / "examples" / "pump-room.toml"
CARDIAC = ROOT / "examples" / "cardiac-monitoring.toml"


def edited(tmp_path: Path, source: Path, old: str, new: str) -> AgentConfig:
    text = source.read_text()
    assert old in text
    path = tmp_path / "agent.toml"
    path.write_text(text.replace(old, new))
    return load_config(path)


# The audit's finding 3: each of these passed check-config and then never raised an alarm.
AUDIT = [
    pytest.param(DEMO, 'channels = ["hr"]', 'channels = ["hrr"]', "channels", "hrr", "hr", id="hrr"),
    pytest.param(DEMO, 'channels = ["spo2"]', 'channels = ["SpO2"]', "channels", "SpO2", "spo2", id="SpO2"),
    pytest.param(
        PUMP_ROOM, 'stream = "machine"', 'stream = "machin"', "stream", "machin", "machine", id="machin"
    ),
    pytest.param(
        PUMP_ROOM,
        'channels = ["vibration_rms"]',
        'channels = ["vibration_rmss"]',
        "channels",
        "vibration_rmss",
        "vibration_rms",
        id="vibration_rmss",
    ),
]


@pytest.mark.parametrize(("source", "old", "new", "key", "typo", "meant"), AUDIT)
def test_the_audits_typos_are_found_with_the_key_and_a_did_you_mean(
    tmp_path: Path, source: Path, old: str, new: str, key: str, typo: str, meant: str
) -> None:
    config = edited(tmp_path, source, old, new)
    problems = check_wiring(config)
    assert problems, "a detector bound to nothing must not pass"
    bound = {d.id for d in config.detectors if typo in (d.stream, *d.channels)}
    assert {p.path for p in problems} == {f"detectors.{d}.{key}" for d in bound}
    for problem in problems:
        assert f'"{typo}"' in problem.problem
        assert f'(did you mean "{meant}"?)' in problem.problem


def test_a_wrong_stream_names_what_the_devices_produce(tmp_path: Path) -> None:
    config = edited(tmp_path, DEMO, 'stream = "machine"', 'stream = "pump"')
    assert [str(p) for p in check_wiring(config)] == [
        f'detectors.{d}.stream: no configured device produces a stream "pump" (they produce: ecg, ecg_rr,'
        " machine, rr, vitals)"
        for d in (d.id for d in load_config(DEMO).detectors if d.stream == "machine")
    ]


@pytest.mark.parametrize("source", [DEMO, PUMP_ROOM], ids=["demo", "pump-room"])
def test_the_shipped_configs_are_wired(source: Path) -> None:
    assert check_wiring(load_config(source)) == []


def test_the_ward_example_is_wired(tmp_path: Path) -> None:
    text = (ROOT / "examples" / "ward-wearables.toml").read_text()
    for name in ("ca.pem", "gw-ward3-01.crt", "gw-ward3-01.key", "mqtt.password"):
        (tmp_path / name).write_text("x")
        text = text.replace(f"/etc/edge-agent/{name}", str(tmp_path / name))
    (tmp_path / "agent.toml").write_text(text)
    assert check_wiring(load_config(tmp_path / "agent.toml")) == []


BASE: dict[str, Any] = {
    "gateway": {"id": "gw", "site": "s"},
    "mqtt": {"url": "mqtt://127.0.0.1:1883"},
    "outbox": {"path": "outbox.sqlite"},
}


def config(tmp_path: Path, devices: list[dict[str, Any]], stream: str, channels: list[str]) -> AgentConfig:
    table = BASE | {
        "devices": devices,
        "detectors": [
            {"id": "d", "type": "limit", "stream": stream, "channels": channels, "params": {"above": 1}}
        ],
    }
    return parse_config(table, base_dir=tmp_path)


def wearable(**simulator: Any) -> dict[str, Any]:
    return {"id": "w", "kind": "wearable", "transport": "simulator", "simulator": simulator}


def line_device(kind: str, *channels: str) -> dict[str, Any]:
    serial = {"port": "/dev/ttyX", "protocol": "csv", "channels": list(channels)}
    return {"id": "s", "kind": kind, "transport": "serial", "serial": serial}


def ble(*profiles: str) -> dict[str, Any]:
    table: dict[str, Any] = {"name": "strap"} | ({"profiles": list(profiles)} if profiles else {})
    return {"id": "b", "kind": "wearable", "transport": "ble", "ble": table}


MODBUS = {
    "id": "m",
    "kind": "equipment",
    "transport": "modbus",
    "modbus": {"host": "10.0.0.5", "registers": [{"name": "vibration_rms", "address": 0}]},
}


@pytest.mark.parametrize(
    ("device", "stream", "channels", "wired"),
    [
        (wearable(), "rr", ["rr"], True),
        (wearable(), "ecg", ["ecg"], False),  # only with simulator.ecg = true
        (wearable(ecg=True), "ecg", ["ecg"], True),
        (wearable(ecg=True), "ecg", ["MLII"], False),  # the MIT-BIH lead name of the shipped ECG model
        (line_device("equipment", "flow", "temp"), "machine", ["temp"], True),
        (line_device("equipment", "flow", "temp"), "machine", ["pressure"], False),
        (line_device("wearable", "hr"), "machine", ["hr"], False),  # a wearable's lines are "vitals"
        (MODBUS, "machine", ["vibration_rms"], True),
        (ble("heart_rate", "plx", "blood_pressure", "polar_pmd"), "vitals", ["hr", "spo2", "pr"], True),
        (ble("heart_rate", "plx", "blood_pressure", "polar_pmd"), "ecg", ["ecg"], True),
        (ble(), "vitals", ["spo2"], False),  # heart_rate alone
        (ble(), "rr", ["rr"], True),
        (ble("blood_pressure"), "bp", ["systolic", "map"], True),
        (ble("blood_pressure"), "vitals", ["hr"], False),
    ],
)
def test_each_transport_says_what_it_produces(
    tmp_path: Path, device: dict[str, Any], stream: str, channels: list[str], wired: bool
) -> None:
    assert (check_wiring(config(tmp_path, [device], stream, channels)) == []) == wired


def test_a_device_that_names_its_channels_at_run_time_leaves_everything_unchecked(tmp_path: Path) -> None:
    """The frame protocol's HELLO (and a replay's recording) may bring any stream and channel."""
    frames = {"id": "f", "kind": "wearable", "transport": "serial", "serial": {"port": "/dev/ttyX"}}
    assert produces(parse_config(BASE | {"devices": [frames]}, base_dir=tmp_path).devices[0]).open
    assert check_wiring(config(tmp_path, [wearable(), frames], "vitalz", ["hrr"])) == []
    recording = tmp_path / "readings-000001.jsonl"
    recording.write_text("")
    replay = {"id": "r", "kind": "wearable", "transport": "replay", "replay": {"path": str(recording)}}
    assert check_wiring(config(tmp_path, [replay], "ecg", ["MLII"])) == []


def test_a_channel_one_device_of_the_stream_produces_is_enough(tmp_path: Path) -> None:
    assert check_wiring(config(tmp_path, [ble("heart_rate"), wearable()], "vitals", ["spo2"])) == []


def test_did_you_mean_ignores_case_and_stays_quiet_when_nothing_is_close() -> None:
    assert did_you_mean("SpO2", ["hr", "spo2"]) == ' (did you mean "spo2"?)'
    assert did_you_mean("pressure", ["hr", "spo2"]) == ""


def pseudonym(device: str) -> str:
    return f"p-{device}"


def vitals(device: str, channels: tuple[str, ...], t: float) -> Reading:
    return Reading(f"{device}/vitals", channels, np.full((1, len(channels)), 80.0), t, t)


def test_a_channel_that_does_not_arrive_is_logged_once_per_detector_and_channel(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    table = BASE | {
        "devices": [wearable()],
        "detectors": [
            {
                "id": "hr-high",
                "type": "limit",
                "stream": "vitals",
                "channels": ["hrr"],
                "params": {"above": 120},
            },
            {
                "id": "both",
                "type": "robust_z",
                "stream": "vitals",
                "channels": ["hrr", "spo2"],
                "params": {"window_s": 10, "hop_s": 1},
            },
        ],
    }
    pipeline = Pipeline(parse_config(table, base_dir=tmp_path), pseudonym)
    assert pipeline.missing_channels() == {}
    # The daemon names devices by pseudonyms (conftest undoes this)
    redact_identifiers({f"bed-{k}": f"d-bedpseudo{k}" for k in range(60)})
    caplog.set_level(logging.WARNING, logger="agent.pipeline")
    for second in range(30):  # two devices, two channel layouts, readings one by one and in batches
        pipeline.ingest([vitals("bed-7", ("hr", "spo2", "skin_temp"), 1e6 + second)])
        pipeline.ingest([vitals(f"bed-{k}", ("hr", "spo2"), 1e6 + second) for k in range(60)])
    # No device known before start produces "hrr": a wiring error, told at ERROR by agent.pipeline.blind
    # (the technical alarm's tracker) instead of the "not had it yet" WARNING.
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings
    assert all('channel "hrr" of stream "vitals"' in w for w in warnings)
    assert {w.split()[1] for w in warnings} == {"hr-high", "both"}
    assert "detectors.hr-high.channels" in warnings[0] + warnings[1]
    assert not any("bed-" in w or "80" in w for w in warnings)  # no device, no value
    assert pipeline.missing_channels() == {"both": ["hrr"], "hr-high": ["hrr"]}


def test_skab_evaluation_config_is_not_a_configuration_to_run() -> None:
    """tools/evaluate feeds SKAB's pump channels itself and never opens the simulator device, nor runs
    the preflight: the file would watch nothing under `edge-agent run`, which refuses it for that."""
    problems = check_wiring(load_config(ROOT / "tools" / "evaluate" / "configs" / "skab.toml"))
    assert {p.path for p in problems} == {"detectors.z.stream", "detectors.ewma.stream"}


def test_check_config_refuses_a_typoed_channel_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import main

    text = DEMO.read_text().replace('channels = ["hr"]', 'channels = ["hrr"]')
    (tmp_path / "agent.toml").write_text(text)
    assert main(["check-config", str(tmp_path / "agent.toml")]) == 2
    err = capsys.readouterr().err
    assert 'detectors.hr-high.channels: no configured device produces a channel "hrr"' in err
    assert '(did you mean "hr"?)' in err


def test_beats_found_in_an_ecg_make_an_rr_stream(tmp_path: Path) -> None:
    # a csv ECG patch has no rr stream of its own: [devices.beats] gives it one
    patch = line_device("wearable", "ecg") | {"beats": {"ecg_stream": "vitals"}}
    assert check_wiring(config(tmp_path, [patch], "rr", ["rr"])) == []
    without = line_device("wearable", "ecg")
    assert [p.path for p in check_wiring(config(tmp_path, [without], "rr", ["rr"]))] == ["detectors.d.stream"]


def test_beats_in_a_stream_the_device_does_not_produce_are_refused(tmp_path: Path) -> None:
    device = wearable() | {"beats": {}}  # the simulator streams ECG only with ecg = true
    problems = check_wiring(config(tmp_path, [device], "rr", ["rr"]))
    assert [(p.path, p.problem) for p in problems] == [
        (
            "devices[0].beats.ecg_stream",
            'the device produces no stream "ecg" to find beats in (it produces: rr, vitals)',
        )
    ]
    assert check_wiring(config(tmp_path, [wearable(ecg=True) | {"beats": {}}], "rr", ["rr"])) == []


def test_af_s_p_wave_channel_absent_by_design_is_no_wiring_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """p_wave comes only with normal beats after intervals of 0.65 s or more (never in a fast rhythm): its
    absence is not a channel that "never arrived" (a review saw the warning at every start), while a
    missing rr still is."""
    table = BASE | {
        "devices": [wearable()],
        "detectors": [
            {"id": "af", "type": "af", "stream": "rr", "channels": ["rr", "p_wave"], "rate_hz": 1.0},
            {"id": "rr-low", "type": "limit", "stream": "rr", "channels": ["rr"], "params": {"below": 0.3}},
        ],
    }
    pipeline = Pipeline(parse_config(table, base_dir=tmp_path), pseudonym)
    caplog.set_level(logging.WARNING, logger="agent.pipeline")  # blind: at ERROR
    for beat in range(20):
        pipeline.ingest([Reading("bed-7/rr", ("hr",), np.full((1, 1), 120.0), 1e6 + beat, 1e6 + beat)])
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert pipeline.missing_channels() == {"af": ["rr"], "rr-low": ["rr"]}
    assert len(warnings) == 2 and not any("p_wave" in w for w in warnings), warnings


def test_ventricular_run_s_qrs_width_absent_by_design_is_no_wiring_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """qrs_width comes only for the 32 beats after the shape templates start again (a lead-off, a long
    hole): without a break it never arrives, and that is no wiring problem; the other channels still warn."""
    # Failed before ventricular_run declared it sparse (and before it took a fourth channel).
    channels = ["rr", "qrs_shape", "qrs_core", "qrs_width"]
    table = BASE | {
        "devices": [wearable()],
        "detectors": [
            {"id": "vt", "type": "ventricular_run", "stream": "rr", "channels": channels, "rate_hz": 1.0}
        ],
    }
    pipeline = Pipeline(parse_config(table, base_dir=tmp_path), pseudonym)
    caplog.set_level(logging.WARNING, logger="agent.pipeline")  # blind: at ERROR
    for beat in range(20):
        pipeline.ingest([Reading("bed-7/rr", ("rr",), np.full((1, 1), 0.8), 1e6 + beat, 1e6 + beat)])
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert pipeline.missing_channels() == {"vt": ["qrs_core", "qrs_shape"]}
    assert len(warnings) == 2 and not any("qrs_width" in w for w in warnings), warnings


def beats_config(tmp_path: Path, *detectors: tuple[str, str, list[str]]) -> AgentConfig:
    """An ECG wearable whose beats go to "ecg_rr", and detectors (type, stream, channels)."""
    table = BASE | {
        "devices": [wearable(ecg=True) | {"beats": {"rr_stream": "ecg_rr"}}],
        "detectors": [
            {"id": f"d{i}", "type": kind, "stream": stream, "channels": channels, "rate_hz": 1.0}
            | ({"params": {"above": 150}} if kind == "limit" else {})
            for i, (kind, stream, channels) in enumerate(detectors)
        ],
    }
    return parse_config(table, base_dir=tmp_path)


def test_the_beats_stage_is_asked_for_the_channels_its_detectors_read(tmp_path: Path) -> None:
    # Failed before beat_channels_read (only p_wave_read: qrs_shape and qrs_core were computed always).
    af, hr_high = ("af", "ecg_rr", ["rr"]), ("limit", "ecg_rr", ["hr"])
    assert beat_channels_read(beats_config(tmp_path, af, hr_high), "ecg_rr") == {"rr", "hr"}
    pvc = ("pvc", "ecg_rr", ["rr", "qrs_shape"])
    assert beat_channels_read(beats_config(tmp_path, af, pvc), "ecg_rr") == {"rr", "qrs_shape"}
    vt = ("ventricular_run", "ecg_rr", ["rr", "qrs_shape", "qrs_core"])
    assert beat_channels_read(beats_config(tmp_path, vt), "ecg_rr") == {"rr", "qrs_shape", "qrs_core"}
    veto = ("af", "ecg_rr", ["rr", "p_wave"])
    assert beat_channels_read(beats_config(tmp_path, veto, hr_high), "ecg_rr") == {"rr", "hr", "p_wave"}
    # Detectors of another stream name are not this stage's; the stage is asked only for its channels.
    other = beats_config(tmp_path, ("af", "rr", ["rr"]), ("limit", "vitals", ["hr"]))
    assert beat_channels_read(other, "ecg_rr") == frozenset()
    # The shipped configs: the demo's af alone reads rr; the cardiac example reads all but p_wave.
    assert beat_channels_read(load_config(DEMO), "ecg_rr") == {"rr"}
    example = {"rr", "hr", "qrs_shape", "qrs_core", "qrs_width"}
    assert beat_channels_read(load_config(CARDIAC), "ecg_rr") == example
    af_line = 'id = "af"\ntype = "af"\nstream = "ecg_rr"\nchannels = ["rr"]'
    with_veto = edited(tmp_path, CARDIAC, af_line, af_line.replace('["rr"]', '["rr", "p_wave"]'))
    assert beat_channels_read(with_veto, "ecg_rr") == example | {"p_wave"}


def test_a_known_device_s_own_keys_are_checked_beside_a_device_that_names_its_channels_at_run_time(
    tmp_path: Path,
) -> None:
    """A HELLO device leaves the detectors' streams and channels to the run time (channel_missing), but
    a CSV device's `running_when.channel` beside it is checked as without it (it was skipped: the check
    returned at the first run-time device)."""
    frames = {"id": "f", "kind": "equipment", "transport": "serial", "serial": {"port": "/dev/ttyY"}}
    pump = line_device("equipment", "flow", "current") | {"running_when": {"channel": "curent", "above": 1}}
    [problem] = check_wiring(config(tmp_path, [frames, pump], "machine", ["flow"]))
    assert problem.path == "devices[1].running_when.channel"
    assert 'did you mean "current"' in str(problem)


def test_a_device_that_names_its_streams_at_run_time_keeps_its_own_beats_and_gate_unchecked(
    tmp_path: Path,
) -> None:
    """An ECG patch on the frame protocol says in its HELLO that it sends stream "ecg": its
    `[devices.beats]` and `running_when` cannot be checked before start (once they were, and the
    cardiac set-up on a serial patch was refused: "the device produces no stream "ecg" ...")."""
    patch = {
        "id": "patch",
        "kind": "wearable",
        "transport": "serial",
        "serial": {"port": "/dev/ttyZ"},
        "beats": {"rr_stream": "ecg_rr"},
        "running_when": {"channel": "ecg", "above": 0.1},
    }
    assert check_wiring(config(tmp_path, [patch], "ecg_rr", ["rr"])) == []
