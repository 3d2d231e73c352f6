"""tools.evaluate.pvc_gateway on the MIT-BIH 200 excerpt (tests/fixtures/mitdb, ODC-By, attributed there):
the beats found in the raw ECG carry every channel of the RR stream, and the pvc detector replayed through
the pipeline separates the excerpt's PVCs (bigeminy and couplets) from its normal beats."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from tools.evaluate.beats_from_ecg import mitdb_from_ecg
from tools.evaluate.datasets import MITDB_FS, T0, Series
from tools.evaluate.pvc_gateway import evaluate, missed_pvcs

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "mitdb"
CONFIG = ROOT / "tools" / "evaluate" / "configs" / "pvc.toml"


def halves() -> list[Series]:
    """The 60 s excerpt as two 30 s "records", shaped as `load_mitdb` gives them."""
    ecg = np.loadtxt(FIXTURE / "200_mlii_0-60s.csv", delimiter=",", skiprows=1)
    table = np.genfromtxt(FIXTURE / "200_beats_0-60s.csv", delimiter=",", names=True)
    half = len(ecg) // 2
    out = []
    for k, (lo, hi) in enumerate([(0, half), (half, len(ecg))]):
        inside = (table["sample"] >= lo) & (table["sample"] < hi)
        peaks = table["sample"][inside].astype(np.int64) - lo
        out.append(
            Series(
                name=f"200-{k}",
                group=f"200-{k}",
                channels=("rr",),
                times=T0 + peaks[1:] / MITDB_FS,
                values=(np.diff(peaks) / MITDB_FS)[:, None],
                labels=table["is_pvc"][inside][1:] > 0,
                extra={"ecg": ecg[lo:hi], "r_peak": peaks[1:].astype(np.float64)},
            )
        )
    return out


def test_detected_beats_carry_rr_hr_and_qrs_shape_and_pvcs_are_matched() -> None:
    annotated = halves()
    detected = mitdb_from_ecg(annotated, MITDB_FS)
    for a, d in zip(annotated, detected, strict=True):
        assert d.channels == ("rr", "hr", "qrs_shape", "qrs_core", "p_wave", "qrs_width")
        assert d.values.shape == (len(d.times), 6)
        assert np.isfinite(d.values[8:, 2]).all()  # a shape for every beat once 8 are in the template
        assert abs(int(d.labels.sum()) - int(a.labels.sum())) <= 1  # the first PVC may have no interval
    assert sum(missed_pvcs(annotated, detected)) <= 1  # one in the last 0.4 s: its window never completes


def test_the_report_gives_pooled_and_per_record_auc_through_the_pipeline() -> None:
    report = evaluate(CONFIG, halves(), jobs=1)
    pooled = {
        line.split(" | ")[0].strip("| *"): float(line.rsplit("|", 2)[1])
        for line in report.splitlines()
        if line.startswith("| ") and line.count("|") == 3 and "ROC-AUC" not in line
    }
    # 30 s records: the first 8 beats of each have no verdict and count as not PVC, which bounds the AUC;
    # every beat judged is judged right at the fixed threshold.
    unjudged = re.search(r"(\d+) beats had no verdict \((\d+) PVCs\)", report)
    fixed = re.search(r"\(TP (\d+), FP (\d+), FN (\d+)\)", report)
    assert unjudged is not None and fixed is not None
    assert int(fixed.group(2)) == 0 and int(fixed.group(3)) == int(unjudged.group(2))
    assert int(fixed.group(1)) >= 25
    prem = pooled["prematurity alone (RR / mean of the 8 previous RR), detected beats"]
    assert pooled["pvc detector as configured, detected beats"] >= prem
    assert "| 200-0 |" in report and "| 200-1 |" in report
    assert "At the config's fixed threshold 0.69" in report
