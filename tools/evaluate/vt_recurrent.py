"""Recurrent ventricular tachycardia: is a second run alarmed when VT comes back after a few sinus beats?

    python -m tools.evaluate.vt_recurrent --config tools/evaluate/configs/vt-only.toml \\
        --data /work/shared/datasets --out eval/vt-recurrent --jobs 1

An outside review found a VT that came back after a short sinus stretch not alarmed (MIT-BIH 106: 60 s
of VT, no VT alarm): during the first run the VT beats became the stage's shape and core templates, so
the second run's beats read normal. The cases are spliced as `tools.evaluate.vt_runs` splices one run,
on its hosts and donors (`vt_runs.draw_hosts`: records 106, 119, 200, 8 hosts each, seed 2015):

- a first run of `FIRST_LENGTHS` beats of the donor PVC at `RATE_BPM` after the host (`vt_runs.splice_run`);
- then `SINUS_BEATS` sinus beats: the record's own beats from the one it resumes at (the first at least
  max(the host's RR, 0.55 s) after the run's last beat, `vt_runs.resumed_beat`), the host's own following
  rhythm (the beats under the first run are dropped);
- the last of those beats is the host of a second run of `SECOND_LENGTHS` beats at `RATE_BPM`, spliced the
  same way, after which the record resumes again;
- the segment runs from `vt_runs.PRE_S` before the host to `vt_runs.POST_S` after the second resumed
  beat, through the daemon's ECG -> RR stage and the pipeline (`vt_runs.stage_readings`, `episodes`).
  A case whose segment does not fit in the record (two hosts near its end) is left out and counted.

Per case: whether the VT condition (`--condition`) started within the first run's window (its first beat
to `vt_runs.AFTER_S` after its last) and how long after its first beat; for the second run, the share of
its beats whose R peak lies inside a VT episode (coverage), whether a START came within its window, and
whether the episode of the first run was still on at its first beat (continued); whether the condition
is on at the segment's end. The second run counts as *alarmed* when a START came in its window or the
coverage is at least `COVERED` (80 %). The report gives the cells (first length x sinus beats x second
length) and every case, and `cases.tsv` beside it one line per case, to compare two branches case by case.

`--part lead` checks the other side, a real change of every beat's shape that the templates must follow:
each of the 12 MIT-BIH records (`vt_runs.ALL_RECORDS`, whole) with its ECG times `LEAD_GAIN` (-0.7: the
QRS inverted and smaller, a lead moved) from its middle on, through the same stage and pipeline; per
record the VT condition's starts after the change, and the beats after it that the `pvc` detector (its
defaults, with qrs_core) flags among those not annotated as PVCs, within the first `FOLLOW_BEATS` (32)
beats and after them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.config.schema import AgentConfig, DetectorConfig
from agent.detectors import WindowBlock, build_detector
from tools.evaluate import vt_runs
from tools.evaluate.datasets import MITDB_FS, T0
from tools.evaluate.qrs import MATCH_WINDOW_S, match
from tools.evaluate.replay import Episode, pool_map
from tools.evaluate.report import table, write_report
from tools.evaluate.vt_runs import BoolArray, FloatArray, IntArray

FIRST_LENGTHS = (15, 40, 100)
SINUS_BEATS = (2, 5, 12)
SECOND_LENGTHS = (30, 100)
RATE_BPM = 150
MAX_RESUME_S = 3.0  # room for the resumed beat after a run (the host's RR, > 0.55 s)
LEAD_GAIN = -0.7  # a lead moved: from the record's middle on its QRS inverted and smaller
FOLLOW_BEATS = 32  # the templates' length: the beats after a change of shape they take to follow it
COVERED = 0.8  # a second run whose beats are this much inside a VT episode counts as alarmed


@dataclass(frozen=True, slots=True)
class RecurrentCase:
    record: str
    host: int  # the annotated normal beat (sample) the first run follows
    donor: int  # the annotated PVC whose ECG every beat of both runs is
    first: int  # beats of the first run
    sinus: int  # sinus beats between the runs
    second: int  # beats of the second run


@dataclass(frozen=True, slots=True)
class Recurrent:
    ecg: FloatArray  # the case's segment
    beats: IntArray  # every beat in it, sorted (samples)
    is_run: BoolArray
    runs: tuple[tuple[int, int], tuple[int, int]]  # (first beat, last beat) of each run (samples)
    second_beats: IntArray  # the second run's beats (samples)


def case_set(root: Path | None) -> list[RecurrentCase]:
    return [
        RecurrentCase(record, host, donor, first, sinus, second)
        for record in vt_runs.RECORDS
        for host, donor in vt_runs.draw_hosts(root, record)
        for first in FIRST_LENGTHS
        for sinus in SINUS_BEATS
        for second in SECOND_LENGTHS
    ]


def splice(root: Path | None, case: RecurrentCase) -> Recurrent | None:
    """The case's segment (None: it does not fit in the record)."""
    ecg, beats, _ = vt_runs.load_record(root, case.record)
    fs = MITDB_FS
    interval = round(60.0 / RATE_BPM * fs)
    out = ecg.copy()
    first = case.host + interval * np.arange(1, case.first + 1)
    resume = vt_runs.resumed_beat(beats, case.host, int(first[-1]))
    vt_runs.splice_run(out, ecg, case.donor, case.host, first, resume)
    last_sinus = int(np.searchsorted(beats, resume)) + case.sinus - 1
    if last_sinus >= len(beats):
        return None
    second_host = int(beats[last_sinus])  # the second run's host: the last sinus beat
    second = second_host + interval * np.arange(1, case.second + 1)
    if int(second[-1]) + round(MAX_RESUME_S * fs) > int(beats[-1]):  # no beat to resume at
        return None
    resume_again = vt_runs.resumed_beat(beats, second_host, int(second[-1]))
    vt_runs.splice_run(out, ecg, case.donor, second_host, second, resume_again)
    kept = beats[
        (beats <= case.host) | ((beats >= resume) & (beats <= second_host)) | (beats >= resume_again)
    ]
    start, stop = case.host - round(vt_runs.PRE_S * fs), resume_again + round(vt_runs.POST_S * fs)
    if stop > len(ecg):
        return None
    every = np.concatenate([kept, first, second])
    order = np.argsort(every, kind="stable")
    is_run = np.arange(len(every))[order] >= len(kept)
    every = every[order]
    inside = (every >= start) & (every < stop)
    runs = (
        (int(first[0]) - start, int(first[-1]) - start),
        (int(second[0]) - start, int(second[-1]) - start),
    )
    return Recurrent(out[start:stop], every[inside] - start, is_run[inside], runs, second - start)


