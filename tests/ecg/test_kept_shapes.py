"""A device's beat-shape templates handed to the next stage (agent.ecg.kept_shapes): a reload's new
session, a restart through `pipeline.json`; and every refusal (a long break, another rate, other
channels, another config, an old or damaged save), which starts them afresh as before.

40 sinus beats (75 bpm) through one stage, a break, then 12 wide beats at 150 bpm through the next: a
VT whose first beats a fresh stage learns as the "normal" beat (its alarm never came).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable
from typing import Any

import pytest

from agent.config.schema import BeatsConfig, DeviceConfig, SimulatorConfig
from agent.detectors.ventricular_run import DEFAULT_MIN_QRS_CORE
from agent.ecg import kept_shapes
from agent.ecg.kept_shapes import KEEP_SHAPES_S, Handed, KeptShapes
from agent.ecg.rr_from_ecg import RrFromEcg
from agent.inference.beats import MIN_TEMPLATE_BEATS
from agent.privacy import Pseudonymizer
from agent.readings import Reading
from tests.ecg.test_beat_shape import FRAME, SHAPES, SYNTH_FS, _KnownPeaks, synthetic_ecg

SINUS_S = [0.5 + 0.8 * i for i in range(40)]
VT_S = [0.5 + 0.4 * i for i in range(12)]
Handover = Callable[[RrFromEcg, float], KeptShapes | None]


def _feed(stage: RrFromEcg, kinds: str, peaks_s: list[float], t0: float, fs: float) -> list[dict[str, float]]:
    ecg = synthetic_ecg(peaks_s, kinds)
    got = []
    for start in range(0, len(ecg), FRAME):
        t = t0 + start / fs
        block = Reading("strap/ecg", ("ecg",), ecg[start : start + FRAME, None], t, t, 1 / fs)
        got += [
            dict(zip(r.channels, r.values[0], strict=True))
            for r in stage.take(block)
            if r.stream == "strap/rr"
        ]
    return got


def vt_after_a_new_stage(
    break_s: float, handover: Handover, *, fs_after: float = SYNTH_FS, channels: tuple[str, ...] = SHAPES
) -> list[dict[str, float]]:
    """The RR readings of the VT, given by a second stage built after `break_s` with what `handover`
    gives it of the first (called with the first stage and the second's start time)."""
    first = RrFromEcg(
        "strap",
        BeatsConfig(),
        make_finder=lambda _: _KnownPeaks([round(p * SYNTH_FS) for p in SINUS_S]),
        channels=SHAPES,
    )
    _feed(first, "N" * len(SINUS_S), SINUS_S, 0.0, SYNTH_FS)
    after = len(synthetic_ecg(SINUS_S, "N" * len(SINUS_S))) / SYNTH_FS + break_s
    kept = handover(first, after)
    second = RrFromEcg(
        "strap",
        BeatsConfig(),
        make_finder=lambda _: _KnownPeaks([round(p * SYNTH_FS) for p in VT_S]),
        channels=channels,
        kept=kept,
    )
    return _feed(second, "V" * len(VT_S), VT_S, after, fs_after)


def in_memory(first: RrFromEcg, _at: float) -> KeptShapes | None:
    return first.handover()


def through_the_state_file(first: RrFromEcg, at: float) -> KeptShapes | None:
    """Saved as the session saves it, through JSON, restored as a start restores it at `at`."""
    kept = first.handover()
    assert kept is not None
    text = json.dumps({"d-strap": kept_shapes.saved(Handed(kept, "sig"))})
    entries = kept_shapes.restored(json.loads(text), {"strap": "d-strap"})
    return kept_shapes.adopted(entries, {"strap": "sig"}, {"strap": "d-strap"}, "none saved", now=at).get(
        "strap"
    )


def all_ventricular(got: list[dict[str, float]]) -> bool:
    return len(got) == len(VT_S) - 1 and min(r.get("qrs_core", 0.0) for r in got) > DEFAULT_MIN_QRS_CORE


def without_shape_at_first(got: list[dict[str, float]]) -> bool:
    """As a fresh stage: the first beats have no shape (the templates are built of the VT's own)."""
    return not any("qrs_core" in r or "qrs_shape" in r for r in got[: MIN_TEMPLATE_BEATS - 1])


@pytest.mark.parametrize("handover", [in_memory, through_the_state_file])
def test_a_vt_right_after_a_new_stage_reads_ventricular_at_once_with_the_old_templates(
    handover: Handover,
) -> None:
    got = vt_after_a_new_stage(2.0, handover)
    assert all_ventricular(got)
    assert min(r["qrs_shape"] for r in got) > 1.0


def test_the_templates_through_the_state_file_give_the_same_shapes_as_in_memory() -> None:
    a, b = vt_after_a_new_stage(2.0, in_memory), vt_after_a_new_stage(2.0, through_the_state_file)
    for x, y in zip(a, b, strict=True):
        assert x["qrs_core"] == pytest.approx(y["qrs_core"], rel=1e-5)
        assert x["qrs_shape"] == pytest.approx(y["qrs_shape"], rel=1e-5)


def test_without_a_hand_over_the_new_stage_learns_the_vt() -> None:
    assert without_shape_at_first(vt_after_a_new_stage(2.0, lambda _first, _at: None))


def test_a_break_of_keep_shapes_s_or_more_starts_afresh(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="agent.ecg.rr_from_ecg"):
        got = vt_after_a_new_stage(KEEP_SHAPES_S + 1.0, in_memory)
    assert without_shape_at_first(got)
    assert "start afresh: its ECG came back 61 s after" in caplog.text


def test_another_rate_starts_afresh(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="agent.ecg.rr_from_ecg"):
        got = vt_after_a_new_stage(2.0, in_memory, fs_after=SYNTH_FS / 2)
    assert not any("qrs_core" in r for r in got[: MIN_TEMPLATE_BEATS - 1])
    assert "start afresh: its rate changed" in caplog.text


def test_other_channels_start_afresh(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="agent.ecg.rr_from_ecg"):
        got = vt_after_a_new_stage(2.0, in_memory, channels=("qrs_core",))
    assert not any("qrs_core" in r for r in got[: MIN_TEMPLATE_BEATS - 1])
    assert "start afresh: the beat channels read changed" in caplog.text


def test_a_save_older_than_keep_shapes_s_is_not_restored(caplog: pytest.LogCaptureFixture) -> None:
    def late(first: RrFromEcg, at: float) -> KeptShapes | None:
        return through_the_state_file(first, at + KEEP_SHAPES_S)  # the agent started a minute later

    with caplog.at_level(logging.INFO, logger="agent.ecg.kept_shapes"):
        got = vt_after_a_new_stage(2.0, late)
    assert without_shape_at_first(got)
    assert "d-strap: beat-shape templates start afresh: the saved ones are 62 s old" in caplog.text


def _entry() -> dict[str, Any]:
    first = RrFromEcg(
        "strap",
        BeatsConfig(),
        make_finder=lambda _: _KnownPeaks([round(p * SYNTH_FS) for p in SINUS_S]),
        channels=SHAPES,
    )
    _feed(first, "N" * len(SINUS_S), SINUS_S, 0.0, SYNTH_FS)
    kept = first.handover()
    assert kept is not None
    entry: dict[str, Any] = json.loads(json.dumps(kept_shapes.saved(Handed(kept, "sig"))))
    return entry


def _damaged(entry: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(entry))
    table = copy
    for key in path[:-1]:
        table = table[key]
    table[path[-1]] = value
    return copy


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("version",), 2),
        (("period_s",), "1/250"),
        (("period_s",), 0.5),  # disagrees with the shapes' rate
        (("ended_at",), None),
        (("shapes", "windows"), "not base64!"),
        (("shapes", "windows"), "AAAA"),  # one float, not whole rows
        (("shapes", "cores"), "AADAfw==" * 39),  # NaN
        (("shapes", "whole"), -1),
        (("shapes", "window"), "yes"),
        (("shapes", "admission", "intervals"), [0.8, "x"]),
        (("shapes", "admission", "counts"), [1, 2]),
        (("shapes", "admission", "before_run"), -1.0),
        (("shapes",), None),
    ],
)
def test_a_damaged_entry_is_left_out_with_a_line_not_raised(
    path: tuple[str, ...], value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    entry = _entry()
    assert set(kept_shapes.restored({"d-strap": entry}, {"strap": "d-strap"})) == {"strap"}
    with caplog.at_level(logging.INFO, logger="agent.ecg.kept_shapes"):
        got = kept_shapes.restored({"d-strap": _damaged(entry, path, value)}, {"strap": "d-strap"})
    assert got == {}
    assert "d-strap: the saved beat-shape templates cannot be read" in caplog.text


@pytest.mark.parametrize("entries", [None, [], "x", {"d-strap": []}, {"d-strap": None}])
def test_a_foreign_or_odd_table_restores_nothing(entries: Any) -> None:
    assert kept_shapes.restored(entries, {"strap": "d-strap"}) == {}


def device(**changes: Any) -> DeviceConfig:
    base = DeviceConfig(
        "strap", "wearable", "simulator", simulator=SimulatorConfig(ecg=True), beats=BeatsConfig()
    )
    return dataclasses.replace(base, **changes)


def test_the_signature_follows_the_device_and_channels_not_lost_after_s() -> None:
    keyed = Pseudonymizer(b"k" * 32)
    same = kept_shapes.signature(device(), SHAPES, keyed)
    assert kept_shapes.signature(device(lost_after_s=5.0), SHAPES, keyed) == same
    assert kept_shapes.signature(device(patient="MRN-1"), SHAPES, keyed) != same
    assert kept_shapes.signature(device(beats=BeatsConfig(rr_stream="x")), SHAPES, keyed) != same
    assert kept_shapes.signature(device(), ("qrs_core",), keyed) != same
    assert kept_shapes.signature(device(), SHAPES, Pseudonymizer(b"j" * 32)) != same  # another site's key
    assert "MRN" not in kept_shapes.signature(device(patient="MRN-1"), SHAPES, keyed)


def test_another_signature_is_not_adopted(caplog: pytest.LogCaptureFixture) -> None:
    entries = kept_shapes.restored({"d-strap": _entry()}, {"strap": "d-strap"})
    with caplog.at_level(logging.INFO, logger="agent.ecg.kept_shapes"):
        got = kept_shapes.adopted(entries, {"strap": "other"}, {"strap": "d-strap"}, "none saved", now=40.0)
    assert got == {}
    assert "its config or the beat channels read changed" in caplog.text
    with caplog.at_level(logging.INFO, logger="agent.ecg.kept_shapes"):
        assert kept_shapes.adopted({}, {"strap": "sig"}, {"strap": "d-strap"}, "none saved") == {}
    assert "d-strap: beat-shape templates start afresh: none saved" in caplog.text


def test_the_saved_entry_is_small() -> None:
    # 32 windows of 64 and 32 cores of 39 float32, base64: the state file is rewritten with each heartbeat
    assert len(json.dumps(_entry())) < 18_000
    assert math.isfinite(_entry()["ended_at"])


def test_a_stage_handed_nothing_hands_on_what_it_was_given() -> None:
    kept = RrFromEcg("strap", BeatsConfig(), channels=SHAPES, kept=None).handover()
    assert kept is None
    first = RrFromEcg(
        "strap",
        BeatsConfig(),
        make_finder=lambda _: _KnownPeaks([round(p * SYNTH_FS) for p in SINUS_S]),
        channels=SHAPES,
    )
    _feed(first, "N" * len(SINUS_S), SINUS_S, 0.0, SYNTH_FS)
    given = first.handover()
    idle = RrFromEcg("strap", BeatsConfig(), channels=SHAPES, kept=given)  # its source never sent a block
    assert idle.handover() is given
