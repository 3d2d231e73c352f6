"""VT just after a config reload or an agent restart: is a run alarmed when the beats stage was rebuilt
just before it, with its templates handed over (agent.ecg.kept_shapes) or afresh?

    python -m tools.evaluate.vt_reload --config tools/evaluate/configs/vt-only.toml \\
        --data /work/shared/datasets --out eval/vt-reload --jobs 1 [--part runs|records|cpsc]

A reload ends the session (its sources close) and starts a new one with a new stage; a restart does the
same across processes, the templates going through `pipeline.json`. Here the stage is rebuilt as the
session rebuilds it (`RrFromEcg(..., kept=...)`), the frames of the break not delivered:

- `reload`: a break of `RELOAD_S` (the sources closed and opened again), the templates handed in memory
  (`RrFromEcg.handover`, `kept_shapes.adopted`);
- `restart`: a break of `RESTART_S` (systemd's RestartSec=5 and the start), the templates saved at the
  stop (`kept_shapes.saved`, through JSON, `kept_shapes.restored`, `adopted` with the first frame's time);
- `crash`: the same break, the templates of the last save before it (`CRASH_SAVED_S` earlier: the
  heartbeat's, a watchdog kill or a crash);
- `long`: a restart after `LONG_S` (> `KEEP_SHAPES_S`): must behave as with no hand-over.

`main` rebuilds the stage afresh (no hand-over), the code before. The pipeline (detectors, alarms) goes on
across the break: the daemon saves its state and carries its episodes.

`--part runs`: `tools.evaluate.vt_runs`' hosts (as `vt_leadoff`: records `RUNS`, 8 hosts each, room for
100 beats), a run of `LENGTHS` beats at `RATE_BPM`, its first beat `AFTER_BREAK_S` (0, 1, 3 s) after the
first frame of the new stage. Per case: the VT condition's delay (a start up to `vt_runs.AFTER_S` after
the run's last beat counts) and starts outside the run; `cases.tsv` beside the report.

`--part records` / `cpsc`: MIT-BIH's 12 records (`vt_runs.ALL_RECORDS`) / CPSC-2021's 18, whole, with a
`reload` every `EVERY_S` (300 s): VT starts at an annotated run (`vt_runs.real_runs`) and false ones,
with no reload, with reloads on main, with reloads and the hand-over.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.config.schema import BeatsConfig
from agent.ecg import kept_shapes
from agent.ecg.kept_shapes import Handed, KeptShapes
from agent.ecg.rr_from_ecg import RrFromEcg
from agent.readings import Reading
from tools.evaluate import vt_runs
from tools.evaluate.datasets import MITDB_FS, dataset_folder
from tools.evaluate.qrs import MATCH_WINDOW_S, POLAR_FRAME, match
from tools.evaluate.replay import pool_map
from tools.evaluate.report import table, write_report
from tools.evaluate.vt_leadoff import HOSTS, HOSTS_ROOM_S, LENGTHS, RATE_BPM, RUNS, frames_before
from tools.evaluate.vt_runs import AFTER_S, Beat, BoolArray, Case, FloatArray, IntArray

RELOAD_S = 2.0
RESTART_S = 10.0
CRASH_SAVED_S = 30.0
LONG_S = 90.0
AFTER_BREAK_S = (0.0, 1.0, 3.0)
KINDS = {"reload": RELOAD_S, "restart": RESTART_S, "crash": RESTART_S, "long": LONG_S}
WAYS = ("main", "handover")
EVERY_S = 300.0
SIGNATURE = "eval"  # one device, one config: the signatures agree (the session's check, tested apart)


@dataclass(frozen=True, slots=True)
class Break:
    frames: range  # frames not delivered; the stage is rebuilt at the next one
    kind: str
    way: str


def _restored(handed: Handed, at: float) -> KeptShapes | None:
    """The templates through `pipeline.json` and back, as a start restores them at wall time `at`."""
    entry = json.loads(json.dumps({"d": kept_shapes.saved(handed)}))
    entries = kept_shapes.restored(entry, {"eval": "d"})
    return kept_shapes.adopted(entries, {"eval": SIGNATURE}, {"eval": "d"}, "none saved", now=at).get("eval")


def stage_readings(ecg: FloatArray, rr_stream: str, fs: float, breaks: list[Break]) -> list[Beat]:
    """`vt_runs.stage_readings` with the stage rebuilt after each break (`breaks` in order)."""
    config = BeatsConfig(rr_stream=rr_stream)
    stage = RrFromEcg("eval", config)
    lost = {i for b in breaks for i in b.frames}
    rebuild = {b.frames.stop: b for b in breaks}
    saved_at = {
        b.frames.start - round(CRASH_SAVED_S * fs / POLAR_FRAME): b for b in breaks if b.kind == "crash"
    }
    last_save: Handed | None = None
    out = []
    for index, (start, reading) in enumerate(_all_frames(ecg, fs)):
        if index in saved_at:
            kept = stage.handover()
            # a copy as the save writes it: the stage goes on
            last_save = Handed(_copied(kept), SIGNATURE) if kept is not None else None
        if index in lost:
            continue
        if index in rebuild:
            stage = RrFromEcg(
                "eval", config, kept=_handed(stage, rebuild[index], last_save, reading.wall_time)
            )
        left = (start + reading.n_samples) / fs
        out += [Beat(r, left) for r in stage.take(reading) if r.stream == f"eval/{rr_stream}"]
    return out


def _copied(kept: KeptShapes) -> KeptShapes:
    restored = kept_shapes.restored({"d": kept_shapes.saved(Handed(kept, SIGNATURE))}, {"eval": "d"})
    return restored["eval"].kept


def _handed(stage: RrFromEcg, b: Break, last_save: Handed | None, at: float) -> KeptShapes | None:
    if b.way == "main":
        return None
    kept = stage.handover()
    if b.kind == "reload":
        adopted = kept_shapes.adopted(
            {"eval": Handed(kept, SIGNATURE)} if kept is not None else {},
            {"eval": SIGNATURE},
            {"eval": "d"},
            "the previous session had none",
        )
        return adopted.get("eval")
    saved = last_save if b.kind == "crash" else (Handed(kept, SIGNATURE) if kept is not None else None)
    return _restored(saved, at) if saved is not None else None


def _all_frames(ecg: FloatArray, fs: float) -> Iterator[tuple[int, Reading]]:
    return vt_runs.frames(ecg, fs)


# -- the runs ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunCase:
    case: Case
    kind: str  # KINDS, or "control"
    after_s: float  # the run's first beat this long after the new stage's first frame
    way: str

    def key(self) -> str:
        c = self.case
        return f"{c.record}\t{c.host}\t{c.length}\t{self.kind}\t{self.after_s:g}\t{self.way}"


@dataclass(frozen=True, slots=True)
class RunResult:
    found: int
    delay_s: float | None
    outside: int


def case_set(root: Path | None) -> list[RunCase]:
    out = []
    for record in RUNS:
        for host, donor in vt_runs.draw_hosts(root, record, count=HOSTS, run_s=HOSTS_ROOM_S):
            for length in LENGTHS:
                case = Case(record, host, donor, length, RATE_BPM)
                out.append(RunCase(case, "control", 0.0, "main"))
                for kind in KINDS:
                    for after in AFTER_BREAK_S:
                        out += [RunCase(case, kind, after, way) for way in WAYS]
    return out


def _case_job(job: tuple[Path, Path | None, RunCase, str]) -> RunResult:
    config_path, root, c, vt = job
    config = vt_runs.rr_config(config_path)
    rr_stream = config.detectors[0].stream
    spliced = vt_runs.splice(root, c.case)
    breaks = []
    if c.kind != "control":
        frames = frames_before(spliced, ends_before_s=c.after_s, seconds=KINDS[c.kind])
        breaks.append(Break(frames, c.kind, c.way))
    beats = stage_readings(spliced.ecg, rr_stream, MITDB_FS, breaks)
    peaks = vt_runs.beat_samples(beats)
    refs, _ = match(spliced.beats, peaks, round(MATCH_WINDOW_S * MITDB_FS))
    found = int(spliced.is_run[refs].sum())
    onset_s, last_s = spliced.onset / MITDB_FS, spliced.last / MITDB_FS
    delay, outside = None, 0
    for e in vt_runs.episodes(config, beats):
        if e.condition != vt:
            continue
        if onset_s <= e.start <= last_s + AFTER_S:
            delay = e.start - onset_s if delay is None else delay
        else:
            outside += 1
    return RunResult(found, delay, outside)


def _median(delays: list[float]) -> str:
    return f"{np.median(delays):.2f} s" if delays else "-"


def runs_report(config_path: Path, cases: list[RunCase], results: list[RunResult]) -> str:
    pairs = list(zip(cases, results, strict=True))
    rows = []
    for kind in ("control", *KINDS):
        for way in WAYS if kind != "control" else ("main",):
            for length in LENGTHS:
                for after in AFTER_BREAK_S if kind != "control" else (0.0,):
                    cell = [
                        r
                        for c, r in pairs
                        if (c.kind, c.way, c.case.length, c.after_s) == (kind, way, length, after)
                    ]
                    delays = [r.delay_s for r in cell if r.delay_s is not None]
                    rows.append(
                        (
                            kind,
                            way,
                            length,
                            f"{after:g}" if kind != "control" else "-",
                            f"{len(delays)} / {len(cell)}",
                            _median(delays),
                            f"{max(delays):.2f} s" if delays else "-",
                            sum(r.outside for r in cell),
                        )
                    )
    by_key = {(c.case, c.kind, c.after_s, c.way): r for c, r in pairs}
    short = [c for c in cases if c.kind in ("reload", "restart", "crash") and c.way == "main"]
    missed = [c for c in short if by_key[(c.case, c.kind, c.after_s, c.way)].delay_s is None]
    caught = [c for c in missed if by_key[(c.case, c.kind, c.after_s, "handover")].delay_s is not None]
    long_main = [c for c in cases if c.kind == "long" and c.way == "main"]
    long_same = sum(
        by_key[(c.case, c.kind, c.after_s, "main")] == by_key[(c.case, c.kind, c.after_s, "handover")]
        for c in long_main
    )
    share = f"{100 * len(caught) / len(missed):.1f} %" if missed else "-"
    return "\n".join(
        [
            f"# VT after a reload or a restart: the alarms of {config_path}",
            "",
            f"Runs of one PVC of the record at {RATE_BPM} bpm after vt_runs' hosts ({HOSTS} per record of "
            f"{', '.join(RUNS)}, room for {max(LENGTHS)} beats); the beats stage rebuilt (the break's "
            f"frames not delivered: reload {RELOAD_S:g} s, restart and crash {RESTART_S:g} s, "
            f"long {LONG_S:g} s) "
            "so that the run's first beat comes the given seconds after its first frame. Delays from that "
            f"beat to when the reading that started the alarm left the stage; a start counts up to "
            f"{AFTER_S:g} s after the run's last beat.",
            "",
            f"Reload / restart / crash cases main misses: {len(missed)} / {len(short)}; alarmed with the "
            f"hand-over: {len(caught)} ({share})",
            f"Restarts after {LONG_S:g} s identical with and without the hand-over: "
            f"{long_same} / {len(long_main)}",
            "",
            table(
                [
                    "break",
                    "way",
                    "run beats",
                    "after (s)",
                    "alarmed",
                    "median delay",
                    "max delay",
                    "VT outside",
                ],
                rows,
            ),
        ]
    )


TSV_HEADER = "record\thost\tlength\tkind\tafter_s\tway\tfound\tdelay_s\toutside"


def case_line(c: RunCase, r: RunResult) -> str:
    delay = f"{r.delay_s:.2f}" if r.delay_s is not None else "-"
    return f"{c.key()}\t{r.found}\t{delay}\t{r.outside}"


# -- the records -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordResult:
    name: str
    way: str  # "none" (no reload), "main", "handover"
    real_runs: int
    true_starts: int
    false_starts: list[float]


def reload_breaks(length: int, fs: float, way: str) -> list[Break]:
    """A `reload` every `EVERY_S` of a record of `length` samples."""
    frame_s = POLAR_FRAME / fs
    out = []
    at = EVERY_S
    while (at + RELOAD_S) * fs < length:
        first = round(at / frame_s)
        out.append(Break(range(first, first + round(RELOAD_S / frame_s)), "reload", way))
        at += EVERY_S
    return out


def judge_record(
    config_path: Path,
    name: str,
    ecg: FloatArray,
    fs: float,
    beats: IntArray,
    is_pvc: BoolArray,
    vt: str,
    way: str,
) -> RecordResult:
    config = vt_runs.rr_config(config_path)
    runs = vt_runs.real_runs(beats, is_pvc, fs)
    breaks = reload_breaks(len(ecg), fs, way) if way != "none" else []
    readings = stage_readings(ecg, config.detectors[0].stream, fs, breaks)
    starts = [e.start for e in vt_runs.episodes(config, readings) if e.condition == vt]
    true = [s for s in starts if any(a <= s <= b + AFTER_S for a, b in runs)]
    return RecordResult(name, way, len(runs), len(true), [s for s in starts if s not in true])


def _mitdb_job(job: tuple[Path, Path | None, str, str, str]) -> RecordResult:
    config_path, root, record, vt, way = job
    ecg, beats, is_pvc = vt_runs.load_record(root, record)
    return judge_record(config_path, record, ecg, MITDB_FS, beats, is_pvc, vt, way)


def _cpsc_job(job: tuple[Path, Path, str, str]) -> RecordResult:
    config_path, header, vt, way = job
    ecg, fs, beats, is_pvc = vt_runs.load_cpsc_record(header)
    return judge_record(config_path, header.stem, ecg, fs, beats, is_pvc, vt, way)


def records_report(config_path: Path, title: str, results: list[RecordResult]) -> str:
    ways = ("none", "main", "handover")
    rows = []
    for name in dict.fromkeys(r.name for r in results):
        mine = {r.way: r for r in results if r.name == name}
        rows.append(
            (
                name,
                mine["none"].real_runs,
                *(f"{mine[w].true_starts} / {len(mine[w].false_starts)}" for w in ways),
            )
        )
    totals = []
    for way in ways:
        done = [r for r in results if r.way == way]
        totals.append(f"{sum(r.true_starts for r in done)} / {sum(len(r.false_starts) for r in done)}")
    rows.append(("all", sum(r.real_runs for r in results if r.way == "none"), *totals))
    return "\n".join(
        [
            f"# False VT starts with a reload every {EVERY_S:g} s: the alarms of {config_path}",
            "",
            f"{title}; a reload ({RELOAD_S:g} s of frames not delivered, the stage rebuilt) every "
            f"{EVERY_S:g} s. VT starts at an annotated run (>= 3 PVCs at > 100 bpm, up to {AFTER_S:g} s "
            "after its last beat) / elsewhere (false).",
            "",
            table(["record", "annotated runs", "no reload", "reloads, main", "reloads, hand-over"], rows),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = vt_runs.case_arguments(
        "vt_reload", __doc__, "eval/vt-reload", config="tools/evaluate/configs/vt-only.toml"
    )
    parser.add_argument("--part", choices=("runs", "records", "cpsc"), default="runs")
    args = parser.parse_args(argv)
    vt = args.condition
    ways = ("none", "main", "handover")
    if args.part == "runs":
        cases = case_set(args.data)
        results = pool_map(_case_job, [(args.config, args.data, c, vt) for c in cases], args.jobs)
        write_report(args.out, runs_report(args.config, cases, results))
        lines = [TSV_HEADER, *(case_line(c, r) for c, r in zip(cases, results, strict=True))]
        (args.out / "cases.tsv").write_text("\n".join(lines) + "\n")
        return 0
    if args.part == "records":
        jobs = [(args.config, args.data, r, vt, w) for r in vt_runs.ALL_RECORDS for w in ways]
        done = pool_map(_mitdb_job, jobs, args.jobs)
        title = f"MIT-BIH's {len(vt_runs.ALL_RECORDS)} records, whole"
    else:
        folder = dataset_folder(args.data, "ECG/cpsc2021_sample", "*.hea", "CPSC-2021")
        headers = sorted(folder.glob("*.hea"))
        done = pool_map(_cpsc_job, [(args.config, h, vt, w) for h in headers for w in ways], args.jobs)
        title = f"CPSC-2021's {len(headers)} records, lead 0, 200 Hz"
    write_report(args.out, records_report(args.config, title, done))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
