"""The decoder benchmark runs end to end (smoke test only: figures live in docs/benchmarks.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_decoders_quick_prints_a_row_per_decoder() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tools.bench_decoders", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert sum("serial FrameDecoder" in r for r in rows) == 3
    assert sum(r.startswith("| GATT") for r in rows) == 9
    assert all(float(r.split("|")[3].replace(",", "")) > 0 for r in rows)
