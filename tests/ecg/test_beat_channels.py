"""The ECG -> RR stage computes only the channels it is asked for (agent.ecg.rr_from_ecg, "A channel only
when read"): every other part of every reading, rr and hr to the byte, is that of a stage computing all.

MIT-BIH record 119's minute of ventricular bigeminy (tests/data, ODC-By 1.0: PVCs, so qrs_shape and
qrs_core vary, and normal beats after long intervals, so p_wave has values), cut by a lead-off (no values:
"no value" readings, the templates start again), a short GAP (the templates go on) and a flat line (pause
readings of hr alone), through the real QRS detector.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from agent.config.schema import BeatsConfig
from agent.ecg import beat_shape, rr_from_ecg
from agent.ecg.p_wave import AtrialActivity
from agent.ecg.rr_from_ecg import CHANNELS, OPTIONAL, RrFromEcg
from agent.readings import Quality, Reading

EXCERPT = Path(__file__).resolve().parents[1] / "data" / "mitdb_119_mlii_180s_60s.npz"
FRAME = 73


def record_frames() -> list[Reading]:
    """The excerpt in frames: 25 s, 2 s without values, 20 s, a 3 s hole (GAP), the rest, 6 s flat."""
    d = np.load(EXCERPT)
    fs = float(d["fs_hz"])
    ecg = d["ecg_adc"] / float(d["adc_per_mv"])
    cut = [round(s * fs) for s in (25.0, 45.0)]
    parts: list[tuple[npt.NDArray[np.float64], float, Quality]] = [
        (ecg[: cut[0]], 0.0, Quality.OK),
        (np.full(round(2.0 * fs), np.nan), 25.0, Quality.OK),
        (ecg[cut[0] : cut[1]], 27.0, Quality.OK),
        (ecg[cut[1] :], 50.0, Quality.GAP),
    ]
    parts.append(
        (np.full(round(6.0 * fs), float(np.median(ecg))), 50.0 + (len(ecg) - cut[1]) / fs, Quality.OK)
    )
    frames = []
    for samples, t0, first_flag in parts:
        for start in range(0, len(samples), FRAME):
            t = t0 + start / fs
            flag = first_flag if start == 0 else Quality.OK
            frames.append(
                Reading("holter/ecg", ("ecg",), samples[start : start + FRAME, None], t, t, 1 / fs, flag)
            )
    return frames


def rr_readings(channels: tuple[str, ...]) -> list[Reading]:
    stage = RrFromEcg("holter", BeatsConfig(), channels=channels)
    return [r for frame in record_frames() for r in stage.take(frame) if r.stream == "holter/rr"]


@pytest.fixture(scope="module")
def every_channel() -> list[Reading]:
    return rr_readings(CHANNELS)


def test_the_recording_gives_every_kind_of_reading(every_channel: list[Reading]) -> None:
    kinds = {r.channels for r in every_channel}
    assert ("rr", "hr", "qrs_width") in kinds and ("hr",) in kinds  # beats before their templates, a pause
    assert CHANNELS in kinds  # a normal beat with all three
    assert ("rr", "hr", "qrs_shape", "qrs_core") in kinds  # a PVC: no p_wave
    assert ("rr", "hr", "qrs_shape", "qrs_core", "qrs_width") in kinds  # a PVC soon after the lead-off
    assert any(np.isnan(r.values).all() for r in every_channel)  # the lead-off said
    assert sum(len(r.channels) == 5 for r in every_channel) >= 10


@pytest.mark.parametrize(
    "asked",
    [subset for n in range(len(OPTIONAL) + 1) for subset in itertools.combinations(OPTIONAL, n)],
    ids=str,
)
def test_a_stage_gives_exactly_the_channels_asked_and_the_rest_of_each_reading_unchanged(
    every_channel: list[Reading], asked: tuple[str, ...]
) -> None:
    # Failed before the stage took `channels` (qrs_shape and qrs_core were in every beat's reading).
    got = rr_readings(("rr", "hr", *asked))
    assert len(got) == len(every_channel)
    for mine, full in zip(got, every_channel, strict=True):
        kept = [i for i, name in enumerate(full.channels) if name not in OPTIONAL or name in asked]
        assert mine.channels == tuple(full.channels[i] for i in kept)
        assert mine.values.tobytes() == full.values[:, kept].tobytes()  # NaN and all, to the byte
        assert (mine.wall_time, mine.monotonic, mine.quality, mine.period_s) == (
            full.wall_time,
            full.monotonic,
            full.quality,
            full.period_s,
        )
    for name in asked:  # each channel asked for comes (the test could fail by a channel left out)
        assert any(name in r.channels for r in got)


def test_channels_not_asked_for_run_none_of_their_code(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_run(*_: object) -> float:
        raise AssertionError("code for a channel not asked for ran")

    for name in ("beat_windows", "shape_distance", "qrs_core", "core_distance", "qrs_width"):
        monkeypatch.setattr(beat_shape, name, not_run)
    for name in ("holds_qrs", "pre_r_segment", "samples_after", "samples_needed"):
        monkeypatch.setattr(rr_from_ecg, name, not_run)
    monkeypatch.setattr(AtrialActivity, "score", not_run)
    got = rr_readings(("rr", "hr"))
    assert {r.channels for r in got} == {("rr", "hr"), ("hr",)}
    assert len(got) >= 60


def test_p_wave_alone_computes_the_window_shape_but_not_the_core(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_run(*_: object) -> float:
        raise AssertionError("the core's code ran")

    for name in ("qrs_core", "core_distance"):
        monkeypatch.setattr(beat_shape, name, not_run)
    got = rr_readings(("p_wave",))  # rr and hr come whatever is asked
    assert {"rr", "hr", "p_wave"} == {name for r in got for name in r.channels}


def test_a_channel_the_stage_does_not_have_is_refused() -> None:
    with pytest.raises(ValueError, match="qrs_axis"):
        RrFromEcg("holter", BeatsConfig(), channels=("rr", "qrs_axis"))
