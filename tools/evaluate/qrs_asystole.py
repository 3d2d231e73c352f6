"""Asystole with real noise, and amplitude drops in fast rhythms: agent/ecg/qrs.py's re-learning under test.

    python -m tools.evaluate.qrs_asystole --data /work/shared/datasets --out eval/qrs_asystole

Three case families, all built from the MIT-BIH subset (lead MLII, 360 Hz) with fixed seeds before any
figure was looked at; each case is fed to the detector in 73-sample blocks.

- `noise`: real ECG (HOST_S s from a seeded beat of a host record), optionally dropped to DROPS x from
  DROP_BEFORE_S s before the asystole, then an asystole: the ECG ramps (0.1 s) to the median of its last
  2 s and stays flat there, with noise added, from 0.6 RR after a beat (its T wave past) for ASYSTOLE_S.
  The noise is scaled so that each burst's peak-to-peak (after removing its 0.3 s moving mean: wander is
  not what the detector sees) is AMPLITUDES x the host's median QRS height *at the current gain* (the
  median R-to-S range +-50 ms around the annotated beats, times the drop). Two kinds of noise:
  - `mitdb`: real noise from MIT-BIH 105 and 108 (the subset has no '~' noise annotations, only beat
    labels, so the noise is isolated by QRST cancellation: each beat's ECG -0.25..+0.45 s minus the
    median of the 9 of its 30 neighbours whose QRS is most alike (baseline of each removed), the residual
    being electrode motion, muscle and wander; the NOISE_WINDOWS 12 s stretches of the residual with the
    largest high-passed RMS, apart, are the pool);
  - `muscle`: Gaussian noise band-limited to 20-100 Hz (an FFT mask).
  Two patterns: `continuous` (the whole asystole) and `bursts` (bursts of 0.3-1.5 s, 0.3-2 s apart, each
  tapered over 50 ms and scaled on its own). Counted: detections in the first ALARM_WITHIN_S s of the
  asystole, and whether the asystole is *hidden*: no ALARM_GAP_S s without a detection between the last
  detection before the asystole and ALARM_WITHIN_S s into it (examples/cardiac-monitoring.toml's asystole
  alarm needs a gap over 3 s).
- `flat`: the same without the real noise: the flat line gets white noise of 0/10/20/30 µV, with or
  without 0.05 mV wander at 0.3 Hz, and lasts FLAT_S s (the re-learning's revision's 72 flat-line cases,
  rebuilt here on MIT-BIH hosts). Counted: detections in the flat line.
- `fast`: a host's beats re-spaced to a mean of FAST_BPM (each beat's RR scaled by one factor, so the
  rhythm's variation stays; beat k's ECG from 0.3 RR before its R to 0.7 RR after, joined to the next with
  a 20 ms cross-fade, so the QRS keeps its width and the T wave is cut short, as in a real tachycardia),
  dropped to DROPS x (1x: no drop, the reference) at FAST_DROP_S s, with the same polarity or inverted (a
  re-seated or swapped electrode: the QRS's shape changes). Counted over the FAST_AFTER_S s after the
  drop: reference beats not matched within 150 ms (lost), detections from 150 ms before the drop on
  matched to none (extra), and whether a gap over ALARM_GAP_S s without a detection occurs (a false
  asystole).

`--detector FILE` runs another version of qrs.py (e.g. main's) for a side-by-side comparison. Writes
`<out>/qrs_asystole.json` (every case) and `.md` (the tables).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tools.evaluate.datasets import MITDB_FS, SHARED, mitdb_folder, read_mitdb_record
from tools.evaluate.qrs import MATCH_WINDOW_S, POLAR_FRAME, match
from tools.evaluate.qrs_r_on_t import DetectorType, detect, load_detector

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

FS = MITDB_FS
HOSTS = ("100", "106", "116", "119", "121", "123")  # cleaner records; 105 and 108 give the noise
NOISE_RECORDS = ("105", "108")
ONSETS_PER_HOST = 2
SEED = 20261130
HOST_S = 40.0  # real ECG before the asystole
DROP_BEFORE_S = 20.0  # the drop comes this long before the asystole
DROPS = (1.0, 0.3, 0.2)
AMPLITUDES = (0.05, 0.1, 0.2, 0.5, 1.0)
KINDS = ("mitdb", "muscle")
PATTERNS = ("continuous", "bursts")
ASYSTOLE_S = 12.0
TAIL_S = 3.0  # flat line after the noise, so every decision about the asystole is made
ALARM_WITHIN_S = 10.0
ALARM_GAP_S = 3.0
FLAT_S = 60.0
FLAT_NOISE_MV = (0.0, 0.01, 0.02, 0.03)
FLAT_WANDER_MV = (0.0, 0.05)
FAST_BPM = (150.0, 165.0, 180.0)
FAST_SHAPES = ("same", "inverted")
FAST_DROP_S = 30.0
FAST_AFTER_S = 30.0
FAST_CROSSFADE_S = 0.02
NOISE_WINDOWS = 10  # per noise record
NOISE_WINDOW_S = 12.0
CANCEL_BEFORE_S, CANCEL_AFTER_S = 0.25, 0.45
CANCEL_NEIGHBOURS = 9
CANCEL_SEARCH = 30
FAST_PART_S = 0.3  # a burst's size is measured on the ECG less its moving mean over this
QRS_HALF_S = 0.05
BURST_S = (0.3, 1.5)
BURST_GAP_S = (0.3, 2.0)
TAPER_S = 0.05
MUSCLE_BAND_HZ = (20.0, 100.0)


@dataclass(frozen=True, slots=True)
class NoiseCase:
    family: str  # "noise" or "flat"
    host: str
    onset_beat: int
    drop: float
    kind: str  # mitdb / muscle, or "white" for the flat family
    pattern: str  # continuous / bursts, or "wander" / "no wander" for the flat family
    amplitude: float  # x the median QRS height, or µV of white noise for the flat family
    beats_in_window: int
    hidden: bool


@dataclass(frozen=True, slots=True)
class FastCase:
    host: str
    start_beat: int
    bpm: float
    drop: float
    shape: str
    reference_beats: int
    lost: int
    extra: int
    false_asystole: bool


def load(folder: Path, record: str) -> tuple[FloatArray, IntArray]:
    ecg, beats, _ = read_mitdb_record(folder, record)
    return ecg, beats


def moving_mean(x: FloatArray, seconds: float) -> FloatArray:
    n = max(1, round(seconds * FS))
    return np.convolve(np.pad(x, (n // 2, n - 1 - n // 2), mode="edge"), np.full(n, 1.0 / n), "valid")


def fast_part(x: FloatArray) -> FloatArray:
    return x - moving_mean(x, FAST_PART_S)


def size(x: FloatArray) -> float:
    """Peak-to-peak of what the detector sees: the ECG less its moving mean (no wander)."""
    f = fast_part(x)
    return float(f.max() - f.min())


def qrs_height(ecg: FloatArray, beats: IntArray) -> float:
    half = round(QRS_HALF_S * FS)
    inner = beats[(beats > half) & (beats < len(ecg) - half)]
    return float(np.median([np.ptp(ecg[b - half : b + half + 1]) for b in inner.tolist()]))


def cancel_qrst(ecg: FloatArray, beats: IntArray) -> FloatArray:
    """The ECG less each beat's local median beat: the median of the CANCEL_NEIGHBOURS of its
    CANCEL_SEARCH nearest beats whose QRS (+-QRS_HALF_S) is nearest in shape (108's QRS flips between two
    shapes); what is left is noise and wander."""
    before, after = round(CANCEL_BEFORE_S * FS), round(CANCEL_AFTER_S * FS)
    inner = beats[(beats >= before) & (beats < len(ecg) - after)]
    segments = np.stack([ecg[b - before : b + after] for b in inner.tolist()])
    segments = segments - np.median(segments, axis=1, keepdims=True)
    half = round(QRS_HALF_S * FS)
    qrs = segments[:, before - half : before + half + 1]
    qrs = qrs - qrs.mean(axis=1, keepdims=True)
    qrs = qrs / np.maximum(np.linalg.norm(qrs, axis=1, keepdims=True), 1e-12)
    out = ecg.copy()
    for k, b in enumerate(inner.tolist()):
        lo = min(max(0, k - CANCEL_SEARCH // 2), len(inner) - CANCEL_SEARCH - 1)
        near = [j for j in range(lo, lo + CANCEL_SEARCH + 1) if j != k]
        likeness = qrs[near] @ qrs[k]
        chosen = [near[j] for j in np.argsort(-likeness)[:CANCEL_NEIGHBOURS].tolist()]
        out[b - before : b + after] -= np.median(segments[chosen], axis=0)
    return out


def noise_pool(folder: Path) -> list[FloatArray]:
    """The NOISE_WINDOWS noisiest (high-passed RMS) 12 s stretches of each noise record's residual."""
    pool: list[FloatArray] = []
    n = round(NOISE_WINDOW_S * FS)
    for record in NOISE_RECORDS:
        ecg, beats = load(folder, record)
        residual = cancel_qrst(ecg, beats)
        fast = fast_part(residual)
        hop = n // 6
        starts = np.arange(0, len(ecg) - n, hop)
        power = np.array([float(np.sqrt(np.mean(fast[s : s + n] ** 2))) for s in starts.tolist()])
        chosen: list[int] = []
        for k in np.argsort(-power).tolist():
            s = int(starts[k])
            if all(abs(s - c) >= n for c in chosen):
                chosen.append(s)
            if len(chosen) == NOISE_WINDOWS:
                break
        pool.extend(residual[s : s + n] - np.median(residual[s : s + n]) for s in sorted(chosen))
    return pool


