"""The gateway's `pvc` detector on atrial fibrillation: how many beats that are no PVC it flags (CPSC-2021).

    python -m tools.evaluate.pvc_af --config tools/evaluate/configs/pvc.toml --out eval/pvc-af

The detector was fitted on MIT-BIH, which has no AF. In AF every beat comes irregularly (many are
"early" against the mean of the previous 8 RR) and without a P wave, so a detector that scores
prematurity and shape against a sinus template may call ordinary AF beats PVCs. Each CPSC-2021 record's
lead 0 is cut into device frames and passed through the daemon's ECG -> RR stage
(`tools.evaluate.beats_from_ecg.cpsc_beats_from_ecg`), and the RR stream replayed through
`agent.pipeline.Pipeline` with the config's `pvc` detector: every score is one the daemon would compute.
A beat is flagged when its score is above the config's threshold; a beat without a verdict is not
flagged. Nothing here is fitted: it is a held-out check of the detector's specificity.

Reported: the share of non-V beats flagged inside AF, in the other rhythms (sinus, with its PACs), and
among the first 30 beats of each AF episode that follows another rhythm (where the template still holds
the sinus beats' P wave); the annotated V beats flagged; per record. About 20 s on this shared 2-core x86
VM.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.config.loader import load_config
from tools.evaluate.beats_from_ecg import AF_ONSET_BEATS, cpsc_beats_from_ecg
from tools.evaluate.datasets import BoolArray, FloatArray, Series
from tools.evaluate.replay import replay
from tools.evaluate.report import table, write_report


@dataclass(frozen=True, slots=True)
class Flagged:
    """Flagged / total beats of one kind."""

    flagged: int
    total: int

    @classmethod
    def of(cls, flags: BoolArray, among: BoolArray) -> Flagged:
        return cls(int((flags & among).sum()), int(among.sum()))

    def __add__(self, other: Flagged) -> Flagged:
        return Flagged(self.flagged + other.flagged, self.total + other.total)

    def __str__(self) -> str:
        share = f"{self.flagged / self.total:.3f}" if self.total else "-"
        return f"{share} ({self.flagged} / {self.total})"


@dataclass(frozen=True, slots=True)
class RecordFlags:
    """What the detector flagged in one record, by kind of beat."""

    name: str
    non_v_af: Flagged
    non_v_sinus: Flagged
    non_v_onset: Flagged
    v: Flagged

    @classmethod
    def of(cls, series: Series, scores: FloatArray, threshold: float) -> RecordFlags:
        flags = np.nan_to_num(scores, nan=-np.inf) > threshold
        v = series.labels
        af = series.extra["af"] > 0
        onset = series.extra["af_onset"] > 0
        return cls(
            series.name,
            Flagged.of(flags, ~v & af),
            Flagged.of(flags, ~v & ~af),
            Flagged.of(flags, ~v & onset),
            Flagged.of(flags, v),
        )


def pvc_scores(config_path: Path, series: Series) -> tuple[FloatArray, float]:
    """(the pvc detector's score of every beat of `series` through the pipeline, its threshold)."""
    config = load_config(config_path)
    (detector,) = [d for d in config.detectors if d.type == "pvc"]
    result = replay(config, series)
    return result.scores[detector.id], float(detector.params.get("threshold", np.nan))


def evaluate(config_path: Path, records: list[Series]) -> list[RecordFlags]:
    out = []
    for series in records:
        scores, threshold = pvc_scores(config_path, series)
        out.append(RecordFlags.of(series, scores, threshold))
    return out


def report(config_path: Path, flags: list[RecordFlags]) -> str:
    zero = Flagged(0, 0)
    af = sum((f.non_v_af for f in flags), zero)
    sinus = sum((f.non_v_sinus for f in flags), zero)
    onset = sum((f.non_v_onset for f in flags), zero)
    v = sum((f.v for f in flags), zero)
    pooled = [
        ("non-V beats inside AF", str(af)),
        ("non-V beats in other rhythms (sinus, PACs)", str(sinus)),
        (f"non-V beats among the first {AF_ONSET_BEATS} of an AF episode after sinus", str(onset)),
        ("V beats (annotated PVCs)", str(v)),
    ]
    rows = [(f.name, str(f.non_v_af), str(f.non_v_sinus), str(f.non_v_onset), str(f.v)) for f in flags]
    return "\n".join(
        [
            "# The pvc detector on CPSC-2021 (AF): beats flagged, by kind",
            "",
            f"Config {config_path}; {len(flags)} records, beats found in the raw ECG (lead 0) by the "
            "daemon's ECG -> RR stage, scored through the pipeline; flagged = score above the config's "
            "threshold (no verdict = not flagged).",
            "",
            table(["beats", "flagged share (flagged / beats)"], pooled),
            "",
            table(["record", "non-V in AF", "non-V elsewhere", "non-V, AF onset", "V"], rows),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.evaluate.pvc_af", description=__doc__)
    parser.add_argument("--config", type=Path, default=Path("tools/evaluate/configs/pvc.toml"))
    parser.add_argument("--data", type=Path, default=None, help="dataset folder (default: ../shared/...)")
    parser.add_argument("--out", type=Path, default=Path("eval/pvc-af"))
    args = parser.parse_args(argv)
    write_report(args.out, report(args.config, evaluate(args.config, cpsc_beats_from_ecg(args.data))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
