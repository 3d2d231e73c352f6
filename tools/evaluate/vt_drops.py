"""VT right after a Bluetooth drop: is a run alarmed when the strap's frames were lost just before it?

    python -m tools.evaluate.vt_drops --config examples/cardiac-monitoring.toml --out eval/vt-drops

After lost frames the stage starts a fresh QRS detector and, for a short hole, goes on with the beat
shape templates it had (agent.ecg.rr_from_ecg: "A short hole keeps the beat shapes"); a VT starting
then must still read ventricular. The cases are `tools.evaluate.vt_runs`' (its hosts, donors, splice,
stage, pipeline and timing, imported) with frames not delivered:

- Hosts: the first of vt_runs' hosts (same seed, sorted) per record in `RUNS`: 2 of MIT-BIH 119 with
  runs of 30 beats, 1 of 106 with 150 beats, all at `RATE_BPM`, spliced after the host as vt_runs
  splices them.
- The drop: `DROP_FRAMES` 73-sample frames (2.03 s at 360 Hz) are not passed to the stage, ending
  `ENDS_BEFORE_S` (0, 1, 3, 6 s) before the run's first beat: the last frame lost is the last that ends
  by then (so the drop ends up to one frame, 0.2 s, earlier; with 0 s the frame holding the first beat
  is delivered). The next frame carries `Quality.GAP`, as a BLE source sets it after a sequence gap, and
  is stamped at its own time: the stage sees a 2 s hole. A control case per host has no drop.

Per case: the run beats the QRS detector found, the VT condition's (`--condition`) delay from the run's
first beat to when the reading that raised it left the stage (a start up to 5 s after the run's last beat
counts), the VT starts outside that window; per drop end, runs alarmed and median delay.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tools.evaluate.datasets import MITDB_FS
from tools.evaluate.qrs import POLAR_FRAME
from tools.evaluate.replay import pool_map
from tools.evaluate.report import table, write_report
from tools.evaluate.vt_runs import (
    AFTER_S,
    Case,
    CaseResult,
    Spliced,
    case_arguments,
    draw_hosts,
    judge_case,
    splice,
)

RATE_BPM = 150
RUNS = (("119", 2, 30), ("106", 1, 150))  # record, hosts (vt_runs' first), run beats
DROP_FRAMES = round(2.0 * MITDB_FS / POLAR_FRAME)  # 2 s of frames
ENDS_BEFORE_S = (0.0, 1.0, 3.0, 6.0)


def lost_frames(spliced: Spliced, ends_before_s: float) -> range:
    """The `DROP_FRAMES` frames ending at or before `ends_before_s` before the run's first beat."""
    end = spliced.onset - round(ends_before_s * MITDB_FS)
    stop = end // POLAR_FRAME  # frames numbered below it end by `end`
    return range(stop - DROP_FRAMES, stop)


@dataclass(frozen=True, slots=True)
class DropCase:
    case: Case
    ends_before_s: float | None  # None: the control, no drop


def case_set(root: Path | None) -> list[DropCase]:
    out = []
    for record, hosts, length in RUNS:
        for host, donor in draw_hosts(root, record)[:hosts]:
            case = Case(record, host, donor, length, RATE_BPM)
            out += [DropCase(case, None), *(DropCase(case, end) for end in ENDS_BEFORE_S)]
    return out


def _job(job: tuple[Path, Path | None, DropCase, str]) -> CaseResult:
    config_path, root, drop, vt = job
    lost = (
        None
        if drop.ends_before_s is None
        else functools.partial(lost_frames, ends_before_s=drop.ends_before_s)
    )
    return judge_case(config_path, root, drop.case, vt, lost=lost)


def lost_span_s(root: Path | None, drop: DropCase) -> str:
    """The frames lost, as seconds relative to the run's first beat ("-" for the control)."""
    if drop.ends_before_s is None:
        return "none"
    spliced = splice(root, drop.case)
    lost = lost_frames(spliced, drop.ends_before_s)
    first, end = lost.start * POLAR_FRAME - spliced.onset, lost.stop * POLAR_FRAME - spliced.onset
    return f"{first / MITDB_FS:.2f} .. {end / MITDB_FS:.2f}"


def evaluate(config_path: Path, root: Path | None, jobs: int, vt: str) -> str:
    drops = case_set(root)
    results = pool_map(_job, [(config_path, root, d, vt) for d in drops], jobs)
    rows = [
        (
            d.case.record,
            f"{d.case.host / MITDB_FS:.1f}",
            d.case.length,
            "no drop" if d.ends_before_s is None else f"{d.ends_before_s:g}",
            lost_span_s(root, d),
            f"{r.found} / {d.case.length}",
            f"{r.starts[vt]:.2f}" if vt in r.starts else "-",
            r.vt_outside,
        )
        for d, r in zip(drops, results, strict=True)
    ]
    summary = []
    for end in (None, *ENDS_BEFORE_S):
        cell = [r for d, r in zip(drops, results, strict=True) if d.ends_before_s == end]
        delays = [r.starts[vt] for r in cell if vt in r.starts]
        summary.append(
            (
                "no drop" if end is None else f"{end:g}",
                f"{len(delays)} / {len(cell)}",
                f"{np.median(delays):.2f} s" if delays else "-",
                f"{max(delays):.2f} s" if delays else "-",
            )
        )
    dropped = [r for d, r in zip(drops, results, strict=True) if d.ends_before_s is not None]
    alarmed = sum(vt in r.starts for r in dropped)
    lines = [
        f"# VT right after a Bluetooth drop: the alarms of {config_path}",
        "",
        f"Runs of one PVC of the record at {RATE_BPM} bpm after vt_runs' first hosts "
        f"({', '.join(f'{n} of {rec}, {beats} beats' for rec, n, beats in RUNS)}); {DROP_FRAMES} frames of "
        f"{POLAR_FRAME} samples ({DROP_FRAMES * POLAR_FRAME / MITDB_FS:.2f} s) not delivered, the next "
        "flagged GAP, ending by the given seconds before the run's first beat; delays from that beat to "
        f"when the reading that started the alarm left the stage, a start counting up to {AFTER_S:g} s "
        "after the run's last beat.",
        "",
        f"Runs after a drop alarmed by {vt}: {alarmed} / {len(dropped)}",
        "",
        "## Per drop end",
        "",
        table(["drop ends before the run (s)", "alarmed", "median delay", "largest"], summary),
        "",
        "## Every case",
        "",
        table(
            [
                "record",
                "host (s)",
                "run beats",
                "drop ends before the run (s)",
                "frames lost (s from the run's first beat)",
                "run beats found",
                f"{vt} delay (s)",
                f"{vt} starts outside",
            ],
            rows,
        ),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = case_arguments("vt_drops", __doc__, "eval/vt-drops")
    args = parser.parse_args(argv)
    write_report(args.out, evaluate(args.config, args.data, args.jobs, args.condition))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
