"""VT after a lead-off or a long hole: is a run alarmed when the electrode was off just before it, and
does a lead put back (moved or not) raise false VT or PVCs?

    python -m tools.evaluate.vt_leadoff --config tools/evaluate/configs/vt-only.toml \\
        --data /work/shared/datasets --out eval/vt-leadoff --jobs 1 [--part runs|records|faster|wide]

After a lead-off (frames with no values) or a hole of `KEEP_SHAPES_S` or more the stage starts its beat
shape templates again (agent.ecg.rr_from_ecg); a VT that starts then could become the "normal" beat.

`--part runs`: `tools.evaluate.vt_runs`' cases (its hosts drawn with room for `LENGTHS`' longest run,
donors, splice, stage, pipeline and timing, imported) on records `RUNS`, a run of `LENGTHS` beats at
`RATE_BPM`, and before it, ending `ENDS_BEFORE_S` (0, 1, 3 s) before the run's first beat:

- a lead-off of `OFF_S` (5, 30, 90 s): the frames are delivered with NaN samples and `Quality.NO_CONTACT`
  (a patch's cleared sensor-contact bit; `vt_runs.frames`);
- a hole of `HOLE_S` (90 s): the frames are not delivered, the next flagged GAP (as `tools.evaluate.
  vt_drops`, longer than the stage's `KEEP_SHAPES_S`);
- a control per host and length with neither.

The last frame off is the last that ends by then (0 s: the frame holding the run's first beat is
delivered). Per case: the run beats the QRS detector found, the VT condition's delay (a start up to
`vt_runs.AFTER_S` after the run's last beat counts), the VT starts outside; `cases.tsv` beside the report,
one line per case, to compare two branches case by case.

`--part records`: the false-alarm side. The 12 MIT-BIH records (`vt_runs.ALL_RECORDS`, whole), at their
own speed and time-compressed by `FAST` (1.4: sinus tachycardia of ~100-130 bpm, resampled with
np.interp), with a lead-off of `OFF_S` in the middle (`LEADOFF_FRAMES`), after which the ECG is
`VARIANTS`: the same; times -0.7 (a lead moved: inverted, smaller); times 1.5 with a QRS of another shape
(0.7 x + 0.3 x' with x' the derivative scaled to x's RMS). In the `FOLLOW_S` (60 s) after the lead-off:
the VT condition's starts (those at an annotated run of >= 3 PVCs at > 100 bpm, `vt_runs.real_runs`,
apart), and the beats not annotated as PVCs that a `pvc` detector of its defaults (with qrs_core:
`vt_recurrent.pvc_flags`) flags.

`--part faster`: a lead put back moved while the rhythm is faster than before the break (a patient who got
up, came back and had the strap re-placed). The 12 MIT-BIH records, the first `FASTER_HEAD_S` (900 s) of
each, a lead-off of `FASTER_OFF_S` (30, 90 s) in the middle (`leadoff_frames`); the ECG after it is
time-compressed by `SPEED_UPS` (x1.4, x1.7: `compressed`) and then `VARIANTS` (`faster_after`). Per record,
factor, seconds and variant: the VT condition's starts in the `FASTER_FOLLOW_S` (120 s) after the lead-off
(and which of them are at an annotated run, sped up with the rest), and the median rate in the minute
before and in those seconds after. The compression shortens every wave, so it narrows the QRS as well as
the intervals: a real speed-up keeps the QRS's width, so the "same" rows overstate one (their QRS also
differs from the one before the break).

`--part wide`: a wide rhythm that is not VT, sped up after a lead-off, for a rule that reads the QRS width
(agent.ecg.qrs_width). `WIDE_RECORDS`: the paced records 102 and 104 and the four whose other beats read
widest by that measure (105, 108, 114, 121), the first `FASTER_HEAD_S` of each, a lead-off of
`WIDE_OFF_S` in the middle; after it the intervals are shortened to `WIDE_BPM` (the median rate before
times a factor) while each QRS keeps its own duration (`qrs_kept`: -`KEEP_BEFORE_S` .. +`KEEP_AFTER_S`
around every annotated beat at the original speed, the rest compressed), then `VARIANTS`. The VT
condition's starts in the `FASTER_FOLLOW_S` after the lead-off, by the rate after it: below 120 bpm a
start is false, from 120 on a wide rhythm read as VT is the accepted clinical call. `--part narrow`: the
same on the other six records (`NARROW_RECORDS`, normal QRS read 52-71 ms), a sinus rhythm sped up with
its QRS kept (unlike `--part faster`, whose compression narrows it): every start there is false.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tools.evaluate import vt_recurrent, vt_runs
from tools.evaluate.datasets import MITDB_FS
from tools.evaluate.qrs import MATCH_WINDOW_S, POLAR_FRAME
from tools.evaluate.replay import pool_map
from tools.evaluate.report import table, write_report
from tools.evaluate.vt_runs import AFTER_S, Case, CaseResult, FloatArray, Spliced

RUNS = ("106", "119", "200")
HOSTS = 8  # per record: vt_runs' count, drawn with room for the longest run
RATE_BPM = 150
LENGTHS = (30, 100)
ENDS_BEFORE_S = (0.0, 1.0, 3.0)
OFF_S = (5.0, 30.0, 90.0)
HOSTS_ROOM_S = max(LENGTHS) * 60.0 / RATE_BPM + 2.0
HOLE_S = 90.0
FAST = 1.4
FOLLOW_S = 60.0
LEAD_GAIN = -0.7
SPEED_UPS = (1.4, 1.7)
FASTER_OFF_S = (30.0, 90.0)
FASTER_HEAD_S = 900.0
FASTER_FOLLOW_S = 120.0
WIDE_RECORDS = ("102", "104", "105", "108", "114", "121")
NARROW_RECORDS = tuple(r for r in vt_runs.ALL_RECORDS if r not in WIDE_RECORDS)
WIDE_BPM = (100.0, 110.0, 120.0, 140.0, 160.0)
WIDE_OFF_S = 30.0
KEEP_BEFORE_S, KEEP_AFTER_S = 0.1, 0.14  # the QRS, kept at its own speed when the rhythm is sped up


def frames_before(spliced: Spliced, ends_before_s: float, seconds: float) -> range:
    """The frames of `seconds` ending at or before `ends_before_s` before the run's first beat."""
    stop = (spliced.onset - round(ends_before_s * MITDB_FS)) // POLAR_FRAME  # frames below it end by then
    return range(stop - round(seconds * MITDB_FS / POLAR_FRAME), stop)


