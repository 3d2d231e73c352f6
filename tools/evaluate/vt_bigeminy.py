"""VT out of bigeminy: is a run of PVCs alarmed when the beats before it were half PVCs already?

    python -m tools.evaluate.vt_bigeminy --config examples/cardiac-monitoring.toml --out eval/vt-bigeminy

In bigeminy the stage's templates (the beat shape's and the QRS core's, agent.ecg.beat_shape) hold as
many PVCs as normal beats; a run may then tip them to the PVC within a few beats and read normal. The
cases are `tools.evaluate.vt_runs`' (its splice, stage, pipeline and timing, imported) on other hosts:

- Record `RECORD` (MIT-BIH 200: bigeminy and multiform PVCs); up to `HOSTS` hosts drawn with vt_runs'
  seed and spacing (>= 60 s apart, 150 s of record before): a normal beat with at least `MIN_PVC_SHARE`
  of the `BEFORE_BEATS` annotated beats before it PVCs (`in_bigeminy`), each with one donor PVC of the
  record (every beat of the run is the donor's), as vt_runs draws them.
- Each case is a host x run length `LENGTHS` x rate `RATES_BPM`, spliced after the host as vt_runs
  splices (the run's first beat one run interval after the host, the record resumed after it) and fed to
  the daemon's ECG -> RR stage in 73-sample frames and the config's pipeline, fresh per case.

Per length x rate: runs alarmed by the VT condition (`--condition`) from the run's first beat to 5 s
after its last, median and largest delay (from the first beat to when the reading that raised the alarm
left the stage); then every case: its host, the PVC share before it, the run beats the QRS detector
found, the delay, the conditions already active at the run's first beat, VT starts outside the run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tools.evaluate.datasets import MITDB_FS
from tools.evaluate.replay import pool_map
from tools.evaluate.report import table, write_report
from tools.evaluate.vt_runs import (
    AFTER_S,
    SEED,
    BoolArray,
    Case,
    CaseResult,
    IntArray,
    case_arguments,
    draw_hosts,
    judge_case,
    load_record,
)

RECORD = "200"
HOSTS = 11
BEFORE_BEATS = 32  # the beats a template of 32 (agent.ecg.beat_shape) is made of
MIN_PVC_SHARE = 0.4
LENGTHS = (15, 60)
RATES_BPM = (150, 200)


def in_bigeminy(beats: IntArray, is_pvc: BoolArray, k: int) -> bool:
    """A normal beat with at least `MIN_PVC_SHARE` of the `BEFORE_BEATS` annotated beats before it PVCs."""
    return k >= BEFORE_BEATS and not is_pvc[k] and bool(is_pvc[k - BEFORE_BEATS : k].mean() >= MIN_PVC_SHARE)


def longest_run_s() -> float:
    return max(LENGTHS) * 60.0 / min(RATES_BPM) + 2.0


def case_set(root: Path | None) -> list[Case]:
    hosts = draw_hosts(root, RECORD, eligible=in_bigeminy, count=HOSTS, run_s=longest_run_s(), at_least=1)
    return [
        Case(RECORD, host, donor, length, rate)
        for host, donor in hosts
        for length in LENGTHS
        for rate in RATES_BPM
    ]


def pvc_share(root: Path | None, case: Case) -> float:
    """The share of PVCs among the `BEFORE_BEATS` annotated beats before the case's host."""
    _, beats, is_pvc = load_record(root, case.record)
    k = int(np.searchsorted(beats, case.host))
    return float(is_pvc[k - BEFORE_BEATS : k].mean())


def _job(job: tuple[Path, Path | None, Case, str]) -> CaseResult:
    config_path, root, case, vt = job
    return judge_case(config_path, root, case, vt)


def evaluate(config_path: Path, root: Path | None, jobs: int, vt: str) -> str:
    cases = case_set(root)
    results = pool_map(_job, [(config_path, root, c, vt) for c in cases], jobs)
    hosts = sorted({c.host for c in cases})
    lines = [
        f"# VT out of bigeminy: the alarms of {config_path}",
        "",
        f"MIT-BIH {RECORD}, {len(hosts)} hosts (a normal beat with >= {100 * MIN_PVC_SHARE:g} % PVCs among "
        f"the {BEFORE_BEATS} annotated beats before it, >= 60 s apart, seed {SEED}) x runs of "
        f"{' / '.join(map(str, LENGTHS))} beats of one of the record's PVCs at "
        f"{' / '.join(map(str, RATES_BPM))} bpm, spliced as `tools.evaluate.vt_runs` splices; delays from "
        "the run's first beat to when the reading that started the alarm left the stage; a start counts "
        f"up to {AFTER_S:g} s after the run's last beat.",
        "",
        "## Per length and rate",
        "",
        table(["beats", "bpm", f"{vt}: alarmed", "median delay", "largest"], _summary(results, vt)),
        "",
        "## Every case",
        "",
        table(
            [
                "host (s)",
                "PVC share before",
                "donor (s)",
                "beats",
                "bpm",
                "run beats found",
                f"{vt} delay (s)",
                "active at the run's first beat",
                f"{vt} starts outside",
            ],
            [
                (
                    f"{r.case.host / MITDB_FS:.1f}",
                    f"{pvc_share(root, r.case):.2f}",
                    f"{r.case.donor / MITDB_FS:.1f}",
                    r.case.length,
                    r.case.rate_bpm,
                    f"{r.found} / {r.case.length}",
                    f"{r.starts[vt]:.2f}" if vt in r.starts else "-",
                    ", ".join(r.active_at_onset) or "none",
                    r.vt_outside,
                )
                for r in results
            ],
        ),
    ]
    return "\n".join(lines)


def _summary(results: list[CaseResult], vt: str) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for length in LENGTHS:
        for rate in RATES_BPM:
            cell = [r for r in results if r.case.length == length and r.case.rate_bpm == rate]
            delays = [r.starts[vt] for r in cell if vt in r.starts]
            median = f"{np.median(delays):.2f} s" if delays else "-"
            largest = f"{max(delays):.2f} s" if delays else "-"
            rows.append((length, rate, f"{len(delays)} / {len(cell)}", median, largest))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = case_arguments("vt_bigeminy", __doc__, "eval/vt-bigeminy")
    args = parser.parse_args(argv)
    write_report(args.out, evaluate(args.config, args.data, args.jobs, args.condition))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
