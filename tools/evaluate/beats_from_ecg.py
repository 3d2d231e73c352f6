"""Beat datasets with the beats found by the gateway in the raw ECG instead of the annotated ones.

`load_cpsc` and `load_mitdb` give the RR interval of each *annotated* beat: what a detector sees behind a
perfect beat detector. A gateway reading an ECG-only device has its own: the same records are cut into
device frames (`FRAME` samples, a Polar H10 notification), passed through `agent.ecg.rr_from_ecg.RrFromEcg`
(the stage the daemon runs for `[devices.beats]`, with `agent.ecg.qrs.QrsDetector`), and its RR readings
become the series. Beats the detector misses are absent, false ones present; each interval is labelled
from the annotations at the time of its two beats (AF when the rhythm annotation says AF at both, as
`load_cpsc` labels annotated intervals; PVC when the beat ending it matches an annotated PVC within
`MATCH_S`). The rest of an evaluation (the pipeline replay, the fits) is unchanged.
`cpsc_beats_from_ecg` keeps every channel of the RR stream for the `pvc` detector on AF records.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.config.schema import BeatsConfig
from agent.ecg.rr_from_ecg import CHANNELS as RR_CHANNELS
from agent.ecg.rr_from_ecg import RrFromEcg
from agent.readings import Reading
from tools.evaluate.datasets import T0, BoolArray, FloatArray, Series, _windows_of, dataset_folder

FRAME = 73  # samples per reading: a Polar H10 ECG notification
MATCH_S = 0.150  # ANSI/AAMI EC57's beat match window
AF_CHANNELS = ("rr", "p_wave")  # what `cpsc_from_ecg` keeps: a config's af takes rr, or rr and p_wave


def detected_rr(ecg: FloatArray, fs: float, frame: int = FRAME) -> tuple[FloatArray, FloatArray]:
    """(times, values) of the RR readings the daemon's stage makes from `ecg` (times in seconds from its
    first sample; values (N, len(RR_CHANNELS)), the interval first, NaN for a channel a reading left
    out: the first beats' qrs_shape), one per beat: NaN readings (flagged ECG; none is flagged here) and
    a pause's readings of hr alone are left out."""
    stage = RrFromEcg("eval", BeatsConfig())
    times: list[float] = []
    rows: list[FloatArray] = []
    for start in range(0, len(ecg), frame):
        block = ecg[start : start + frame, None]
        reading = Reading("eval/ecg", ("ecg",), block, start / fs, start / fs, 1.0 / fs)
        for out in stage.take(reading):
            # Beats only: a pause's reading carries hr alone, a flagged ECG's no value.
            if out.stream == "eval/rr" and out.channels[0] == "rr" and np.isfinite(out.values[0, 0]):
                row = np.full(len(RR_CHANNELS), np.nan)
                row[[RR_CHANNELS.index(c) for c in out.channels]] = out.values[0]
                times.append(out.wall_time)
                rows.append(row)
    return np.array(times), np.array(rows).reshape(len(rows), len(RR_CHANNELS))


def _state_at(change_times: FloatArray, states: BoolArray, t: FloatArray) -> BoolArray:
    """The rhythm state in force at each time `t` (False before the first annotation)."""
    if not len(change_times):
        return np.zeros(len(t), dtype=bool)
    idx = np.searchsorted(change_times, t, side="right") - 1
    return np.where(idx >= 0, states[np.clip(idx, 0, None)], False)


def cpsc_from_ecg(root: Path | None = None, frame: int = FRAME) -> list[Series]:
    """Every CPSC-2021 record (lead 0, 200 Hz): RR per detected beat and its atrial activity (`AF_CHANNELS`:
    the channels an af detector can take), labelled AF as `load_cpsc` labels an annotated interval (the
    rhythm annotation says AF at both of its beats)."""
    columns = [RR_CHANNELS.index(c) for c in AF_CHANNELS]
    out: list[Series] = []
    for s in cpsc_beats_from_ecg(root, frame):
        labels = (s.extra["af"] > 0) & (s.extra["af_before"] > 0)
        values = s.values[:, columns]
        out.append(
            Series(s.name, s.group, AF_CHANNELS, s.times, values, labels, _windows_of(s.times, labels))
        )
    return out