@dataclass(frozen=True, slots=True)
class OffCase:
    case: Case
    kind: str  # "control", "lead-off" or "hole"
    seconds: float  # how long the lead was off or the hole (0: control)
    ends_before_s: float

    def key(self) -> str:
        c = self.case
        return f"{c.record}\t{c.host}\t{c.length}\t{self.kind}\t{self.seconds:g}\t{self.ends_before_s:g}"


def case_set(root: Path | None) -> list[OffCase]:
    out = []
    for record in RUNS:
        for host, donor in vt_runs.draw_hosts(root, record, count=HOSTS, run_s=HOSTS_ROOM_S):
            for length in LENGTHS:
                case = Case(record, host, donor, length, RATE_BPM)
                out.append(OffCase(case, "control", 0.0, 0.0))
                for end in ENDS_BEFORE_S:
                    out += [OffCase(case, "lead-off", s, end) for s in OFF_S]
                    out.append(OffCase(case, "hole", HOLE_S, end))
    return out


def _case_job(job: tuple[Path, Path | None, OffCase, str]) -> CaseResult:
    config_path, root, c, vt = job
    span = functools.partial(frames_before, ends_before_s=c.ends_before_s, seconds=c.seconds)
    if c.kind == "lead-off":
        return vt_runs.judge_case(config_path, root, c.case, vt, off=span)
    if c.kind == "hole":
        return vt_runs.judge_case(config_path, root, c.case, vt, lost=span)
    return vt_runs.judge_case(config_path, root, c.case, vt)


def _median(delays: list[float]) -> str:
    return f"{np.median(delays):.2f} s" if delays else "-"


