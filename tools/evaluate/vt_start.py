"""VT under way when the ECG stream starts (a patient connected while in VT, or an agent restarted during
a VT without its saved templates): is it alarmed, and does a stream's start raise false VT?

    python -m tools.evaluate.vt_start --config tools/evaluate/configs/vt-only.toml \\
        --data /work/shared/datasets --out eval/vt-start --jobs 1 [--part runs|records|cpsc|wide]

A fresh stage builds its beat-shape templates from the first beats it sees: a VT under way then becomes
the "normal" beat (agent.ecg.rr_from_ecg). Each case is a fresh stage and pipeline fed a segment from
its first sample on (`vt_runs.stage_readings`), as after a first connection or a restart whose
templates were not restored (a break over `KEEP_SHAPES_S`).

`--part runs`: `tools.evaluate.vt_runs`' hosts (`HOSTS` per record of `RUNS`, its seed and its splice: one
PVC of the record repeated), a run of `LENGTHS` beats at `RATES_BPM` (from 150 bpm, vt_runs' fast runs,
and 130: 120-150), the stream starting `START_LEAD_S` before the run's beat number `START_BEATS` (1, 3,
10: inside the run, that beat whole). Per case: the run beats the QRS detector found, the delay of the VT
condition's first start from the stream's first sample (up to `vt_runs.AFTER_S` after the run's last
beat), the VT starts after that; `cases.tsv` per case, to compare two branches case by case.

`--part records` / `--part cpsc`: the false-alarm side. MIT-BIH's 12 records (`vt_runs.ALL_RECORDS`) /
CPSC-2021's 18 (lead 0, 200 Hz, held out), each started at `OFFSETS` (shares of its length) and fed for
`STREAM_S`: the VT condition's starts in it, at an annotated run (>= 3 PVCs at > 100 bpm,
`vt_runs.real_runs`) or false.

`--part wide`: wide rhythms that are not VT at a stream's start. `vt_leadoff.WIDE_RECORDS` (paced 102,
104; 105, 108, 114, 121, whose other beats read widest), each from `WIDE_OFFSETS_S`, `WIDE_SOURCE_S` of
it with every interval shortened to `vt_leadoff.WIDE_BPM` (the median rate of that source times a
factor) and each QRS kept (`vt_leadoff.qrs_kept`), then `vt_leadoff.VARIANTS`; fed for `STREAM_S`. The
VT condition's starts not at an annotated run, by the rate reached (the stream's median) and by the rate
in the `START_RATE_S` before each start (a source's first seconds can be faster than its median): below
120 bpm false, from 120 bpm a wide rhythm read as VT is the accepted clinical call (counted).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tools.evaluate import vt_leadoff, vt_runs
from tools.evaluate.datasets import MITDB_FS, dataset_folder
from tools.evaluate.qrs import MATCH_WINDOW_S, match
from tools.evaluate.replay import pool_map
from tools.evaluate.report import table, write_report
from tools.evaluate.vt_runs import AFTER_S, BoolArray, Case, FloatArray, IntArray

RUNS = vt_leadoff.RUNS
HOSTS = vt_runs.HOSTS
LENGTHS = (15, 40)
RATES_BPM = (130, 150, 200)
START_BEATS = (1, 3, 10)  # the run's beat (0: its first) the stream starts just before
START_LEAD_S = 0.15  # that beat's QRS whole in the stream (agent.ecg.qrs_width reads 0.08 s before R)
OFFSETS = (0.0, 0.25, 0.5, 0.75)  # a record's starts, shares of its length
STREAM_S = 120.0  # each start fed this long (the width is given for 32 beats: 10-40 s)
WIDE_OFFSETS_S = (0.0, 450.0)
WIDE_SOURCE_S = 300.0
WIDE_LINE_BPM = 120.0
START_RATE_S = 8.0  # the rate at a start: the annotated beats of the seconds before it


@dataclass(frozen=True, slots=True)
class StartCase:
    case: Case
    start_beat: int

    def key(self) -> str:
        c = self.case
        return f"{c.record}\t{c.host}\t{c.length}\t{c.rate_bpm}\t{self.start_beat}"


@dataclass(frozen=True, slots=True)
class StartResult:
    found: int  # run beats from the stream's start on that the QRS detector found
    beats_left: int  # run beats from the stream's start on
    delay_s: float | None  # the VT condition's first start in the run's window, from the stream's start
    outside: int  # VT starts after that window


def case_set(root: Path | None) -> list[StartCase]:
    return [
        StartCase(Case(record, host, donor, length, rate), k)
        for record in RUNS
        for host, donor in vt_runs.draw_hosts(root, record, count=HOSTS)
        for length in LENGTHS
        for rate in RATES_BPM
        for k in START_BEATS
        if k < length
    ]


def _case_job(job: tuple[Path, Path | None, StartCase, str]) -> StartResult:
    config_path, root, c, vt = job
    config = vt_runs.rr_config(config_path)
    spliced = vt_runs.splice(root, c.case)
    run_beats = spliced.beats[spliced.is_run]
    start = int(run_beats[c.start_beat]) - round(START_LEAD_S * MITDB_FS)
    readings = vt_runs.stage_readings(spliced.ecg[start:], config.detectors[0].stream)
    peaks = vt_runs.beat_samples(readings)
    inside = spliced.beats >= start
    refs, _ = match(spliced.beats[inside] - start, peaks, round(MATCH_WINDOW_S * MITDB_FS))
    found = int(spliced.is_run[inside][refs].sum())
    until_s = (spliced.last - start) / MITDB_FS + AFTER_S
    starts = [e.start for e in vt_runs.episodes(config, readings) if e.condition == vt]
    within = [t for t in starts if t <= until_s]
    delay = min(within) if within else None
    return StartResult(found, len(run_beats) - c.start_beat, delay, len(starts) - len(within))


def runs_report(config_path: Path, cases: list[StartCase], results: list[StartResult], vt: str) -> str:
    pairs = list(zip(cases, results, strict=True))
    rows = []
    for rate in RATES_BPM:
        for length in LENGTHS:
            for k in START_BEATS:
                cell = [
                    r for c, r in pairs if (c.case.rate_bpm, c.case.length, c.start_beat) == (rate, length, k)
                ]
                delays = [r.delay_s for r in cell if r.delay_s is not None]
                rows.append(
                    (
                        rate,
                        length,
                        k,
                        f"{len(delays)} / {len(cell)}",
                        f"{np.median(delays):.2f} s" if delays else "-",
                        f"{max(delays):.2f} s" if delays else "-",
                        f"{sum(r.found for r in cell)} / {sum(r.beats_left for r in cell)}",
                        sum(r.outside for r in cell),
                    )
                )
    alarmed = sum(r.delay_s is not None for r in results)
    fast = [r for c, r in pairs if c.case.rate_bpm >= 150]
    return "\n".join(
        [
            f"# VT under way at the stream's start: the alarms of {config_path}",
            "",
            f"Runs of one PVC of the record spliced after vt_runs' hosts ({HOSTS} per record of "
            f"{', '.join(RUNS)}, seed {vt_runs.SEED}); a fresh stage and pipeline fed from "
            f"{START_LEAD_S:g} s before the run's given beat (0: its first) on. Delays from the stream's "
            "first sample to when the reading that started the alarm left the stage; a start counts up "
            f"to {AFTER_S:g} s after the run's last beat.",
            "",
            f"VT-at-start cases alarmed by {vt}: {alarmed} / {len(results)} "
            f"(from 150 bpm: {sum(r.delay_s is not None for r in fast)} / {len(fast)})",
            "",
            table(
                [
                    "bpm",
                    "run beats",
                    "starts before beat",
                    "alarmed",
                    "median delay",
                    "max delay",
                    "run beats found",
                    f"{vt} starts after",
                ],
                rows,
            ),
        ]
    )


def case_line(c: StartCase, r: StartResult) -> str:
    delay = f"{r.delay_s:.2f}" if r.delay_s is not None else "-"
    return f"{c.key()}\t{r.found}\t{r.beats_left}\t{delay}\t{r.outside}"


TSV_HEADER = "record\thost\tlength\trate_bpm\tstart_beat\tfound\tbeats_left\tdelay_s\toutside"


# -- the false-alarm side: records started at several offsets ------------------------------------------


@dataclass(frozen=True, slots=True)
class Started:
    record: str
    offset: float  # the start, share of the record's length
    start_s: float  # the start, s into the record
    rate_bpm: float  # the median rate over the stream's annotated beats
    true_starts: list[float]  # VT starts at an annotated run (s from the stream's start)
    false_starts: list[float]


def judge_start(
    config_path: Path,
    name: str,
    ecg: FloatArray,
    fs: float,
    beats: IntArray,
    is_pvc: BoolArray,
    offset: float,
    vt: str,
) -> Started:
    """`ecg` fed to a fresh stage from `offset` of its length for `STREAM_S`: the VT starts in it."""
    length = round(STREAM_S * fs)
    start = max(0, min(round(offset * len(ecg)), len(ecg) - length))
    stop = min(len(ecg), start + length)
    inside = (beats >= start) & (beats < stop)
    kept, pvc = beats[inside] - start, is_pvc[inside]
    config = vt_runs.rr_config(config_path)
    readings = vt_runs.stage_readings(ecg[start:stop], config.detectors[0].stream, fs)
    runs = vt_runs.real_runs(kept, pvc, fs)
    true_starts: list[float] = []
    false_starts: list[float] = []
    for e in vt_runs.episodes(config, readings):
        if e.condition != vt:
            continue
        (true_starts if any(a <= e.start <= b + AFTER_S for a, b in runs) else false_starts).append(e.start)
    rate = 60.0 * fs / float(np.median(np.diff(kept))) if len(kept) > 2 else float("nan")
    return Started(name, offset, start / fs, rate, true_starts, false_starts)


def _record_job(job: tuple[Path, Path | None, str, float, str]) -> Started:
    config_path, root, record, offset, vt = job
    ecg, beats, is_pvc = vt_runs.load_record(root, record)
    return judge_start(config_path, record, ecg, MITDB_FS, beats, is_pvc, offset, vt)


def _cpsc_job(job: tuple[Path, Path, float, str]) -> Started:
    config_path, header, offset, vt = job
    ecg, fs, beats, is_pvc = vt_runs.load_cpsc_record(header)
    return judge_start(config_path, header.stem, ecg, fs, beats, is_pvc, offset, vt)


def records_report(config_path: Path, results: list[Started], vt: str, title: str) -> str:
    rows = [
        (
            f"{o:g}",
            f"{min(r.rate_bpm for r in cell):.0f}-{max(r.rate_bpm for r in cell):.0f}",
            sum(len(r.false_starts) for r in cell),
            ", ".join(f"{r.record} at {r.start_s:.0f} s (+{t:.1f} s)" for r in cell for t in r.false_starts)
            or "-",
            sum(len(r.true_starts) for r in cell),
        )
        for o in OFFSETS
        for cell in [[r for r in results if r.offset == o]]
    ]
    false = sum(len(r.false_starts) for r in results)
    return "\n".join(
        [
            f"# Streams started at several offsets: the alarms of {config_path}",
            "",
            f"{title}: each record started at {', '.join(f'{o:g}' for o in OFFSETS)} of its length (a fresh "
            f"stage and pipeline) and fed for {STREAM_S:g} s; the {vt} starts in it, at an annotated run "
            "(>= 3 PVCs at > 100 bpm) or false.",
            "",
            f"False {vt} starts: {false} (in {len(results)} streams)",
            "",
            table(
                [
                    "start (share of the record)",
                    "bpm (median per stream, range)",
                    "false starts",
                    "where",
                    "at a real run",
                ],
                rows,
            ),
        ]
    )


STARTED_TSV_HEADER = "record\toffset\tstart_s\trate_bpm\ttrue_starts\tfalse_starts"


def started_line(r: Started) -> str:
    return (
        f"{r.record}\t{r.offset:g}\t{r.start_s:.1f}\t{r.rate_bpm:.0f}\t"
        f"{','.join(f'{t:.2f}' for t in r.true_starts)}\t{','.join(f'{t:.2f}' for t in r.false_starts)}"
    )


# -- wide rhythms that are not VT at a stream's start ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class WideStart:
    record: str
    offset_s: float
    bpm: float  # the rate aimed at
    variant: str


@dataclass(frozen=True, slots=True)
class WideStartResult:
    wide: WideStart
    rate_before_bpm: float  # the source's median rate
    rate_bpm: float  # the stream's
    starts: int
    real_starts: int  # at an annotated run of PVCs (sped up with the rest)
    start_rates_bpm: tuple[float, ...]  # at each start not at a run: the rate just before it (`rate_at`)


def rate_at(beats: IntArray, t: float, fs: float = MITDB_FS) -> float:
    """The median rate of the annotated beats in the `START_RATE_S` before `t` (s): a stream's mean rate
    can be under 120 bpm while its first seconds, where the width is read, are above."""
    near = beats[(beats >= (t - START_RATE_S) * fs) & (beats <= t * fs)]
    return vt_leadoff._median_rate(near)


def wide_set() -> list[WideStart]:
    return [
        WideStart(record, offset, bpm, variant)
        for record in vt_leadoff.WIDE_RECORDS
        for offset in WIDE_OFFSETS_S
        for bpm in vt_leadoff.WIDE_BPM
        for variant in vt_leadoff.VARIANTS
    ]


def _wide_job(job: tuple[Path, Path | None, WideStart, str]) -> WideStartResult:
    config_path, root, w, vt = job
    raw, annotated, is_pvc = vt_runs.load_record(root, w.record)
    lo, hi = round(w.offset_s * MITDB_FS), round((w.offset_s + WIDE_SOURCE_S) * MITDB_FS)
    inside = (annotated >= lo) & (annotated < hi)
    beats, pvc = annotated[inside] - lo, is_pvc[inside]
    rate_before = vt_leadoff._median_rate(beats)
    warped, moved = vt_leadoff.qrs_kept(raw[lo:hi], beats, w.bpm / rate_before)
    stop = min(len(warped), round(STREAM_S * MITDB_FS))
    ecg: FloatArray = vt_leadoff.VARIANTS[w.variant](warped[:stop])
    kept = moved < stop
    config = vt_runs.rr_config(config_path)
    readings = vt_runs.stage_readings(ecg, config.detectors[0].stream)
    runs = vt_runs.real_runs(moved[kept], pvc[kept])
    starts = [e.start for e in vt_runs.episodes(config, readings) if e.condition == vt]
    at_run = [any(a <= t <= b + AFTER_S for a, b in runs) for t in starts]
    rates = tuple(rate_at(moved[kept], t) for t, real in zip(starts, at_run, strict=True) if not real)
    rate = vt_leadoff._median_rate(moved[kept])
    return WideStartResult(w, rate_before, rate, len(starts), sum(at_run), rates)


def wide_report(config_path: Path, results: list[WideStartResult], vt: str) -> str:
    rows = []
    for bpm in vt_leadoff.WIDE_BPM:
        for variant in vt_leadoff.VARIANTS:
            cell = [r for r in results if (r.wide.bpm, r.wide.variant) == (bpm, variant)]
            rows.append(
                (
                    f"{bpm:g}",
                    variant,
                    vt_leadoff._rates([r.rate_bpm for r in cell]),
                    sum(r.starts - r.real_starts for r in cell),
                    ", ".join(
                        f"{r.wide.record}@{r.wide.offset_s:g} ({r.starts}"
                        + "".join(f", {rate:.0f} bpm" for rate in r.start_rates_bpm)
                        + ")"
                        for r in cell
                        if r.starts
                    )
                    or "-",
                    sum(r.real_starts for r in cell),
                )
            )
    slow = sum(r.starts - r.real_starts for r in results if r.rate_bpm < WIDE_LINE_BPM)
    fast = sum(r.starts - r.real_starts for r in results) - slow
    slow_at = sum(rate < WIDE_LINE_BPM for r in results for rate in r.start_rates_bpm)
    return "\n".join(
        [
            f"# A wide rhythm sped up, at a stream's start: the alarms of {config_path}",
            "",
            f"MIT-BIH {', '.join(vt_leadoff.WIDE_RECORDS)} (paced: 102, 104), from "
            f"{', '.join(f'{o:g}' for o in WIDE_OFFSETS_S)} s, {WIDE_SOURCE_S:g} s of each with the "
            "intervals shortened to the rate aimed at while each QRS keeps its duration, then the same, "
            f"inverted x0.7 or x1.5 reshaped; a fresh stage and pipeline fed the first {STREAM_S:g} s; the "
            f"{vt} starts in it (not at an annotated PVC run).",
            "",
            f"{vt} starts not at a run, stream below {WIDE_LINE_BPM:g} bpm: {slow}; "
            f"from {WIDE_LINE_BPM:g} bpm (accepted): {fast}",
            "",
            f"The same by the rate in the {START_RATE_S:g} s before each start: below {WIDE_LINE_BPM:g} bpm "
            f"{slow_at}, from it {fast + slow - slow_at}",
            "",
            table(
                [
                    "bpm aimed at",
                    "variant",
                    "bpm reached",
                    f"{vt} starts not at a run",
                    "records (starts)",
                    "at a real run",
                ],
                rows,
            ),
        ]
    )


WIDE_TSV_HEADER = (
    "record\toffset_s\tbpm\tvariant\trate_before_bpm\trate_bpm\tstarts\treal_starts\tstart_rates_bpm"
)


def wide_line(r: WideStartResult) -> str:
    w = r.wide
    return (
        f"{w.record}\t{w.offset_s:g}\t{w.bpm:g}\t{w.variant}\t{r.rate_before_bpm:.0f}\t{r.rate_bpm:.0f}\t"
        f"{r.starts}\t{r.real_starts}\t{','.join(f'{rate:.0f}' for rate in r.start_rates_bpm)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = vt_runs.case_arguments(
        "vt_start", __doc__, "eval/vt-start", config="tools/evaluate/configs/vt-only.toml"
    )
    parser.add_argument("--part", choices=("runs", "records", "cpsc", "wide"), default="runs")
    args = parser.parse_args(argv)
    vt = args.condition
    if args.part == "wide":
        wides = pool_map(_wide_job, [(args.config, args.data, w, vt) for w in wide_set()], args.jobs)
        write_report(args.out, wide_report(args.config, wides, vt))
        lines = [WIDE_TSV_HEADER, *(wide_line(r) for r in wides)]
    elif args.part in ("records", "cpsc"):
        if args.part == "records":
            jobs = [(args.config, args.data, r, o, vt) for r in vt_runs.ALL_RECORDS for o in OFFSETS]
            done = pool_map(_record_job, jobs, args.jobs)
            title = "MIT-BIH's 12 records, MLII, 360 Hz"
        else:
            folder = dataset_folder(args.data, "ECG/cpsc2021_sample", "*.hea", "CPSC-2021")
            headers = sorted(folder.glob("*.hea"))
            done = pool_map(_cpsc_job, [(args.config, h, o, vt) for h in headers for o in OFFSETS], args.jobs)
            title = "Held out: CPSC-2021, lead 0, 200 Hz (AF and other rhythms)"
        write_report(args.out, records_report(args.config, done, vt, title))
        lines = [STARTED_TSV_HEADER, *(started_line(r) for r in done)]
    else:
        cases = case_set(args.data)
        results = pool_map(_case_job, [(args.config, args.data, c, vt) for c in cases], args.jobs)
        write_report(args.out, runs_report(args.config, cases, results, vt))
        lines = [TSV_HEADER, *(case_line(c, r) for c, r in zip(cases, results, strict=True))]
    (args.out / "cases.tsv").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