AF_ONSET_BEATS = 30  # the beats of an AF episode counted as its onset (`cpsc_beats_from_ecg`)


def cpsc_beats_from_ecg(root: Path | None = None, frame: int = FRAME) -> list[Series]:
    """Every CPSC-2021 record (lead 0, 200 Hz): every channel of the RR stream per detected beat
    (`RR_CHANNELS`), label = the beat matches an annotated "V" beat within `MATCH_S`; `extra` says per
    beat "af" (the rhythm annotation in force at the beat is AF), "af_before" (the same at the beat that
    begins its interval) and "af_onset" (one of the first
    `AF_ONSET_BEATS` detected beats of an AF episode that follows another rhythm: an episode from the
    record's first sample has no onset)."""
    import wfdb  # tools-only dependency (evaluate extra)

    folder = dataset_folder(root, "ECG/cpsc2021_sample", "*.hea", "CPSC-2021")
    out: list[Series] = []
    for header in sorted(folder.glob("*.hea")):
        record = header.stem
        signal = wfdb.rdrecord(str(folder / record)).p_signal[:, 0].astype(np.float64)
        ann = wfdb.rdann(str(folder / record), "atr")
        fs = float(ann.fs)
        symbols = np.array(ann.symbol)
        samples = np.asarray(ann.sample)
        rhythm = [
            (s / fs, n.strip().startswith("(AF"))
            for s, sym, n in zip(samples, symbols, ann.aux_note, strict=True)
            if sym == "+" and n
        ]
        change_t = np.array([t for t, _ in rhythm])
        change_af = np.array([af for _, af in rhythm], dtype=bool)
        times, values = detected_rr(signal, fs, frame)
        af = _state_at(change_t, change_af, times)
        af_before = _state_at(change_t, change_af, times - values[:, 0])
        onset = np.zeros(len(times), dtype=bool)
        for k, (t, is_af) in enumerate(rhythm):
            # Before the first annotation the rhythm counts as not AF (`_state_at`).
            if is_af and t > 0 and not (k > 0 and rhythm[k - 1][1]):
                first = int(np.searchsorted(times, t))
                onset[first : first + AF_ONSET_BEATS] = True
        v_t = samples[symbols == "V"] / fs
        out.append(
            Series(
                name=record,
                group=record.split("_")[1],
                channels=RR_CHANNELS,
                times=T0 + times,
                values=values,
                labels=_matches(times, v_t),
                extra={
                    "af": af.astype(np.float64),
                    "af_before": af_before.astype(np.float64),
                    "af_onset": (onset & af).astype(np.float64),
                },
            )
        )
    return out


def _matches(times: FloatArray, targets: FloatArray) -> BoolArray:
    """Each time lies within `MATCH_S` of one of the sorted `targets`."""
    if not len(targets):
        return np.zeros(len(times), dtype=bool)
    nearest = np.searchsorted(targets, times)
    gaps = np.minimum(
        np.abs(times - targets[np.clip(nearest, 0, len(targets) - 1)]),
        np.abs(times - targets[np.clip(nearest - 1, 0, len(targets) - 1)]),
    )
    return np.asarray(gaps <= MATCH_S, dtype=bool)


def mitdb_from_ecg(annotated: list[Series], fs: float, frame: int = FRAME) -> list[Series]:
    """The MIT-BIH records of `load_mitdb` (their `extra["ecg"]`): every channel of the RR stream per
    detected beat (`RR_CHANNELS`: rr, hr, qrs_shape, qrs_core, p_wave), label = the beat matches an
    annotated PVC within `MATCH_S`."""
    out: list[Series] = []
    for s in annotated:
        times, values = detected_rr(s.extra["ecg"], fs, frame)
        pvc_t = s.extra["r_peak"][s.labels] / fs
        out.append(
            Series(
                name=s.name,
                group=s.group,
                channels=RR_CHANNELS,
                times=T0 + times,
                values=values,
                labels=_matches(times, pvc_t),
            )
        )
    return out