def runs_report(config_path: Path, cases: list[OffCase], results: list[CaseResult], vt: str) -> str:
    pairs = list(zip(cases, results, strict=True))
    summary = []
    for kind, seconds in [("control", 0.0), *(("lead-off", s) for s in OFF_S), ("hole", HOLE_S)]:
        for length in LENGTHS:
            for end in ENDS_BEFORE_S if kind != "control" else (0.0,):
                cell = [
                    r
                    for c, r in pairs
                    if (c.kind, c.seconds, c.case.length, c.ends_before_s) == (kind, seconds, length, end)
                ]
                delays = [r.starts[vt] for r in cell if vt in r.starts]
                summary.append(
                    (
                        kind,
                        f"{seconds:g}" if kind != "control" else "-",
                        length,
                        f"{end:g}" if kind != "control" else "-",
                        f"{len(delays)} / {len(cell)}",
                        _median(delays),
                        sum(r.vt_outside for r in cell),
                    )
                )
    broken = [(c, r) for c, r in pairs if c.kind != "control"]
    alarmed = sum(vt in r.starts for _, r in broken)
    return "\n".join(
        [
            f"# VT after a lead-off or a long hole: the alarms of {config_path}",
            "",
            f"Runs of one PVC of the record at {RATE_BPM} bpm after vt_runs' hosts ({HOSTS} per record of "
            f"{', '.join(RUNS)}, drawn with room for {max(LENGTHS)} beats); before the run a lead-off "
            "(NaN frames flagged NO_CONTACT) or a hole (frames not delivered, the next flagged GAP) "
            "ending by the given seconds before its first beat. Delays from that beat to when the reading "
            f"that started the alarm left the stage; a start counts up to {AFTER_S:g} s after the run's "
            "last beat.",
            "",
            f"Runs after a lead-off or a hole alarmed by {vt}: {alarmed} / {len(broken)}",
            "",
            table(
                [
                    "kind",
                    "seconds off",
                    "run beats",
                    "ends before the run (s)",
                    "alarmed",
                    "median delay",
                    f"{vt} starts outside",
                ],
                summary,
            ),
        ]
    )


TSV_HEADER = "record\thost\tlength\tkind\tseconds\tends_before_s\tfound\tdelay_s\toutside"


def case_line(c: OffCase, r: CaseResult, vt: str) -> str:
    delay = f"{r.starts[vt]:.2f}" if vt in r.starts else "-"
    return f"{c.key()}\t{r.found}\t{delay}\t{r.vt_outside}"


# -- the false-alarm side: a lead put back -----------------------------------------------------------------


def mixed(ecg: FloatArray) -> FloatArray:
    """1.5 (0.7 x + 0.3 x'), x' the derivative scaled to x's RMS: larger, and a QRS of another shape."""
    centred = ecg - np.median(ecg)
    slope = np.gradient(centred)
    slope *= np.sqrt(np.mean(centred**2) / (np.mean(slope**2) + 1e-12))
    out: FloatArray = 1.5 * (0.7 * centred + 0.3 * slope)
    return out


VARIANTS: dict[str, Callable[[FloatArray], FloatArray]] = {
    "same": lambda x: x,
    "inverted x0.7": lambda x: LEAD_GAIN * x,
    "x1.5 reshaped": mixed,
}


def compressed(
    ecg: FloatArray, beats: vt_runs.IntArray, factor: float
) -> tuple[FloatArray, vt_runs.IntArray]:
    """The record played `factor` times faster (every interval and wave shorter), and its beats."""
    if factor == 1.0:
        return ecg, beats
    times = np.arange(int(len(ecg) / factor)) * factor
    fast: FloatArray = np.interp(times, np.arange(len(ecg)), ecg)
    return fast, np.round(beats / factor).astype(np.int64)


@dataclass(frozen=True, slots=True)
class PutBack:
    record: str
    speed: float
    seconds: float
    variant: str


@dataclass(frozen=True, slots=True)
class PutBackResult:
    put_back: PutBack
    rate_bpm: float  # the median rate over the minute before the lead-off
    false_starts: int  # VT starts in the minute after, not at an annotated run
    real_starts: int
    flags: int  # beats not annotated PVC flagged by pvc in that minute
    beats: int  # beats not annotated PVC reported in that minute


def leadoff_frames(length: int, seconds: float) -> range:
    """The frames of a lead-off of `seconds` from the middle of a segment of `length` samples."""
    first = length // 2 // POLAR_FRAME
    return range(first, first + round(seconds * MITDB_FS / POLAR_FRAME))


def put_back_set() -> list[PutBack]:
    return [
        PutBack(record, speed, s, variant)
        for record in vt_runs.ALL_RECORDS
        for speed in (1.0, FAST)
        for s in OFF_S
        for variant in VARIANTS
    ]