@dataclass(frozen=True, slots=True)
class RecurrentResult:
    case: RecurrentCase
    fits: bool  # False: the segment did not fit in the record, nothing else is set
    found: int = 0  # beats of both runs the QRS detector found
    first_delay: float | None = None  # the first START in the first run's window, s from its first beat
    second_start: float | None = None  # the same for the second run
    continued: bool = False  # an episode on at the second run's first beat
    coverage: float = 0.0  # share of the second run's beats inside a VT episode
    on_at_end: bool = False  # a VT episode still on at the segment's end

    @property
    def second_alarmed(self) -> bool:
        return self.second_start is not None or self.coverage >= COVERED


def judge(
    found_episodes: list[Episode],
    runs: tuple[tuple[int, int], tuple[int, int]],
    second_beats: IntArray,
    end_s: float,
) -> tuple[float | None, float | None, bool, float, bool]:
    """(first run's delay, second run's start delay, continued, coverage, on at the end) of one case's VT
    episodes (s from the segment's start; runs and beats in samples)."""
    (a1, b1), (a2, b2) = ((a / MITDB_FS, b / MITDB_FS) for a, b in runs)
    starts = [e.start for e in found_episodes]
    first = [t - a1 for t in starts if a1 <= t <= b1 + vt_runs.AFTER_S]
    second = [t - a2 for t in starts if a2 <= t <= b2 + vt_runs.AFTER_S]
    continued = any(e.start < a2 and (e.end is None or e.end > a2) for e in found_episodes)
    times = second_beats / MITDB_FS
    inside = np.zeros(len(times), dtype=bool)
    for e in found_episodes:
        inside |= (times >= e.start) & (times < (e.end if e.end is not None else np.inf))
    on_at_end = any(e.end is None or e.end >= end_s for e in found_episodes)
    return (
        first[0] if first else None,
        second[0] if second else None,
        continued,
        float(inside.mean()),
        on_at_end,
    )


