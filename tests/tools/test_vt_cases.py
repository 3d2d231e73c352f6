"""tools.evaluate.vt_bigeminy, vt_drops and stage_digest: the hosts they draw, the frames they drop and
the lines they digest, on synthetic ECG (no dataset needed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from agent.readings import Quality, Reading
from tools.evaluate import vt_bigeminy, vt_drops, vt_leadoff, vt_runs
from tools.evaluate.datasets import MITDB_FS, T0
from tools.evaluate.qrs import POLAR_FRAME
from tools.evaluate.stage_digest import reading_line, record_lines
from tools.evaluate.vt_runs import BoolArray, FloatArray, IntArray

FS = MITDB_FS


def synthetic_record(
    seconds: float, pvcs: Callable[[int], BoolArray] | None = None
) -> tuple[FloatArray, IntArray, BoolArray]:
    """(ECG, beats, is_pvc): narrow beats every 0.8 s; those `pvcs` marks are PVCs (wider, lower)."""
    n = round(seconds * FS)
    beats = np.arange(round(0.5 * FS), n - round(FS), round(0.8 * FS)).astype(np.int64)
    is_pvc = np.zeros(len(beats), dtype=bool) if pvcs is None else pvcs(len(beats))
    around = np.arange(-100, 101)
    ecg = np.zeros(n)
    for b, wide in zip(beats, is_pvc, strict=True):
        ecg[b + around] += (0.6 if wide else 1.0) * np.exp(-0.5 * (around / (15.0 if wide else 4.0)) ** 2)
    return ecg, beats, is_pvc


def bigeminy_in_thirds(count: int) -> BoolArray:
    """Sinus rhythm, then bigeminy (every other beat a PVC) in the middle third, then sinus again."""
    is_pvc = np.zeros(count, dtype=bool)
    is_pvc[count // 3 : 2 * count // 3 : 2] = True
    return is_pvc


def test_bigeminy_hosts_follow_at_least_40_percent_pvcs_and_vt_runs_hosts_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ecg, beats, is_pvc = synthetic_record(1500, bigeminy_in_thirds)
    monkeypatch.setattr(vt_runs, "load_record", lambda root, record: (ecg, beats, is_pvc))
    hosts = vt_runs.draw_hosts(
        None, "200", eligible=vt_bigeminy.in_bigeminy, count=11, run_s=26.0, at_least=1
    )
    assert 1 <= len(hosts) < 11  # a 500 s stretch of bigeminy holds fewer than 11 hosts 60 s apart
    for host, donor in hosts:
        k = int(np.searchsorted(beats, host))
        assert beats[k] == host and not is_pvc[k]
        assert is_pvc[k - vt_bigeminy.BEFORE_BEATS : k].mean() >= vt_bigeminy.MIN_PVC_SHARE
        assert is_pvc[np.searchsorted(beats, donor)]
    starts = sorted(h for h, _ in hosts)
    assert np.all(np.diff(starts) >= vt_runs.HOST_SPACING_S * FS)
    # vt_runs' own hosts (no PVC in the 10 s before) stay out of the bigeminy
    clean = vt_runs.draw_hosts(None, "200", count=4)
    first_pvc, last_pvc = beats[is_pvc][0], beats[is_pvc][-1]
    assert all(not (first_pvc <= h <= last_pvc + vt_runs.CLEAN_BEFORE_S * FS) for h, _ in clean)
    with pytest.raises(RuntimeError, match="only"):
        vt_runs.draw_hosts(None, "200", eligible=vt_bigeminy.in_bigeminy, count=11, run_s=26.0)


def test_a_beat_just_below_the_pvc_share_is_no_bigeminy_host() -> None:
    beats = np.arange(40, dtype=np.int64) * 288
    is_pvc = np.zeros(40, dtype=bool)
    is_pvc[[3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25]] = True  # 12 of the 32 before beat 34: 37.5 %
    assert not vt_bigeminy.in_bigeminy(beats, is_pvc, 34)
    is_pvc[27] = True  # 13 of 32: 40.6 %
    assert vt_bigeminy.in_bigeminy(beats, is_pvc, 34)
    assert not vt_bigeminy.in_bigeminy(beats, is_pvc, 27)  # a PVC hosts no run


def test_a_drop_removes_its_frames_and_flags_the_next_one_gap() -> None:
    ecg = np.arange(30 * POLAR_FRAME, dtype=np.float64)
    delivered = list(vt_runs.frames(ecg, lost=range(10, 20)))
    starts = [start for start, _ in delivered]
    assert starts == [i * POLAR_FRAME for i in (*range(10), *range(20, 30))]
    for start, reading in delivered:
        np.testing.assert_array_equal(reading.values[:, 0], ecg[start : start + POLAR_FRAME])
        assert reading.wall_time == T0 + start / FS  # stamped at its own time: the hole shows
    flags = {start // POLAR_FRAME: reading.quality for start, reading in delivered}
    assert flags[20] == Quality.GAP
    assert all(q == Quality.OK for i, q in flags.items() if i != 20)
    assert all(r.quality == Quality.OK for _, r in vt_runs.frames(ecg))


@pytest.mark.parametrize("ends_before_s", [0.0, 1.0, 3.0, 6.0])
def test_the_drop_is_2_s_of_frames_ending_by_its_time_before_the_run(ends_before_s: float) -> None:
    onset = round(150.4 * FS)
    spliced = vt_runs.Spliced(
        np.zeros(onset + round(20 * FS)), np.zeros(0, np.int64), np.zeros(0, bool), onset, onset
    )
    lost = vt_drops.lost_frames(spliced, ends_before_s)
    end = onset - round(ends_before_s * FS)
    assert len(lost) == vt_drops.DROP_FRAMES
    assert abs(len(lost) * POLAR_FRAME / FS - 2.0) < POLAR_FRAME / FS / 2
    assert 0 <= end - lost.stop * POLAR_FRAME < POLAR_FRAME  # ends by then, at most a frame before


def test_a_drop_before_a_run_ends_the_interval_at_the_hole() -> None:
    """Through the real stage: no RR reading spans the 2 s drop, and beats resume after it."""
    ecg, _, _ = synthetic_record(60)
    lost = range(200, 200 + vt_drops.DROP_FRAMES)
    readings = [b.reading for b in vt_runs.stage_readings(ecg, "rr", lost=lost)]
    rr = np.array([r.values[0, 0] for r in readings if r.channels[0] == "rr"])
    stamps = np.array([r.wall_time - T0 for r in readings if r.channels[0] == "rr"])
    assert np.all(np.abs(rr - 0.8) < 0.01)  # never a 2.8 s interval across the hole
    hole = (lost.start * POLAR_FRAME / FS, lost.stop * POLAR_FRAME / FS)
    assert not np.any((stamps > hole[0]) & (stamps < hole[1]))
    assert np.sum(stamps > hole[1]) >= 15


def test_a_digest_line_gives_every_channel_as_its_repr_and_the_flags() -> None:
    values = np.array([[0.1 + 0.2, 200.0, 1.5]])
    reading = Reading("eval/rr", ("rr", "hr", "qrs_shape"), values, T0 + 1 / 3, 0.0, quality=Quality.GAP)
    line = reading_line("106", reading)
    assert line == "106 1800000000.3333333 rr=0.30000000000000004 hr=200.0 qrs_shape=1.5 gap"
    ecg, _, _ = synthetic_record(30)
    lines = record_lines("100", ecg, 20.0)
    assert 15 <= len(lines) <= 25 and all(x.startswith("100 ") and x.endswith(" ok") for x in lines)
    assert lines == record_lines("100", ecg, 20.0)  # a fresh stage each time: the same text


def test_a_lead_off_sends_its_frames_with_nan_samples_and_no_contact() -> None:
    ecg = np.arange(30 * POLAR_FRAME, dtype=np.float64)
    delivered = dict(vt_runs.frames(ecg, off=range(10, 20)))
    assert sorted(delivered) == [i * POLAR_FRAME for i in range(30)]  # every frame still comes
    for start, reading in delivered.items():
        off = 10 <= start // POLAR_FRAME < 20
        assert reading.quality == (Quality.NO_CONTACT if off else Quality.OK)
        assert np.isnan(reading.values).all() if off else np.isfinite(reading.values).all()


@pytest.mark.parametrize("ends_before_s", vt_leadoff.ENDS_BEFORE_S)
@pytest.mark.parametrize("seconds", vt_leadoff.OFF_S)
def test_the_lead_off_lasts_its_seconds_and_ends_by_its_time_before_the_run(
    ends_before_s: float, seconds: float
) -> None:
    onset = round(150.4 * FS)
    spliced = vt_runs.Spliced(
        np.zeros(onset + round(20 * FS)), np.zeros(0, np.int64), np.zeros(0, bool), onset, onset
    )
    off = vt_leadoff.frames_before(spliced, ends_before_s, seconds)
    assert abs(len(off) * POLAR_FRAME / FS - seconds) < POLAR_FRAME / FS / 2
    assert 0 <= onset - round(ends_before_s * FS) - off.stop * POLAR_FRAME < POLAR_FRAME


def test_a_lead_off_through_the_stage_is_said_no_contact_and_beats_resume_after_it() -> None:
    ecg, _, _ = synthetic_record(120)
    off = vt_leadoff.leadoff_frames(len(ecg), 30.0)
    readings = [b.reading for b in vt_runs.stage_readings(ecg, "rr", off=off)]
    start_s, stop_s = off.start * POLAR_FRAME / FS, off.stop * POLAR_FRAME / FS
    told = [r for r in readings if Quality.NO_CONTACT in r.quality]
    assert 25 <= len(told) <= 31 and all(np.isnan(r.values).all() for r in told)  # one a second
    beats = [r for r in readings if r.quality == Quality.OK and np.isfinite(r.values[0, 0])]
    stamps = np.array([r.wall_time - T0 for r in beats])
    assert not np.any((stamps > start_s) & (stamps < stop_s))
    assert np.sum(stamps > stop_s) >= 33  # 30 s at 0.8 s, the first without an interval
    assert all(abs(r.values[0, 0] - 0.8) < 0.01 for r in beats)  # no interval spans the lead-off


def test_a_record_played_faster_and_a_lead_reshaped() -> None:
    ecg, beats, _ = synthetic_record(60)
    fast, fast_beats = vt_leadoff.compressed(ecg, beats, 1.4)
    assert len(fast) == int(len(ecg) / 1.4)
    assert np.all(np.abs(fast[fast_beats] - 1.0) < 0.05)  # the R peaks are where the beats went
    reshaped = vt_leadoff.mixed(ecg)
    scale = float(np.sqrt(np.mean(reshaped**2) / np.mean((ecg - np.median(ecg)) ** 2)))
    assert 1.1 < scale < 1.5  # x1.5 of a mix of two parts of equal RMS, partly cancelling
    assert np.argmax(reshaped[: round(0.8 * FS)]) != np.argmax(ecg[: round(0.8 * FS)])  # the QRS moved


def test_a_rhythm_sped_up_with_each_qrs_kept() -> None:
    """vt_leadoff.qrs_kept: intervals `factor` shorter, each QRS (-0.1 .. +0.14 s) at its own speed."""
    ecg, beats, _ = synthetic_record(60, lambda n: np.ones(n, dtype=bool))  # wide beats (sigma 15 samples)
    kept, moved = vt_leadoff.qrs_kept(ecg, beats, 2.0)
    np.testing.assert_allclose(np.diff(moved[1:-1]), round(0.8 * FS) / 2.0, atol=1.0)
    assert abs(len(kept) - len(ecg) / 2.0) < 0.8 * FS
    b, m = beats[5], moved[5]
    around = np.arange(-30, 31)
    np.testing.assert_allclose(kept[m + around], ecg[b + around], atol=1e-6)  # the QRS itself unchanged
    fast, fast_beats = vt_leadoff.compressed(ecg, beats, 2.0)
    assert np.sum(fast[fast_beats[5] + around] > 0.3) < np.sum(
        kept[m + around] > 0.3
    )  # compression narrows it


def test_the_wide_and_narrow_cases_split_the_records() -> None:
    assert set(vt_leadoff.WIDE_RECORDS) | set(vt_leadoff.NARROW_RECORDS) == set(vt_runs.ALL_RECORDS)
    assert {"102", "104"} <= set(vt_leadoff.WIDE_RECORDS)  # the paced records
    cases = vt_leadoff.wide_set()
    assert len(cases) == len(set(cases)) == 6 * len(vt_leadoff.WIDE_BPM) * len(vt_leadoff.VARIANTS)


def test_the_faster_cases_are_every_record_factor_lead_off_and_variant_once() -> None:
    cases = vt_leadoff.faster_set()
    keys = {(c.record, c.factor, c.seconds, c.variant) for c in cases}
    assert len(keys) == len(cases) == 12 * 2 * 2 * 3
    assert {c.record for c in cases} == set(vt_runs.ALL_RECORDS)
    assert {c.factor for c in cases} == {1.4, 1.7}
    assert {c.seconds for c in cases} == {30.0, 90.0}
    assert {c.variant for c in cases} == {"same", "inverted x0.7", "x1.5 reshaped"}


@pytest.mark.parametrize("variant", ["same", "inverted x0.7"])
@pytest.mark.parametrize("factor", vt_leadoff.SPEED_UPS)
def test_a_faster_case_keeps_the_ecg_before_the_lead_off_and_speeds_up_what_follows(
    monkeypatch: pytest.MonkeyPatch, factor: float, variant: str
) -> None:
    ecg, beats, is_pvc = synthetic_record(1000)  # longer than the 900 s a case keeps
    monkeypatch.setattr(vt_runs, "load_record", lambda root, record: (ecg, beats, is_pvc))
    case = vt_leadoff.Faster("100", factor, 90.0, variant)
    spliced, spliced_beats, spliced_pvc, off = vt_leadoff.faster_record(None, case)
    head = round(900 * FS)
    back = off.stop * POLAR_FRAME
    assert off == vt_leadoff.leadoff_frames(head, 90.0)
    assert abs(off.start * POLAR_FRAME / FS - 450) < 1 and abs(len(off) * POLAR_FRAME / FS - 90) < 0.5
    assert len(spliced) == back + int((head - back) / factor)
    np.testing.assert_array_equal(spliced[:back], ecg[:back])  # the lead-off's samples too: NaN in frames
    fast, _ = vt_leadoff.compressed(ecg[back:head], beats[:0], factor)
    np.testing.assert_allclose(spliced[back:], vt_leadoff.VARIANTS[variant](fast))
    # the beats after the lead-off come `factor` times as often, each at its R peak, sign and size of the lead
    after = spliced_beats[spliced_beats >= back]
    assert len(spliced_beats) == np.sum(beats < head) and len(spliced_pvc) == len(spliced_beats)
    assert np.all(np.abs(np.diff(after) / FS - 0.8 / factor) < 2 / FS)
    assert np.all(np.abs(spliced[after] - (1.0 if variant == "same" else -0.7)) < 0.05)
    assert np.all(np.diff(spliced_beats[spliced_beats < back]) == round(0.8 * FS))
    delivered = dict(vt_runs.frames(spliced, off=off))
    for start, reading in delivered.items():
        lead_off = start // POLAR_FRAME in off
        assert reading.quality == (Quality.NO_CONTACT if lead_off else Quality.OK)
        assert np.isnan(reading.values).all() if lead_off else np.isfinite(reading.values).all()


def test_a_faster_case_through_the_stage_counts_the_rates_and_no_vt(monkeypatch: pytest.MonkeyPatch) -> None:
    ecg, beats, is_pvc = synthetic_record(1000)
    monkeypatch.setattr(vt_runs, "load_record", lambda root, record: (ecg, beats, is_pvc))
    config = Path(__file__).parents[2] / "tools/evaluate/configs/vt-only.toml"
    case = vt_leadoff.Faster("100", 1.7, 30.0, "inverted x0.7")
    result = vt_leadoff._faster_job((config, None, case, vt_runs.VT))
    assert abs(result.rate_before_bpm - 75) < 1 and abs(result.rate_after_bpm - 75 * 1.7) < 2
    assert (result.starts, result.real_starts) == (0, 0)
    assert vt_leadoff.faster_line(result) == "100\t1.7\t30\tinverted x0.7\t75\t128\t0\t0"