def _put_back_job(job: tuple[Path, Path | None, PutBack, str]) -> PutBackResult:
    config_path, root, p, vt = job
    raw, annotated, is_pvc = vt_runs.load_record(root, p.record)
    ecg, beats = compressed(raw, annotated, p.speed)
    off = leadoff_frames(len(ecg), p.seconds)
    back = off.stop * POLAR_FRAME
    ecg = ecg.copy()
    ecg[back:] = VARIANTS[p.variant](ecg[back:])
    config = vt_runs.rr_config(config_path)
    readings = vt_runs.stage_readings(ecg, config.detectors[0].stream, off=off)
    back_s, until_s = back / MITDB_FS, back / MITDB_FS + FOLLOW_S
    runs = vt_runs.real_runs(beats, is_pvc)
    false_starts = real_starts = 0
    for e in vt_runs.episodes(config, readings):
        if e.condition != vt or not back_s <= e.start <= until_s:
            continue
        if any(a <= e.start <= b + AFTER_S for a, b in runs):
            real_starts += 1
        else:
            false_starts += 1
    pvc_times = beats[is_pvc] / MITDB_FS
    within = [
        flagged
        for t, flagged in vt_recurrent.pvc_flags(readings)
        if back_s < t <= until_s and not np.any(np.abs(pvc_times - t) <= MATCH_WINDOW_S)
    ]
    before = beats[(beats < off.start * POLAR_FRAME) & (beats >= off.start * POLAR_FRAME - 60 * MITDB_FS)]
    rate = 60.0 * MITDB_FS / float(np.median(np.diff(before))) if len(before) > 2 else float("nan")
    return PutBackResult(p, rate, false_starts, real_starts, sum(within), len(within))


def records_report(config_path: Path, results: list[PutBackResult], vt: str) -> str:
    rows = []
    for speed in (1.0, FAST):
        for s in OFF_S:
            for variant in VARIANTS:
                cell = [
                    r
                    for r in results
                    if (r.put_back.speed, r.put_back.seconds, r.put_back.variant) == (speed, s, variant)
                ]
                rates = [r.rate_bpm for r in cell]
                rows.append(
                    (
                        f"x{speed:g}",
                        f"{min(rates):.0f}-{max(rates):.0f}",
                        f"{s:g}",
                        variant,
                        sum(r.false_starts for r in cell),
                        ", ".join(r.put_back.record for r in cell if r.false_starts) or "-",
                        sum(r.real_starts for r in cell),
                        f"{sum(r.flags for r in cell)} / {sum(r.beats for r in cell)}",
                    )
                )
    return "\n".join(
        [
            f"# A lead put back after a lead-off: the alarms of {config_path}",
            "",
            f"The 12 MIT-BIH records, whole, at their own speed and {FAST:g} x faster; a lead-off (NaN "
            "frames flagged NO_CONTACT) in the middle, after which the ECG is the same, inverted x0.7 or "
            f"x1.5 reshaped; in the {FOLLOW_S:g} s after it, the {vt} starts and the pvc flags (pvc's "
            "defaults with qrs_core) on beats not annotated as PVCs.",
            "",
            table(
                [
                    "speed",
                    "bpm before (median per record, range)",
                    "lead-off (s)",
                    "after it",
                    f"{vt} false starts",
                    "records",
                    "starts at a real run",
                    "pvc flags / beats",
                ],
                rows,
            ),
        ]
    )


PUT_BACK_TSV_HEADER = "record\tspeed\tseconds\tvariant\trate_bpm\tfalse_starts\treal_starts\tflags\tbeats"


def put_back_line(r: PutBackResult) -> str:
    p = r.put_back
    return (
        f"{p.record}\t{p.speed:g}\t{p.seconds:g}\t{p.variant}\t{r.rate_bpm:.0f}\t{r.false_starts}\t"
        f"{r.real_starts}\t{r.flags}\t{r.beats}"
    )


# -- a lead put back moved while the rhythm is faster than before the break --------------------------------


@dataclass(frozen=True, slots=True)
class Faster:
    record: str
    factor: float  # the ECG after the lead-off played this many times faster
    seconds: float
    variant: str


@dataclass(frozen=True, slots=True)
class FasterResult:
    faster: Faster
    rate_before_bpm: float  # the median rate over the minute before the lead-off
    rate_after_bpm: float  # over the `FASTER_FOLLOW_S` after it
    starts: int  # VT starts in those seconds
    real_starts: int  # of them, at an annotated run (sped up with the rest)


