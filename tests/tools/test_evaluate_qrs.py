"""tools.evaluate.qrs: the EC57 beat matching (one to one, nearest first, within the window)."""

from __future__ import annotations

import numpy as np

from tools.evaluate.qrs import match, score


def test_each_beat_and_detection_is_matched_at_most_once_nearest_first() -> None:
    reference = np.array([100, 200, 300, 1000], dtype=np.int64)
    # 205 is nearer to 200 than 150 is, so 150 goes to 100; 290 and 302 both fit 300: 290 is an FP;
    # 1100 is outside the 54-sample window of 1000
    detected = np.array([150, 205, 290, 302, 1100], dtype=np.int64)
    refs, dets = match(reference, detected, window=54)
    assert refs.tolist() == [0, 1, 2]
    assert detected[dets].tolist() == [150, 205, 302]


def test_out_of_window_detections_are_false_positives() -> None:
    reference = np.array([1000, 2000], dtype=np.int64)
    detected = np.array([1054, 2055], dtype=np.int64)
    refs, dets = match(reference, detected, window=54)
    assert refs.tolist() == [0]
    errors = np.abs(detected[dets] - reference[refs]).astype(np.float64)
    s = score("r", len(reference), len(detected), errors, 1.0, True)
    assert (s.tp, s.fn, s.fp) == (1, 1, 1)
    assert s.se == 0.5
    assert s.ppv == 0.5