def _case_job(job: tuple[Path, Path | None, RecurrentCase, str]) -> RecurrentResult:
    config_path, root, case, vt = job
    spliced = splice(root, case)
    if spliced is None:
        return RecurrentResult(case, fits=False)
    config: AgentConfig = vt_runs.rr_config(config_path)
    beats = vt_runs.stage_readings(spliced.ecg, config.detectors[0].stream)
    refs, _ = match(spliced.beats, vt_runs.beat_samples(beats), round(MATCH_WINDOW_S * MITDB_FS))
    found = int(spliced.is_run[refs].sum())
    found_episodes = [e for e in vt_runs.episodes(config, beats) if e.condition == vt]
    end_s = len(spliced.ecg) / MITDB_FS
    first, second, continued, coverage, on_at_end = judge(
        found_episodes, spliced.runs, spliced.second_beats, end_s
    )
    return RecurrentResult(case, True, found, first, second, continued, coverage, on_at_end)


# -- the report ----------------------------------------------------------------------------------------------


def _median(values: list[float]) -> str:
    return f"{np.median(values):.1f} s" if values else "-"


def cell_rows(results: list[RecurrentResult]) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for first in FIRST_LENGTHS:
        for sinus in SINUS_BEATS:
            for second in SECOND_LENGTHS:
                cell = [
                    r
                    for r in results
                    if r.fits and (r.case.first, r.case.sinus, r.case.second) == (first, sinus, second)
                ]
                if not cell:
                    continue
                delays = [r.first_delay for r in cell if r.first_delay is not None]
                n = len(cell)
                rows.append(
                    (
                        first,
                        sinus,
                        second,
                        f"{sum(r.found for r in cell)} / {(first + second) * n}",
                        f"{len(delays)} / {n}, {_median(delays)}",
                        f"{sum(r.second_alarmed for r in cell)} / {n}",
                        f"{sum(r.second_start is not None for r in cell)} / {n}",
                        f"{sum(r.continued for r in cell)} / {n}",
                        f"{100 * np.median([r.coverage for r in cell]):.0f} %",
                        f"{sum(r.on_at_end for r in cell)} / {n}",
                    )
                )
    return rows


def case_line(r: RecurrentResult) -> str:
    """One tab-separated line: the case, then its figures (cases.tsv)."""
    c = r.case
    head = f"{c.record}\t{c.host}\t{c.donor}\t{c.first}\t{c.sinus}\t{c.second}"
    if not r.fits:
        return head + "\tno room"

    def delay(d: float | None) -> str:
        return "-" if d is None else f"{d:.2f}"

    return (
        f"{head}\t{r.found}\t{delay(r.first_delay)}\t{delay(r.second_start)}\t{int(r.continued)}\t"
        f"{r.coverage:.3f}\t{int(r.second_alarmed)}\t{int(r.on_at_end)}"
    )


TSV_HEADER = "\t".join(
    [
        "record",
        "host",
        "donor",
        "first",
        "sinus",
        "second",
        "found",
        "first_delay_s",
        "second_start_s",
        "continued",
        "coverage",
        "second_alarmed",
        "on_at_end",
    ]
)


def report(config_path: Path, results: list[RecurrentResult], vt: str) -> str:
    fitting = [r for r in results if r.fits]
    alarmed = sum(r.second_alarmed for r in fitting)
    first_alarmed = sum(r.first_delay is not None for r in fitting)
    return "\n".join(
        [
            f"# Recurrent VT: the alarms of {config_path}",
            "",
            f"{len(results)} cases ({len(vt_runs.RECORDS)} records x {vt_runs.HOSTS} hosts x first run "
            f"{'/'.join(map(str, FIRST_LENGTHS))} beats x {'/'.join(map(str, SINUS_BEATS))} sinus beats x "
            f"second run {'/'.join(map(str, SECOND_LENGTHS))} beats, all at {RATE_BPM} bpm); "
            f"{len(results) - len(fitting)} do not fit in their record and are left out.",
            "",
            f"First runs alarmed by {vt}: {first_alarmed} / {len(fitting)}. Second runs alarmed (a START in "
            f"their window, or >= {100 * COVERED:.0f} % of their beats inside an episode): {alarmed} / "
            f"{len(fitting)}.",
            "",
            table(
                [
                    "first",
                    "sinus",
                    "second",
                    "run beats found",
                    "first run alarmed, median delay",
                    "second alarmed",
                    "START in second",
                    "on at second's first beat",
                    "median coverage",
                    "on at the end",
                ],
                cell_rows(results),
            ),
        ]
    )