def faster_set() -> list[Faster]:
    return [
        Faster(record, factor, s, variant)
        for record in vt_runs.ALL_RECORDS
        for factor in SPEED_UPS
        for s in FASTER_OFF_S
        for variant in VARIANTS
    ]


def faster_after(
    ecg: FloatArray, beats: vt_runs.IntArray, off: range, factor: float, variant: str
) -> tuple[FloatArray, vt_runs.IntArray]:
    """The ECG with what follows the lead-off `off` played `factor` times faster and then `variant`, and
    its beats; before the lead-off's end nothing changes (its frames are NaN when delivered)."""
    back = off.stop * POLAR_FRAME
    after, moved = compressed(ecg[back:], beats[beats >= back] - back, factor)
    spliced: FloatArray = np.concatenate([ecg[:back], VARIANTS[variant](after)])
    return spliced, np.concatenate([beats[beats < back], moved + back])


def faster_record(
    root: Path | None, f: Faster
) -> tuple[FloatArray, vt_runs.IntArray, vt_runs.BoolArray, range]:
    """The case's ECG (the record's first `FASTER_HEAD_S`, spliced), its beats, which are PVCs, and the
    lead-off's frames."""
    raw, annotated, is_pvc = vt_runs.load_record(root, f.record)
    head = min(len(raw), round(FASTER_HEAD_S * MITDB_FS))
    kept = annotated < head
    off = leadoff_frames(head, f.seconds)
    ecg, beats = faster_after(raw[:head], annotated[kept], off, f.factor, f.variant)
    return ecg, beats, is_pvc[kept], off


def _median_rate(beats: vt_runs.IntArray) -> float:
    return 60.0 * MITDB_FS / float(np.median(np.diff(beats))) if len(beats) > 2 else float("nan")


def _faster_job(job: tuple[Path, Path | None, Faster, str]) -> FasterResult:
    config_path, root, f, vt = job
    ecg, beats, is_pvc, off = faster_record(root, f)
    config = vt_runs.rr_config(config_path)
    readings = vt_runs.stage_readings(ecg, config.detectors[0].stream, off=off)
    back = off.stop * POLAR_FRAME
    back_s = back / MITDB_FS
    runs = vt_runs.real_runs(beats, is_pvc)
    starts = [
        e.start
        for e in vt_runs.episodes(config, readings)
        if e.condition == vt and back_s <= e.start <= back_s + FASTER_FOLLOW_S
    ]
    real = sum(any(a <= t <= b + AFTER_S for a, b in runs) for t in starts)
    first = off.start * POLAR_FRAME
    before = beats[(beats < first) & (beats >= first - 60 * MITDB_FS)]
    after = beats[(beats >= back) & (beats < back + FASTER_FOLLOW_S * MITDB_FS)]
    return FasterResult(f, _median_rate(before), _median_rate(after), len(starts), real)


def _rates(values: list[float]) -> str:
    return f"{min(values):.0f}-{max(values):.0f}"


def faster_report(config_path: Path, results: list[FasterResult], vt: str) -> str:
    rows = []
    for factor in SPEED_UPS:
        for s in FASTER_OFF_S:
            for variant in VARIANTS:
                cell = [
                    r
                    for r in results
                    if (r.faster.factor, r.faster.seconds, r.faster.variant) == (factor, s, variant)
                ]
                rows.append(
                    (
                        f"x{factor:g}",
                        f"{s:g}",
                        variant,
                        _rates([r.rate_before_bpm for r in cell]),
                        _rates([r.rate_after_bpm for r in cell]),
                        sum(r.starts for r in cell),
                        ", ".join(f"{r.faster.record} ({r.starts})" for r in cell if r.starts) or "-",
                        sum(r.real_starts for r in cell),
                    )
                )
    return "\n".join(
        [
            f"# A lead put back moved while the rhythm is faster: the alarms of {config_path}",
            "",
            f"The 12 MIT-BIH records, the first {FASTER_HEAD_S:g} s of each; a lead-off (NaN frames flagged "
            "NO_CONTACT) in the middle, after which the ECG is time-compressed (np.interp; the QRS narrows "
            "too) and then the same, inverted x0.7 or x1.5 reshaped; the "
            f"{vt} starts in the {FASTER_FOLLOW_S:g} s after the lead-off.",
            "",
            f"{vt} starts, all cases: {sum(r.starts for r in results)}",
            "",
            table(
                [
                    "faster",
                    "lead-off (s)",
                    "after it",
                    "bpm before (median per record, range)",
                    "bpm after",
                    f"{vt} starts",
                    "records (starts)",
                    "at a real run",
                ],
                rows,
            ),
        ]
    )


