"""Detection-quality figures from per-sample decisions, scores and alarm onsets against labels.

Point metrics (one decision per sample or beat): precision/PPV, recall/sensitivity, specificity, F1,
false-alarm rate (FAR = FP / negatives) and missed-alarm rate (MAR = FN / positives), as SKAB and the
ECG literature report them. ROC-AUC is the Mann-Whitney statistic (ties count one half), so it needs no
threshold. Event metrics work on labelled windows and alarm start times: a window is detected when an
alarm starts inside it (delay = start - window start); an alarm starting outside every window (with
`slack_s` either side) is a false alarm, counted per hour of data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class PointMetrics:
    tp: int
    fp: int
    tn: int
    fn: int

    @staticmethod
    def of(predicted: BoolArray, truth: BoolArray) -> PointMetrics:
        p, t = np.asarray(predicted, bool), np.asarray(truth, bool)
        return PointMetrics(
            int((p & t).sum()), int((p & ~t).sum()), int((~p & ~t).sum()), int((~p & t).sum())
        )

    def __add__(self, other: PointMetrics) -> PointMetrics:
        return PointMetrics(self.tp + other.tp, self.fp + other.fp, self.tn + other.tn, self.fn + other.fn)

    @property
    def sensitivity(self) -> float:  # recall
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> float:
        return _ratio(self.tn, self.tn + self.fp)

    @property
    def ppv(self) -> float:  # precision
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def f1(self) -> float:
        p, r = self.ppv, self.sensitivity
        return 2 * p * r / (p + r) if p + r > 0 else float("nan")

    @property
    def far(self) -> float:
        return _ratio(self.fp, self.fp + self.tn)

    @property
    def mar(self) -> float:
        return _ratio(self.fn, self.fn + self.tp)

    def row(self) -> dict[str, float]:
        return {
            "precision": self.ppv,
            "recall": self.sensitivity,
            "f1": self.f1,
            "far": self.far,
            "mar": self.mar,
            "se": self.sensitivity,
            "sp": self.specificity,
            "ppv": self.ppv,
        }


def _ratio(a: int, b: int) -> float:
    return a / b if b else float("nan")


def roc_auc(scores: FloatArray, truth: BoolArray) -> float:
    """Area under the ROC curve; NaN scores count as the lowest score (no verdict = not anomalous)."""
    s = np.where(np.isnan(scores), -np.inf, scores)
    t = np.asarray(truth, bool)
    pos, neg = int(t.sum()), int((~t).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[t].sum() - pos * (pos + 1) / 2) / (pos * neg))


@dataclass(frozen=True, slots=True)
class EventMetrics:
    windows: int
    detected: int
    delays_s: tuple[float, ...]
    false_alarms: int
    hours: float

    @property
    def false_alarms_per_hour(self) -> float:
        return self.false_alarms / self.hours if self.hours > 0 else float("nan")

    @property
    def median_delay_s(self) -> float:
        return float(np.median(self.delays_s)) if self.delays_s else float("nan")

    def __add__(self, other: EventMetrics) -> EventMetrics:
        return EventMetrics(
            self.windows + other.windows,
            self.detected + other.detected,
            self.delays_s + other.delays_s,
            self.false_alarms + other.false_alarms,
            self.hours + other.hours,
        )


def event_metrics(
    starts: FloatArray, windows: list[tuple[float, float]], hours: float, slack_s: float = 0.0
) -> EventMetrics:
    """Windows detected by alarm starts inside them, delays, and starts outside every window."""
    starts = np.sort(np.asarray(starts, dtype=np.float64))
    delays: list[float] = []
    for lo, hi in windows:
        inside = starts[(starts >= lo - slack_s) & (starts <= hi)]
        if inside.size:
            delays.append(max(0.0, float(inside[0] - lo)))
    false = 0
    for s in starts:
        if not any(lo - slack_s <= s <= hi + slack_s for lo, hi in windows):
            false += 1
    return EventMetrics(len(windows), len(delays), tuple(delays), false, hours)
