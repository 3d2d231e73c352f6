"""Every RR reading the daemon's ECG -> RR stage makes on MIT-BIH, as text and its sha1: "the stage's
output is byte-identical" for a change that should not move it.

    python -m tools.evaluate.stage_digest --data /work/shared/datasets [--seconds 600] [--out file]

The 12 records (`vt_runs.ALL_RECORDS`), each its first `--seconds` of MLII, go through a fresh
`agent.ecg.rr_from_ecg.RrFromEcg` with every channel computed (``p_wave`` too), in 73-sample frames as
`tools.evaluate.vt_runs` feeds it. One line per reading of the RR stream (beats, pause and "no value"
readings alike), in the order the stage gave them:

    record wall_time channel=value ... flags

with `repr()` of every float (the shortest text that reads back as the same float: two floats print
alike only if they are equal) and the reading's quality flags (`Quality.describe`, "ok" when none).
`--out` writes the text; the count of readings and the sha1 of the text are printed either way.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Sequence
from pathlib import Path

from agent.readings import Reading
from tools.evaluate.datasets import MITDB_FS, FloatArray, mitdb_folder, read_mitdb_record
from tools.evaluate.vt_runs import ALL_RECORDS, stage_readings

RR_STREAM = "rr"


def reading_line(record: str, reading: Reading) -> str:
    """One RR reading as a line: the record, the stamp, every channel's value, the flags."""
    values = " ".join(
        f"{name}={float(value)!r}" for name, value in zip(reading.channels, reading.values[0], strict=True)
    )
    return f"{record} {reading.wall_time!r} {values} {reading.quality.describe()}"


def record_lines(record: str, ecg: FloatArray, seconds: float) -> list[str]:
    """The lines of one record's first `seconds` (a fresh stage)."""
    samples = ecg[: round(seconds * MITDB_FS)]
    return [reading_line(record, beat.reading) for beat in stage_readings(samples, RR_STREAM)]


def digest_text(root: Path | None, seconds: float, records: Sequence[str] = ALL_RECORDS) -> tuple[str, int]:
    """(the text of every record's readings, how many readings)."""
    folder = mitdb_folder(root)
    lines: list[str] = []
    for record in records:
        ecg, _, _ = read_mitdb_record(folder, record)
        lines += record_lines(record, ecg, seconds)
    return "".join(f"{line}\n" for line in lines), len(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.evaluate.stage_digest", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="datasets folder (default: ../shared/datasets)"
    )
    parser.add_argument("--seconds", type=float, default=600.0, help="from each record's start (default 600)")
    parser.add_argument("--out", type=Path, default=None, help="write the readings' text here")
    args = parser.parse_args(argv)
    text, count = digest_text(args.data, args.seconds)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(f"{count} RR readings, sha1 {hashlib.sha1(text.encode()).hexdigest()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