FASTER_TSV_HEADER = "record\tfactor\tseconds\tvariant\trate_before_bpm\trate_after_bpm\tstarts\treal_starts"


def faster_line(r: FasterResult) -> str:
    f = r.faster
    return (
        f"{f.record}\t{f.factor:g}\t{f.seconds:g}\t{f.variant}\t{r.rate_before_bpm:.0f}\t"
        f"{r.rate_after_bpm:.0f}\t{r.starts}\t{r.real_starts}"
    )


# -- a wide rhythm that is not VT, sped up after a lead-off ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Wide:
    record: str
    bpm: float  # the rate after the lead-off aimed at
    variant: str


def wide_set(records: tuple[str, ...] = WIDE_RECORDS) -> list[Wide]:
    return [Wide(record, bpm, variant) for record in records for bpm in WIDE_BPM for variant in VARIANTS]


def qrs_kept(ecg: FloatArray, beats: vt_runs.IntArray, factor: float) -> tuple[FloatArray, vt_runs.IntArray]:
    """The ECG with every interval `factor` times shorter but each QRS (-`KEEP_BEFORE_S` .. +`KEEP_AFTER_S`
    around an annotated beat) at its own speed, and its beats: a piecewise-linear time warp. A stretch
    between two QRS spans shorter than they would leave is compressed to nothing: not used here."""
    before, after = round(KEEP_BEFORE_S * MITDB_FS), round(KEEP_AFTER_S * MITDB_FS)
    inside = beats[(beats - before > 0) & (beats + after < len(ecg) - 1)]
    old = [0.0]
    new = [0.0]
    for b in inside:
        lo, hi = float(b - before), float(b + after)
        if lo <= old[-1]:
            continue
        gap = lo - old[-1]  # since the last QRS ended: its new length keeps the interval `factor` shorter
        new.append(new[-1] + max((gap + before + after) / factor - (before + after), 0.0))
        old.append(lo)
        new.append(new[-1] + (hi - lo))
        old.append(hi)
    end = float(len(ecg) - 1)
    new.append(new[-1] + (end - old[-1]) / factor)
    old.append(end)
    times = np.arange(int(new[-1]) + 1, dtype=np.float64)
    warped: FloatArray = np.interp(np.interp(times, new, old), np.arange(len(ecg)), ecg)
    moved = np.round(np.interp(beats.astype(np.float64), old, new)).astype(np.int64)
    return warped, moved


@dataclass(frozen=True, slots=True)
class WideResult:
    wide: Wide
    rate_before_bpm: float
    rate_after_bpm: float  # over the `FASTER_FOLLOW_S` after the lead-off
    starts: int
    real_starts: int  # at an annotated run of PVCs (sped up with the rest)


def _wide_job(job: tuple[Path, Path | None, Wide, str]) -> WideResult:
    config_path, root, w, vt = job
    raw, annotated, is_pvc = vt_runs.load_record(root, w.record)
    head = min(len(raw), round(FASTER_HEAD_S * MITDB_FS))
    kept = annotated < head
    beats, is_pvc = annotated[kept], is_pvc[kept]
    off = leadoff_frames(head, WIDE_OFF_S)
    first, back = off.start * POLAR_FRAME, off.stop * POLAR_FRAME
    rate_before = _median_rate(beats[(beats < first) & (beats >= first - 60 * MITDB_FS)])
    after, moved = qrs_kept(raw[back:head], beats[beats >= back] - back, w.bpm / rate_before)
    ecg: FloatArray = np.concatenate([raw[:back], VARIANTS[w.variant](after)])
    beats = np.concatenate([beats[beats < back], moved + back])
    config = vt_runs.rr_config(config_path)
    readings = vt_runs.stage_readings(ecg, config.detectors[0].stream, off=off)
    back_s = back / MITDB_FS
    runs = vt_runs.real_runs(beats, is_pvc)
    starts = [
        e.start
        for e in vt_runs.episodes(config, readings)
        if e.condition == vt and back_s <= e.start <= back_s + FASTER_FOLLOW_S
    ]
    real = sum(any(a <= t <= b + AFTER_S for a, b in runs) for t in starts)
    rate_after = _median_rate(beats[(beats >= back) & (beats < back + FASTER_FOLLOW_S * MITDB_FS)])
    return WideResult(w, rate_before, rate_after, len(starts), real)