# -- a lead moved: the templates must follow ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeadResult:
    record: str
    vt_starts: int  # VT starts after the change
    early_flags: int  # beats not annotated PVC flagged by pvc within `FOLLOW_BEATS` of the change
    late_flags: int  # ... and after them
    late_beats: int  # beats not annotated PVC after those


def pvc_flags(beats: list[vt_runs.Beat]) -> list[tuple[float, bool]]:
    """(R time s, flagged) of each beat the stage reported, judged by a `pvc` detector of its defaults on
    rr, qrs_shape and qrs_core, one beat per call as the pipeline hands them over."""
    channels = ("rr", "qrs_shape", "qrs_core")
    pvc = build_detector(DetectorConfig("pvc", "pvc", "rr", channels), 1.0)
    out = []
    for i, b in enumerate(beats):
        r = b.reading
        if r.channels[0] != "rr" or not np.isfinite(r.values[0, 0]):
            continue
        got = dict(zip(r.channels, r.values[0], strict=False))
        row = np.array([[[got["rr"], got.get("qrs_shape", np.nan), got.get("qrs_core", np.nan)]]])
        score = float(pvc.score(WindowBlock(row, np.arange(1), np.array([float(i)]), 1)).scores[0])
        out.append((r.wall_time - T0, score > pvc.threshold))
    return out


def _lead_job(job: tuple[Path, Path | None, str, str]) -> LeadResult:
    config_path, root, record, vt = job
    ecg, annotated, is_pvc = vt_runs.load_record(root, record)
    at = len(ecg) // 2
    moved = ecg.copy()
    moved[at:] *= LEAD_GAIN
    config = vt_runs.rr_config(config_path)
    beats = vt_runs.stage_readings(moved, config.detectors[0].stream)
    at_s = at / MITDB_FS
    starts = sum(e.start > at_s for e in vt_runs.episodes(config, beats) if e.condition == vt)
    pvc_times = annotated[is_pvc] / MITDB_FS
    after = [(t, flagged) for t, flagged in pvc_flags(beats) if t > at_s]
    normal = [f for t, f in after if not np.any(np.abs(pvc_times - t) <= MATCH_WINDOW_S)]
    early, late = normal[:FOLLOW_BEATS], normal[FOLLOW_BEATS:]
    return LeadResult(record, starts, sum(early), sum(late), len(late))


def lead_report(config_path: Path, results: list[LeadResult], vt: str) -> str:
    rows = [(r.record, r.vt_starts, r.early_flags, f"{r.late_flags} / {r.late_beats}") for r in results]
    rows.append(
        (
            "all",
            sum(r.vt_starts for r in results),
            sum(r.early_flags for r in results),
            f"{sum(r.late_flags for r in results)} / {sum(r.late_beats for r in results)}",
        )
    )
    return "\n".join(
        [
            f"# A lead moved: the alarms of {config_path}",
            "",
            f"The 12 MIT-BIH records, ECG times {LEAD_GAIN:g} from the middle on; pvc at its defaults with "
            "qrs_core; beats not annotated as PVCs.",
            "",
            table(
                [
                    "record",
                    f"{vt} starts after the change",
                    f"pvc flags, first {FOLLOW_BEATS} beats",
                    "pvc flags after them / beats",
                ],
                rows,
            ),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = vt_runs.case_arguments(
        "vt_recurrent", __doc__, "eval/vt-recurrent", config="tools/evaluate/configs/vt-only.toml"
    )
    parser.add_argument(
        "--part", choices=("recurrent", "lead"), default="recurrent", help="the two-run cases or a lead moved"
    )
    args = parser.parse_args(argv)
    if args.part == "lead":
        jobs = [(args.config, args.data, r, args.condition) for r in vt_runs.ALL_RECORDS]
        write_report(args.out, lead_report(args.config, pool_map(_lead_job, jobs, args.jobs), args.condition))
        return 0
    cases = case_set(args.data)
    results = pool_map(_case_job, [(args.config, args.data, c, args.condition) for c in cases], args.jobs)
    write_report(args.out, report(args.config, results, args.condition))
    (args.out / "cases.tsv").write_text("\n".join([TSV_HEADER, *(case_line(r) for r in results)]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
