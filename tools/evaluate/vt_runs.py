"""Ventricular tachycardia: do a config's alarms announce a run of PVCs, and how soon?

    python -m tools.evaluate.vt_runs --config examples/cardiac-monitoring.toml --out eval/vt-runs --jobs 1

Real runs are few in the MIT-BIH subset (106: one run of 3; 200: six of 3-4), so runs of each record's
own PVCs are spliced into its own rhythm, as `tools.evaluate.qrs_r_on_t` splices single PVCs:

- Records `RECORDS` (those with PVCs to take); per record `HOSTS` hosts, drawn once with seed `SEED`: a
  normal beat with no annotated PVC in the `CLEAN_BEFORE_S` before it, at least `HOST_SPACING_S` from the
  other hosts, with room for the longest run and `PRE_S` / `POST_S` around it; and one donor per host, an
  annotated PVC of the record (the run is monomorphic: every beat is the donor's).
- Each case is a host x run length `LENGTHS` x rate `RATES_BPM`: the run's first beat comes one run
  interval after the host, the others at that interval; the record resumes at its first beat at least
  max(the host's own RR, 0.55 s) after the run's last beat. Between the host's QRS (+0.1 s) and 0.3 s
  before that beat the ECG becomes the straight line through the means of its own first and last 10 ms
  there, and the donor's ECG +-0.2 s (baseline removed, tapered: `qrs_r_on_t.pvc_wave`) is added at every
  run beat (at 240 bpm consecutive beats overlap, as they merge in a fast VT).
- The case is the segment `PRE_S` before the host to `POST_S` after the resumed beat, cut into 73-sample
  frames (a Polar H10 notification) and passed through the daemon's ECG -> RR stage
  (`agent.ecg.rr_from_ecg`) and, one RR reading at a time, through `agent.pipeline.Pipeline` with the
  config's detectors on the RR stream and their alarm rules (a fresh stage and pipeline per case).

An alarm's time is when the reading that raised it left the stage: the end of the ECG frame that
completed it (the QRS detector's delay and the beat shape's 0.4 s included), not the beat's own stamp.
Per length x rate, for every condition of the config: how many runs it alarmed (a START from the run's
first beat to `AFTER_S` after its last), the median and largest delay from the first beat of the run, and
the conditions already active at the run's first beat; beats of the runs found by the QRS detector
(within 150 ms, one-to-one). For the VT condition (`--condition`, default ventricular_tachycardia) also
its starts outside any run's window in the spliced segments.

The 12 original records (`load_mitdb`, whole) go through the same stage and pipeline: every start of the
VT condition, and its alarmed seconds, sorted into "at a real run" (from the first beat of an annotated
run of >= 3 PVCs at > 100 bpm to `AFTER_S` after its last) and false; couplets and bigeminy are false.

The adoption rule (fixed before any figure) is checked at the end: runs of >= 5 beats at >= 150 bpm
alarmed in >= 90 % of cases with a median delay <= 3 s, and <= 1 false start on the original records.

`--part runs` / `records` runs one half; `--part cpsc` only the 18 CPSC-2021 records (lead 0, 200 Hz:
paroxysmal AF and other rhythms, annotated V beats), a held-out check of false VT starts. `--jitter J`
makes the spliced runs irregular (each interval times 1 + U(-J, J), seeded per case): not the fixed case
set, a check of the regularity limit. A config with only the VT detector and its rule gives the same VT
figures (the other rules do not act on it) at a fifth of the pipeline's cost.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from agent.config.loader import load_config
from agent.config.schema import AgentConfig, BeatsConfig
from agent.ecg.rr_from_ecg import RrFromEcg
from agent.readings import Quality, Reading
from tools.evaluate.datasets import MITDB_FS, T0, dataset_folder, mitdb_folder, read_mitdb_record
from tools.evaluate.qrs import MATCH_WINDOW_S, POLAR_FRAME, match
from tools.evaluate.qrs_r_on_t import HALF_WIDTH_S, pvc_wave
from tools.evaluate.replay import Episode, pool_map, stage_device, timed_episodes
from tools.evaluate.report import table, write_report

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

RECORDS = ("106", "119", "200")
ALL_RECORDS = ("100", "102", "104", "105", "106", "108", "114", "116", "119", "121", "123", "200")
LENGTHS = (3, 5, 8, 15, 40)
RATES_BPM = (110, 150, 200, 240)
HOSTS = 8
SEED = 2015
CLEAN_BEFORE_S = 10.0  # no annotated PVC this long before the host: the run starts from sinus rhythm
HOST_SPACING_S = 60.0
PRE_S = 150.0  # ECG before the host in a case: the stage's template and the detectors' history fill
POST_S = 30.0
AFTER_S = 5.0  # a start this long after a run's last beat still counts for it
AFTER_HOST_S = 0.1  # the host's QRS is kept
BEFORE_RESUME_S = 0.3  # the resumed beat's P wave and QRS are kept
MIN_RESUME_S = 0.55
ENDS_S = 0.01
REAL_RUN_BEATS = 3  # AHA/ACC: VT is >= 3 consecutive ventricular beats at > 100 bpm
REAL_RUN_BPM = 100.0
VT = "ventricular_tachycardia"


# -- the records and the case set ------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def load_record(root: Path | None, record: str) -> tuple[FloatArray, IntArray, BoolArray]:
    """(MLII in mV, every annotated beat's sample, whether it is a PVC)."""
    return read_mitdb_record(mitdb_folder(root), record)


@dataclass(frozen=True, slots=True)
class Case:
    record: str
    host: int  # the annotated normal beat (sample) the run follows
    donor: int  # the annotated PVC (sample) whose ECG every beat of the run is
    length: int
    rate_bpm: int


def longest_run_s() -> float:
    return max(LENGTHS) * 60.0 / min(RATES_BPM) + 2.0


# Whether beat k (of a record's annotated beats, PVC or not) may host a run.
HostTest = Callable[[IntArray, BoolArray, int], bool]


def clean_before(beats: IntArray, is_pvc: BoolArray, k: int) -> bool:
    """A normal beat with no annotated PVC in the `CLEAN_BEFORE_S` before it: the run starts from sinus
    rhythm (vt_runs' own hosts)."""
    b = int(beats[k])
    pvc_at = beats[is_pvc]
    return not is_pvc[k] and not np.any((pvc_at >= b - CLEAN_BEFORE_S * MITDB_FS) & (pvc_at <= b))


def draw_hosts(
    root: Path | None,
    record: str,
    *,
    eligible: HostTest = clean_before,
    count: int = HOSTS,
    run_s: float | None = None,
    at_least: int | None = None,
) -> list[tuple[int, int]]:
    """`count` (host, donor) pairs of `record`, drawn with the fixed seed (the same for every case):
    hosts that pass `eligible`, with room for a run of `run_s` (default: vt_runs' longest) and the case's
    context around it; fewer than `at_least` (default `count`) is an error."""
    ecg, beats, is_pvc = load_record(root, record)
    fs = MITDB_FS
    rng = np.random.default_rng([SEED, int(record)])
    pvc_at = beats[is_pvc]
    room_after = ((longest_run_s() if run_s is None else run_s) + POST_S + 5.0) * fs
    eligible_at = []
    for k in range(1, len(beats) - 1):
        b = int(beats[k])
        if b < PRE_S * fs or b + room_after > len(ecg) or not eligible(beats, is_pvc, k):
            continue
        eligible_at.append(b)
    hosts: list[int] = []
    for b in rng.permutation(eligible_at).tolist():
        if all(abs(b - h) >= HOST_SPACING_S * fs for h in hosts):
            hosts.append(int(b))
        if len(hosts) == count:
            break
    if len(hosts) < (count if at_least is None else at_least):
        raise RuntimeError(f"record {record}: only {len(hosts)} hosts {HOST_SPACING_S:.0f} s apart")
    half = round(HALF_WIDTH_S * fs)
    donors = pvc_at[(pvc_at >= half) & (pvc_at < len(ecg) - half)]
    chosen = rng.choice(donors, len(hosts), replace=False)
    return list(zip(sorted(hosts), (int(d) for d in chosen), strict=True))


def case_set(root: Path | None) -> list[Case]:
    return [
        Case(record, host, donor, length, rate)
        for record in RECORDS
        for host, donor in draw_hosts(root, record)
        for length in LENGTHS
        for rate in RATES_BPM
    ]


@dataclass(frozen=True, slots=True)
class Spliced:
    ecg: FloatArray  # the case's segment
    beats: IntArray  # every beat in it (the record's kept ones and the run's), sorted, samples
    is_run: BoolArray
    onset: int  # the run's first beat
    last: int  # its last beat


def resumed_beat(beats: IntArray, host: int, last: int) -> int:
    """The record's first beat at least max(the host's own RR, `MIN_RESUME_S`) after a run's `last` beat."""
    k = int(np.searchsorted(beats, host))
    host_rr = host - int(beats[k - 1])
    return int(beats[np.searchsorted(beats, last + max(host_rr, round(MIN_RESUME_S * MITDB_FS)))])


def splice_run(out: FloatArray, ecg: FloatArray, donor: int, host: int, run: IntArray, resume: int) -> None:
    """In `out` (a copy of `ecg`), the record between `host` and `resume` becomes a straight line with
    the donor's wave added at every beat of `run` (the module docstring)."""
    fs = MITDB_FS
    span = slice(host + round(AFTER_HOST_S * fs), resume - round(BEFORE_RESUME_S * fs))
    ends = round(ENDS_S * fs)
    part = out[span]
    out[span] = np.linspace(part[:ends].mean(), part[-ends:].mean(), len(part))
    wave = pvc_wave(ecg, donor)
    half = len(wave) // 2
    for at in run.tolist():
        out[at - half : at + half + 1] += wave


def splice(root: Path | None, case: Case, jitter: float = 0.0) -> Spliced:
    ecg, beats, _ = load_record(root, case.record)
    fs = MITDB_FS
    interval = round(60.0 / case.rate_bpm * fs)
    host = case.host
    run = host + interval * np.arange(1, case.length + 1)
    if jitter:  # irregular runs: each interval times 1 + U(-jitter, jitter), drawn per case
        rng = np.random.default_rng([SEED, case.host, case.length, case.rate_bpm])
        factors = 1.0 + jitter * rng.uniform(-1.0, 1.0, case.length)
        run = host + np.round(np.cumsum(interval * factors)).astype(np.int64)
    resume = resumed_beat(beats, host, int(run[-1]))
    out = ecg.copy()
    splice_run(out, ecg, case.donor, host, run, resume)
    kept = beats[(beats <= host) | (beats >= resume)]
    start, stop = host - round(PRE_S * fs), resume + round(POST_S * fs)
    every = np.concatenate([kept, run])
    order = np.argsort(every, kind="stable")
    is_run = np.arange(len(every))[order] >= len(kept)
    every = every[order]
    inside = (every >= start) & (every < stop)
    return Spliced(
        out[start:stop], every[inside] - start, is_run[inside], int(run[0]) - start, int(run[-1]) - start
    )


# -- the stage and the pipeline --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Beat:
    reading: Reading
    left_s: float  # when the stage gave it (s from the segment's first sample): its frame's end


def frames(
    ecg: FloatArray, fs: float = MITDB_FS, lost: range = range(0), off: range = range(0)
) -> Iterator[tuple[int, Reading]]:
    """The segment as a Polar H10 delivers it: (first sample, reading) per `POLAR_FRAME` samples. The
    frames numbered in `lost` are not delivered (a BLE drop); the next one carries GAP, as a BLE source
    sets it after a sequence gap. Those numbered in `off` come with NaN samples and NO_CONTACT (a lead
    off: a patch goes on sending, its sensor-contact bit cleared)."""
    after_drop = False
    for index, start in enumerate(range(0, len(ecg), POLAR_FRAME)):
        if index in lost:
            after_drop = True
            continue
        block = ecg[start : start + POLAR_FRAME, None]
        quality = Quality.GAP if after_drop else Quality.OK
        if index in off:
            block, quality = np.full_like(block, np.nan), quality | Quality.NO_CONTACT
        after_drop = False
        yield start, Reading("eval/ecg", ("ecg",), block, T0 + start / fs, start / fs, 1.0 / fs, quality)


def stage_readings(
    ecg: FloatArray, rr_stream: str, fs: float = MITDB_FS, lost: range = range(0), off: range = range(0)
) -> list[Beat]:
    """Every reading the daemon's stage puts on the RR stream, in order, with when it left (`lost`:
    frames not delivered, `off`: frames of a lead off, `frames`)."""
    stage = RrFromEcg("eval", BeatsConfig(rr_stream=rr_stream))
    out = []
    for start, reading in frames(ecg, fs, lost, off):
        left = (start + reading.n_samples) / fs
        out += [Beat(r, left) for r in stage.take(reading) if r.stream == f"eval/{rr_stream}"]
    return out


def beat_samples(beats: Sequence[Beat]) -> IntArray:
    """The R peak (sample) of each reading that is a beat (an interval), not a pause's or a no-value one."""
    times = [
        b.reading.wall_time
        for b in beats
        if b.reading.channels[0] == "rr" and np.isfinite(b.reading.values[0, 0])
    ]
    return np.round((np.array(times, dtype=np.float64) - T0) * MITDB_FS).astype(np.int64)


def rr_config(path: Path) -> AgentConfig:
    """The config's detectors on its beat stream and their alarm rules; its devices replaced by the
    stand-in of the stage's device (`replay.stage_device`)."""
    config = load_config(path)
    streams = [d.beats.rr_stream for d in config.devices if d.beats is not None] or ["rr"]
    detectors = tuple(d for d in config.detectors if d.stream == streams[0])
    ids = {d.id for d in detectors}
    alarms = tuple(r for r in config.alarms if r.detector in ids)
    devices = (stage_device(streams[0]),)
    return dataclasses.replace(config, devices=devices, detectors=detectors, alarms=alarms)


def episodes(config: AgentConfig, beats: Sequence[Beat]) -> list[Episode]:
    """The episodes of the config's rules, timed by when the reading that raised each START and END left
    the stage (s from the segment's first sample)."""
    conditions = {r.condition for r in config.alarms}
    return timed_episodes(config, ((beat.reading, beat.left_s) for beat in beats), conditions)


# -- one case, one record ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: Case
    found: int  # run beats the QRS detector found
    starts: dict[str, float]  # condition -> delay of its first start in the run's window (s)
    active_at_onset: tuple[str, ...]
    vt_outside: int  # starts of the VT condition outside the run's window


def _case_job(job: tuple[Path, Path | None, Case, str, float]) -> CaseResult:
    config_path, root, case, vt, jitter = job
    return judge_case(config_path, root, case, vt, jitter)


# The frames of a spliced segment not delivered (`frames`), chosen from where its run is.
LostFrames = Callable[[Spliced], range]


def judge_case(
    config_path: Path,
    root: Path | None,
    case: Case,
    vt: str,
    jitter: float = 0.0,
    lost: LostFrames | None = None,
    off: LostFrames | None = None,
) -> CaseResult:
    """One case spliced, through the stage and the config's pipeline (`lost`: frames not delivered;
    `off`: frames of a lead off, `frames`)."""
    config = rr_config(config_path)
    rr_stream = config.detectors[0].stream
    spliced = splice(root, case, jitter)
    no_frames = range(0)
    beats = stage_readings(
        spliced.ecg,
        rr_stream,
        lost=lost(spliced) if lost else no_frames,
        off=off(spliced) if off else no_frames,
    )
    peaks = beat_samples(beats)
    refs, _ = match(spliced.beats, peaks, round(MATCH_WINDOW_S * MITDB_FS))
    found = int(spliced.is_run[refs].sum())
    onset_s, last_s = spliced.onset / MITDB_FS, spliced.last / MITDB_FS
    starts: dict[str, float] = {}
    active: list[str] = []
    outside = 0
    for e in episodes(config, beats):
        in_window = onset_s <= e.start <= last_s + AFTER_S
        if in_window and e.condition not in starts:
            starts[e.condition] = e.start - onset_s
        if e.start < onset_s and (e.end is None or e.end > onset_s):
            active.append(e.condition)
        if e.condition == vt and not in_window:
            outside += 1
    return CaseResult(case, found, starts, tuple(sorted(set(active))), outside)


@dataclass(frozen=True, slots=True)
class RecordResult:
    record: str
    hours: float
    real_runs: int  # annotated runs of >= 3 PVCs at > 100 bpm
    true_starts: list[float]  # VT starts at a real run (s into the record)
    false_starts: list[float]
    true_s: float  # alarmed seconds of those episodes
    false_s: float


def real_runs(beats: IntArray, is_pvc: BoolArray, fs: float = MITDB_FS) -> list[tuple[float, float]]:
    """(first, last) beat times (s) of the annotated runs of >= REAL_RUN_BEATS PVCs at > REAL_RUN_BPM."""
    out = []
    k = 0
    while k < len(beats):
        if not is_pvc[k]:
            k += 1
            continue
        j = k
        while j < len(beats) and is_pvc[j]:
            j += 1
        if j - k >= REAL_RUN_BEATS:
            mean_rr = (beats[j - 1] - beats[k]) / (j - 1 - k) / fs
            if 60.0 / mean_rr > REAL_RUN_BPM:
                out.append((beats[k] / fs, beats[j - 1] / fs))
        k = j
    return out


def _record_job(job: tuple[Path, Path | None, str, str]) -> RecordResult:
    config_path, root, record, vt = job
    ecg, beats, is_pvc = load_record(root, record)
    return judge_record(config_path, record, ecg, MITDB_FS, beats, is_pvc, vt)


# The beat annotations of WFDB (MIT-BIH's and CPSC-2021's); the others are rhythm, noise or comments.
BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")


def load_cpsc_record(header: Path) -> tuple[FloatArray, float, IntArray, BoolArray]:
    """A CPSC-2021 record: (lead 0, its sampling rate, every annotated beat's sample, whether it is a PVC)."""
    import wfdb  # tools-only dependency (evaluate extra)

    path = str(header.with_suffix(""))
    ecg = wfdb.rdrecord(path).p_signal[:, 0].astype(np.float64)
    ann = wfdb.rdann(path, "atr")
    symbols = np.array(ann.symbol)
    is_beat = np.isin(symbols, list(BEAT_SYMBOLS))
    beats = np.asarray(ann.sample)[is_beat].astype(np.int64)
    return ecg, float(ann.fs), beats, symbols[is_beat] == "V"


def _cpsc_job(job: tuple[Path, Path, str]) -> RecordResult:
    config_path, header, vt = job
    ecg, fs, beats, is_pvc = load_cpsc_record(header)
    return judge_record(config_path, header.stem, ecg, fs, beats, is_pvc, vt)


def judge_record(
    config_path: Path, name: str, ecg: FloatArray, fs: float, beats: IntArray, is_pvc: BoolArray, vt: str
) -> RecordResult:
    """The VT starts on a whole record, at a real run or false."""
    config = rr_config(config_path)
    runs = real_runs(beats, is_pvc, fs)
    readings = stage_readings(ecg, config.detectors[0].stream, fs)
    found = [e for e in episodes(config, readings) if e.condition == vt]
    last = len(ecg) / fs
    true_starts, false_starts, true_s, false_s = [], [], 0.0, 0.0
    for e in found:
        length = (e.end if e.end is not None else last) - e.start
        if any(a <= e.start <= b + AFTER_S for a, b in runs):
            true_starts.append(e.start)
            true_s += length
        else:
            false_starts.append(e.start)
            false_s += length
    return RecordResult(name, last / 3600.0, len(runs), true_starts, false_starts, true_s, false_s)


# -- the report ----------------------------------------------------------------------------------------------


PARTS = ("all", "runs", "records", "cpsc")


def evaluate(
    config_path: Path, root: Path | None, jobs: int, vt: str, jitter: float = 0.0, part: str = "all"
) -> str:
    """The report; `part` "runs" or "records" runs only the spliced runs or the original records (the
    adoption rule needs both), "cpsc" only the held-out CPSC-2021 records."""
    cases = case_set(root) if part in ("all", "runs") else []
    results = pool_map(_case_job, [(config_path, root, c, vt, jitter) for c in cases], jobs)
    names = ALL_RECORDS if part in ("all", "records") else ()
    records = pool_map(_record_job, [(config_path, root, r, vt) for r in names], jobs)
    if part == "cpsc":
        folder = dataset_folder(root, "ECG/cpsc2021_sample", "*.hea", "CPSC-2021")
        headers = sorted(folder.glob("*.hea"))
        held_out = pool_map(_cpsc_job, [(config_path, h, vt) for h in headers], jobs)
        title = "Held out: CPSC-2021, lead 0, 200 Hz (AF and other rhythms)"
        return "\n".join(
            [f"# Runs of PVCs: the alarms of {config_path}", "", *_records_section(held_out, vt, title)]
        )
    conditions = sorted({r.condition for r in rr_config(config_path).alarms})
    lines = [f"# Runs of PVCs: the alarms of {config_path}", ""]
    if results:
        lines += [
            f"{len(cases)} spliced runs ({len(RECORDS)} records x {HOSTS} hosts x {len(LENGTHS)} lengths x "
            f"{len(RATES_BPM)} rates, seed {SEED}"
            + (f"; intervals jittered by up to +-{100 * jitter:g} %" if jitter else "; regular runs")
            + "); beats found in the ECG by the daemon's stage, alarms "
            "through the pipeline one reading at a time; delays from the run's first beat to the moment the "
            f"reading that started the alarm left the stage; a start counts up to {AFTER_S:g} s after the "
            "run's last beat.",
            "",
            *_runs_section(results, conditions, vt),
            "",
            _fast_runs(results, vt)[0],
            "",
        ]
    if records:
        lines += [*_records_section(records, vt), ""]
    if results and records:
        lines += _rule(results, records, vt)
    return "\n".join(lines)


def _cell(results: list[CaseResult], condition: str) -> str:
    delays = [r.starts[condition] for r in results if condition in r.starts]
    if not delays:
        return f"0 / {len(results)}"
    return f"{len(delays)} / {len(results)}, {np.median(delays):.1f} s (max {max(delays):.1f})"


def _runs_section(results: list[CaseResult], conditions: list[str], vt: str) -> list[str]:
    rows = []
    for length in LENGTHS:
        for rate in RATES_BPM:
            cell = [r for r in results if r.case.length == length and r.case.rate_bpm == rate]
            found = sum(r.found for r in cell)
            active = sorted({c for r in cell for c in r.active_at_onset})
            active_text = ", ".join(f"{c} {sum(c in r.active_at_onset for r in cell)}" for c in active)
            rows.append(
                (
                    length,
                    rate,
                    f"{found} / {length * len(cell)}",
                    *(_cell(cell, c) for c in conditions),
                    active_text or "none",
                )
            )
    outside = sum(r.vt_outside for r in results)
    return [
        "## Spliced runs",
        "",
        "Per condition: runs alarmed / runs, median delay (largest).",
        "",
        table(
            ["beats", "bpm", "run beats found", *conditions, "already active at the run's first beat"],
            rows,
        ),
        "",
        f"{vt} starts outside the runs' windows in the spliced segments: "
        + (str(outside) if vt in conditions else "(no such condition)"),
    ]


def _records_section(records: list[RecordResult], vt: str, title: str = "") -> list[str]:
    rows = [
        (
            r.record,
            r.real_runs,
            len(r.true_starts),
            f"{r.true_s:.0f}",
            len(r.false_starts),
            f"{r.false_s:.0f}",
            ", ".join(f"{t:.0f}" for t in r.false_starts) or "-",
        )
        for r in records
    ]
    hours = sum(r.hours for r in records)
    rows.append(
        (
            "all",
            sum(r.real_runs for r in records),
            sum(len(r.true_starts) for r in records),
            f"{sum(r.true_s for r in records):.0f}",
            sum(len(r.false_starts) for r in records),
            f"{sum(r.false_s for r in records):.0f}",
            "",
        )
    )
    return [
        f"## {title or 'The original records'} ({len(records)} records, {hours:.1f} h)",
        "",
        f"Real runs: annotated runs of >= {REAL_RUN_BEATS} PVCs at > {REAL_RUN_BPM:g} bpm.",
        "",
        table(
            [
                "record",
                "real runs",
                f"{vt} starts at a real run",
                "alarmed s",
                "false starts",
                "false alarmed s",
                "false starts at (s)",
            ],
            rows,
        ),
    ]


def _fast_runs(results: list[CaseResult], vt: str) -> tuple[str, int, int, float]:
    """(a line saying it, alarmed, cases, median delay) for the runs of >= 5 beats at >= 150 bpm: the
    adoption rule's figure, also said by `--part runs` alone."""
    cell = [r for r in results if r.case.length >= 5 and r.case.rate_bpm >= 150]
    delays = [r.starts[vt] for r in cell if vt in r.starts]
    median = float(np.median(delays)) if delays else float("inf")
    line = f"Runs of >= 5 beats at >= 150 bpm alarmed by {vt}: {len(delays)} / {len(cell)}, median delay "
    line += f"{median:.2f} s"
    return line, len(delays), len(cell), median


def _rule(results: list[CaseResult], records: list[RecordResult], vt: str) -> list[str]:
    _, n_alarmed, n_cases, median = _fast_runs(results, vt)
    alarmed = n_alarmed / n_cases
    false = sum(len(r.false_starts) for r in records)
    ok = [alarmed >= 0.9, median <= 3.0, false <= 1]
    return [
        "## Adoption rule (fixed before the figures)",
        "",
        f"- runs of >= 5 beats at >= 150 bpm alarmed by {vt}: {n_alarmed} / {n_cases} "
        f"({100 * alarmed:.1f} %, needs >= 90 %): {'yes' if ok[0] else 'no'}",
        f"- their median delay from the run's first beat: {median:.2f} s (needs <= 3 s): "
        f"{'yes' if ok[1] else 'no'}",
        f"- false {vt} starts on the 12 original records: {false} (needs <= 1): {'yes' if ok[2] else 'no'}",
        "- the pvc detector's per-beat figures: see `python -m tools.evaluate.pvc_gateway`",
        f"- **{'met' if all(ok) else 'not met'}** (the spliced and record parts)",
    ]


def case_arguments(
    module: str, doc: str | None, out: str, config: str = "examples/cardiac-monitoring.toml"
) -> argparse.ArgumentParser:
    """The arguments every VT case tool takes (--config, --data, --out, --jobs, --condition); the tool adds
    its own. The wiring's "channel not arrived yet" warnings (a fresh stage per case) are silenced."""
    logging.getLogger("agent.pipeline.wiring").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(
        prog=f"python -m tools.evaluate.{module}", description=(doc or "").split("\n\n")[0]
    )
    parser.add_argument("--config", type=Path, default=Path(config))
    parser.add_argument(
        "--data", type=Path, default=None, help="datasets folder (default: ../shared/datasets)"
    )
    parser.add_argument("--out", type=Path, default=Path(out))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--condition", default=VT, help="the VT alarm's condition name")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = case_arguments("vt_runs", __doc__, "eval/vt-runs")
    parser.add_argument(
        "--jitter", type=float, default=0.0, help="irregular runs: intervals times 1 + U(-j, j) (default 0)"
    )
    parser.add_argument("--part", choices=PARTS, default="all", help="only the spliced runs or the records")
    args = parser.parse_args(argv)
    report = evaluate(args.config, args.data, args.jobs, args.condition, args.jitter, args.part)
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