def wide_report(
    config_path: Path, results: list[WideResult], vt: str, records: tuple[str, ...] = WIDE_RECORDS
) -> str:
    rows = []
    for bpm in WIDE_BPM:
        for variant in VARIANTS:
            cell = [r for r in results if (r.wide.bpm, r.wide.variant) == (bpm, variant)]
            rows.append(
                (
                    f"{bpm:g}",
                    variant,
                    _rates([r.rate_before_bpm for r in cell]),
                    _rates([r.rate_after_bpm for r in cell]),
                    sum(r.starts - r.real_starts for r in cell),
                    ", ".join(f"{r.wide.record} ({r.starts})" for r in cell if r.starts) or "-",
                    sum(r.real_starts for r in cell),
                )
            )
    slow = sum(r.starts - r.real_starts for r in results if r.rate_after_bpm < 120.0)
    return "\n".join(
        [
            f"# A rhythm sped up after a lead-off, each QRS kept: the alarms of {config_path}",
            "",
            f"MIT-BIH {', '.join(records)} (paced: 102, 104), the first {FASTER_HEAD_S:g} s of each; a "
            f"lead-off of {WIDE_OFF_S:g} s (NaN frames flagged NO_CONTACT) in the middle, after which the "
            "intervals are shortened to the rate aimed at while each QRS keeps its duration, then the ECG is "
            f"the same, inverted x0.7 or x1.5 reshaped; the {vt} starts in the {FASTER_FOLLOW_S:g} s after "
            "the lead-off (not at an annotated PVC run).",
            "",
            f"{vt} starts not at a run, rate after the lead-off below 120 bpm: {slow}; from 120 bpm: "
            f"{sum(r.starts - r.real_starts for r in results) - slow}",
            "",
            table(
                [
                    "bpm aimed at",
                    "after it",
                    "bpm before (median per record, range)",
                    "bpm after",
                    f"{vt} starts not at a run",
                    "records (starts)",
                    "at a real run",
                ],
                rows,
            ),
        ]
    )


WIDE_TSV_HEADER = "record\tbpm\tvariant\trate_before_bpm\trate_after_bpm\tstarts\treal_starts"


def wide_line(r: WideResult) -> str:
    w = r.wide
    return (
        f"{w.record}\t{w.bpm:g}\t{w.variant}\t{r.rate_before_bpm:.0f}\t{r.rate_after_bpm:.0f}\t{r.starts}\t"
        f"{r.real_starts}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = vt_runs.case_arguments(
        "vt_leadoff", __doc__, "eval/vt-leadoff", config="tools/evaluate/configs/vt-only.toml"
    )
    parser.add_argument("--part", choices=("runs", "records", "faster", "wide", "narrow"), default="runs")
    args = parser.parse_args(argv)
    vt = args.condition
    if args.part in ("wide", "narrow"):
        records = WIDE_RECORDS if args.part == "wide" else NARROW_RECORDS
        wides = wide_set(records)
        done_wide = pool_map(_wide_job, [(args.config, args.data, w, vt) for w in wides], args.jobs)
        write_report(args.out, wide_report(args.config, done_wide, vt, records))
        lines = [WIDE_TSV_HEADER, *(wide_line(r) for r in done_wide)]
    elif args.part == "faster":
        fasters = faster_set()
        sped = pool_map(_faster_job, [(args.config, args.data, f, vt) for f in fasters], args.jobs)
        write_report(args.out, faster_report(args.config, sped, vt))
        lines = [FASTER_TSV_HEADER, *(faster_line(r) for r in sped)]
    elif args.part == "records":
        put_backs = put_back_set()
        done = pool_map(_put_back_job, [(args.config, args.data, p, vt) for p in put_backs], args.jobs)
        write_report(args.out, records_report(args.config, done, vt))
        lines = [PUT_BACK_TSV_HEADER, *(put_back_line(r) for r in done)]
    else:
        cases = case_set(args.data)
        results = pool_map(_case_job, [(args.config, args.data, c, vt) for c in cases], args.jobs)
        write_report(args.out, runs_report(args.config, cases, results, vt))
        lines = [TSV_HEADER, *(case_line(c, r, vt) for c, r in zip(cases, results, strict=True))]
    (args.out / "cases.tsv").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
