"""The evaluation report: a markdown file of tables plus matplotlib PNGs of selected series.

Each plot shows the signal (first channel), the score a detector or the ensemble gave each sample with
its threshold, the labelled windows shaded, and the alarm starts the pipeline raised as markers.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tools.evaluate.datasets import FloatArray, Series


def plot_series(
    path: Path,
    series: Series,
    score: FloatArray,
    threshold: float,
    starts: FloatArray,
    title: str,
    score_label: str = "score",
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = (series.times - series.times[0]) / 3600.0
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 5), sharex=True)
    top.plot(t, series.values[:, 0], lw=0.6, color="black")
    top.set_ylabel(series.channels[0])
    for ax in (top, bottom):
        for lo, hi in series.windows:
            ax.axvspan(
                (lo - series.times[0]) / 3600.0,
                (hi - series.times[0]) / 3600.0,
                color="tab:orange",
                alpha=0.25,
            )
        for s in starts:
            ax.axvline((s - series.times[0]) / 3600.0, color="tab:red", lw=0.8, alpha=0.7)
    bottom.plot(t, score, lw=0.6, color="tab:blue", label=score_label)
    bottom.axhline(threshold, color="tab:green", ls="--", lw=1, label="threshold")
    bottom.set_ylabel(score_label)
    bottom.set_xlabel("hours (shaded: labelled anomaly; red: alarm starts)")
    bottom.legend(loc="upper right", fontsize=8)
    top.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return "n/a" if np.isnan(v) else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(out: Path, text: str) -> None:
    """Write `out`/report.md and print the report, with where it went on stderr."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(text + "\n")
    print(text)
    print(f"\nreport: {out / 'report.md'}", file=sys.stderr)