def muscle(rng: np.random.Generator, n: int) -> FloatArray:
    white = rng.normal(0.0, 1.0, n)
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(n, 1.0 / FS)
    spectrum[(freqs < MUSCLE_BAND_HZ[0]) | (freqs > MUSCLE_BAND_HZ[1])] = 0.0
    return np.fft.irfft(spectrum, n)


def taper(x: FloatArray) -> FloatArray:
    t = min(round(TAPER_S * FS), len(x) // 2)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(t) / t)
    out = x.copy()
    out[:t] *= ramp
    out[len(out) - t :] *= ramp[::-1]
    return out


def noise_source(rng: np.random.Generator, kind: str, pool: list[FloatArray], n: int) -> FloatArray:
    if kind == "muscle":
        return muscle(rng, n)
    stretch = pool[int(rng.integers(len(pool)))]
    start = int(rng.integers(len(stretch) - n + 1))
    return stretch[start : start + n].copy()


def asystole_noise(
    rng: np.random.Generator, kind: str, pattern: str, pool: list[FloatArray], target: float
) -> FloatArray:
    """ASYSTOLE_S s of noise, each burst (or the whole, if continuous) of size `target`."""
    n = round(ASYSTOLE_S * FS)
    out = np.zeros(n)
    if pattern == "continuous":
        burst = taper(noise_source(rng, kind, pool, n))
        return burst * target / size(burst)
    at = round(rng.uniform(0.0, 1.0) * FS)
    while at < n:
        length = min(round(rng.uniform(*BURST_S) * FS), n - at)
        if length > 2 * round(TAPER_S * FS):
            burst = taper(noise_source(rng, kind, pool, length))
            out[at : at + length] += burst * target / size(burst)
        at += length + round(rng.uniform(*BURST_GAP_S) * FS)
    return out


def host_with_asystole(
    ecg: FloatArray, beats: IntArray, onset_beat: int, drop: float, flat_s: float
) -> tuple[FloatArray, int]:
    """(HOST_S s of the host's ECG before the asystole, dropped from DROP_BEFORE_S s before it, then a flat
    line of `flat_s` s at its baseline; the asystole's first sample)."""
    rr = int(beats[onset_beat + 1] - beats[onset_beat])
    cut = int(beats[onset_beat]) + round(0.6 * rr)
    start = cut - round(HOST_S * FS)
    real = ecg[start:cut].copy()
    real[len(real) - round(DROP_BEFORE_S * FS) :] *= drop
    level = float(np.median(real[-round(2.0 * FS) :]))
    flat = np.full(round(flat_s * FS), level)
    ramp = round(0.1 * FS)
    flat[:ramp] = np.linspace(real[-1], level, ramp)
    return np.concatenate([real, flat]), len(real)


def hidden(peaks: IntArray, onset: int) -> bool:
    """Whether no ALARM_GAP_S s without a detection occurs from the last detection before the asystole
    to ALARM_WITHIN_S s into it."""
    before = peaks[peaks < onset]
    last = int(before[-1]) if len(before) else 0
    inside = peaks[(peaks >= onset) & (peaks <= onset + round(ALARM_WITHIN_S * FS))]
    times = np.concatenate([[last], inside, [onset + round(ALARM_WITHIN_S * FS)]])
    return bool(np.diff(times).max() <= round(ALARM_GAP_S * FS))


def onset_beats(beats: IntArray, rng: np.random.Generator) -> list[int]:
    """Seeded beats that can end a host stretch: HOST_S s of record before them, a next beat after."""
    first = int(np.searchsorted(beats, round((HOST_S + 1.0) * FS)))
    return sorted(
        int(k) for k in rng.choice(np.arange(first, len(beats) - 1), ONSETS_PER_HOST, replace=False)
    )


def noise_cases(detector_type: DetectorType, folder: Path, pool: list[FloatArray]) -> Iterator[NoiseCase]:
    for h, host in enumerate(HOSTS):
        ecg, beats = load(folder, host)
        height = qrs_height(ecg, beats)
        for onset_beat in onset_beats(beats, np.random.default_rng([SEED, h])):
            for drop in DROPS:
                base, onset = host_with_asystole(ecg, beats, onset_beat, drop, ASYSTOLE_S + TAIL_S)
                for k, kind in enumerate(KINDS):
                    for p, pattern in enumerate(PATTERNS):
                        for a, amplitude in enumerate(AMPLITUDES):
                            rng = np.random.default_rng([SEED, h, onset_beat, k, p, a])
                            case = base.copy()
                            noise = asystole_noise(rng, kind, pattern, pool, amplitude * height * drop)
                            case[onset : onset + len(noise)] += noise
                            peaks = detect(detector_type, case)
                            window = (peaks >= onset) & (peaks <= onset + round(ALARM_WITHIN_S * FS))
                            yield NoiseCase(
                                "noise", host, onset_beat, drop, kind, pattern, amplitude,
                                int(window.sum()), hidden(peaks, onset),
                            )  # fmt: skip
            for drop in DROPS:
                base, onset = host_with_asystole(ecg, beats, onset_beat, drop, FLAT_S)
                t = np.arange(len(base) - onset) / FS
                for w, wander in enumerate(FLAT_WANDER_MV):
                    for n, noise_mv in enumerate(FLAT_NOISE_MV):
                        rng = np.random.default_rng([SEED, h, onset_beat, 7, w, n])
                        case = base.copy()
                        case[onset:] += rng.normal(0.0, noise_mv, len(t)) + wander * np.sin(
                            2 * np.pi * 0.3 * t
                        )
                        peaks = detect(detector_type, case)
                        yield NoiseCase(
                            "flat", host, onset_beat, drop, "white", "wander" if wander else "no wander",
                            noise_mv * 1000.0, int((peaks >= onset).sum()), hidden(peaks, onset),
                        )  # fmt: skip


def respaced(
    ecg: FloatArray, beats: IntArray, start_beat: int, bpm: float, seconds: float
) -> tuple[FloatArray, IntArray]:
    """The host's beats from `start_beat` on, re-spaced to a mean of `bpm` (see the module docstring)."""
    rr = np.diff(beats[start_beat : start_beat + 400]).astype(np.float64)
    factor = (60.0 * FS / bpm) / float(rr.mean())
    fade = round(FAST_CROSSFADE_S * FS)
    out = np.empty(0)
    where: list[int] = []
    for k in range(len(rr) - 1):
        new_rr = rr[k] * factor
        r = int(beats[start_beat + k])
        lo, hi = r - round(0.3 * new_rr), r + round(0.7 * new_rr) + fade
        piece = ecg[lo:hi].copy()
        if len(out):
            ramp = np.linspace(0.0, 1.0, fade)
            piece[:fade] = out[-fade:] * (1.0 - ramp) + piece[:fade] * ramp
            out = out[:-fade]
        where.append(len(out) + r - lo)
        out = np.concatenate([out, piece])
        if len(out) > seconds * FS:
            break
    n = round(seconds * FS)
    marks = np.array(where, dtype=np.int64)
    return out[:n], marks[marks < n - round(0.5 * FS)]


def fast_cases(detector_type: DetectorType, folder: Path) -> Iterator[FastCase]:
    seconds = FAST_DROP_S + FAST_AFTER_S
    window = round(MATCH_WINDOW_S * FS)
    for h, host in enumerate(HOSTS):
        ecg, beats = load(folder, host)
        rng = np.random.default_rng([SEED, h, 9])
        for start_beat in sorted(
            rng.choice(np.arange(1, len(beats) - 420), ONSETS_PER_HOST, replace=False).tolist()
        ):
            for bpm in FAST_BPM:
                signal, marks = respaced(ecg, beats, int(start_beat), bpm, seconds)
                at = round(FAST_DROP_S * FS)
                for drop in DROPS:
                    for shape in FAST_SHAPES:
                        case = signal.copy()
                        case[at:] *= drop * (-1.0 if shape == "inverted" else 1.0)
                        peaks = detect(detector_type, case)
                        after_refs = marks[marks >= at]
                        after_peaks = peaks[peaks >= at - window]
                        refs, found = match(after_refs, after_peaks, window)
                        gaps = np.diff(np.concatenate([[at], peaks[peaks >= at], [len(case)]]))
                        yield FastCase(
                            host, int(start_beat), bpm, drop, shape, len(after_refs),
                            len(after_refs) - len(refs), len(after_peaks) - len(found),
                            bool(gaps.max() > round(ALARM_GAP_S * FS)),
                        )  # fmt: skip


def noise_table(cases: list[NoiseCase]) -> str:
    lines = [
        "| drop | noise | pattern | " + " | ".join(f"{a:g}x" for a in AMPLITUDES) + " |",
        "|---|---|---|" + "---:|" * len(AMPLITUDES),
    ]
    for drop in DROPS:
        for kind in KINDS:
            for pattern in PATTERNS:
                cells = []
                for a in AMPLITUDES:
                    sel = [
                        c
                        for c in cases
                        if c.family == "noise"
                        and (c.drop, c.kind, c.pattern, c.amplitude) == (drop, kind, pattern, a)
                    ]
                    cells.append(
                        f"{sum(c.hidden for c in sel)}/{len(sel)} ({sum(c.beats_in_window for c in sel)})"
                    )
                lines.append(f"| {drop:g}x | {kind} | {pattern} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def flat_table(cases: list[NoiseCase]) -> str:
    lines = ["| drop | cases | beats in the flat line | hidden |", "|---|---:|---:|---:|"]
    for drop in DROPS:
        sel = [c for c in cases if c.family == "flat" and c.drop == drop]
        beats, hiding = sum(c.beats_in_window for c in sel), sum(c.hidden for c in sel)
        lines.append(f"| {drop:g}x | {len(sel)} | {beats} | {hiding} |")
    return "\n".join(lines)


def fast_table(cases: list[FastCase]) -> str:
    lines = [
        "| bpm | drop | shape | reference beats | lost | extra | false asystoles |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for bpm in FAST_BPM:
        for drop in DROPS:
            for shape in FAST_SHAPES:
                sel = [c for c in cases if (c.bpm, c.drop, c.shape) == (bpm, drop, shape)]
                lines.append(
                    f"| {bpm:g} | {drop:g}x | {shape} | {sum(c.reference_beats for c in sel)} | "
                    f"{sum(c.lost for c in sel)} | {sum(c.extra for c in sel)} | "
                    f"{sum(c.false_asystole for c in sel)}/{len(sel)} |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.evaluate.qrs_asystole", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, default=Path("eval/qrs_asystole"), help="report folder")
    parser.add_argument("--data", type=Path, default=None, help=f"datasets root (default {SHARED})")
    parser.add_argument(
        "--detector", type=Path, default=None, help="a qrs.py to run instead of agent/ecg/qrs.py"
    )
    parser.add_argument("--families", default="noise,fast", help="comma-separated: noise (with flat), fast")
    args = parser.parse_args(argv)
    detector_type = load_detector(args.detector)
    folder = mitdb_folder(args.data)
    families = set(args.families.split(","))
    noise: list[NoiseCase] = []
    fast: list[FastCase] = []
    if "noise" in families:
        pool = noise_pool(folder)
        for case in noise_cases(detector_type, folder, pool):
            noise.append(case)
            if len(noise) % 60 == 0:
                print(f"{len(noise)} noise/flat cases", file=sys.stderr, flush=True)
    if "fast" in families:
        fast = list(fast_cases(detector_type, folder))
    source = args.detector or "agent/ecg/qrs.py"
    text = [
        f"# Asystole with real noise, drops in fast rhythms ({source})",
        "",
        f"Seed {SEED}, {POLAR_FRAME}-sample blocks.",
    ]
    if noise:
        text += [
            "",
            f"Hidden asystoles (no {ALARM_GAP_S:g} s gap within {ALARM_WITHIN_S:g} s) of cases, "
            "(detections in those 10 s), per noise size (x the median QRS height at the current gain):",
            "",
            noise_table(noise),
            "",
            f"Flat line {FLAT_S:g} s, white noise 0-30 µV, with and without 0.05 mV wander:",
            "",
            flat_table(noise),
        ]
    if fast:
        text += [
            "",
            f"Fast rhythms, drop at {FAST_DROP_S:g} s, counted over {FAST_AFTER_S:g} s after:",
            "",
            fast_table(fast),
        ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "qrs_asystole.md").write_text("\n".join(text) + "\n")
    payload = {
        "detector": str(source),
        "seed": SEED,
        "noise": [asdict(c) for c in noise],
        "fast": [asdict(c) for c in fast],
    }
    (args.out / "qrs_asystole.json").write_text(json.dumps(payload, indent=1) + "\n")
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
