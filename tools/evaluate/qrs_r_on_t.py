"""R-on-T PVCs: does agent/ecg/qrs.py find an early PVC that lands on the T wave of the beat before?

    python -m tools.evaluate.qrs_r_on_t --out eval/qrs_r_on_t

MIT-BIH 119 (lead MLII, 360 Hz, 444 of its 1987 beats PVCs) with its own PVCs spliced into its own
rhythm: for each coupling (0.26 / 0.30 / 0.34 / 0.38 s after a normal beat) and each height (half and
full), a copy of the whole record gets `SPLICES` PVCs. A host is a normal beat between two normal beats
whose next beat comes at least the coupling + 0.3 s later, the hosts at least 20 s apart; a donor is an
annotated V beat. The donor's ECG +-0.2 s around its annotation, less the straight line through the
means of its first and last 10 ms (the baseline), tapered over its first and last 20 ms, is scaled and
put with its annotation at the coupling after the host's, in one of two ways (`--splice`):
- replace (the default): the host's ECG there becomes the PVC on the straight line through the means of
  the host's own first and last 10 ms there, so both ends join the host's baseline; the host's T wave
  under it is gone. This reproduces the reviewer's figures best (docs/detectors.md, "Known limits").
- add: the PVC is added to the host's ECG, riding on its T wave as an R-on-T PVC does (harder: the
  T wave's slope and height add to the PVC's).
Hosts and donors are drawn once with a fixed seed, the same for every coupling, height and way.

Each copy is fed in 73-sample blocks. A spliced PVC is found when a detection is matched to it within
150 ms (EC57's one-to-one matching, nearest first, over the record's own beats and the spliced ones);
FN and FP are counted over the rest (the record's own beats, and detections matched to no beat).
`--detector FILE` runs another version of qrs.py (e.g. one from an older commit) for a side-by-side
comparison. Writes `<out>/qrs_r_on_t.json` and `.md`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from tools.evaluate.datasets import MITDB_FS, SHARED, mitdb_folder, read_mitdb_record
from tools.evaluate.qrs import MATCH_WINDOW_S, POLAR_FRAME, match

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

RECORD = "119"
COUPLINGS_S = (0.26, 0.30, 0.34, 0.38)
HEIGHTS = (0.5, 1.0)
SPLICES = 40
SEED = 119
HALF_WIDTH_S = 0.2  # the donor's ECG around its annotation
BASELINE_S = 0.01  # the ends averaged for the baseline line
TAPER_S = 0.02
HOST_SPACING_S = 20.0
WAYS = ("replace", "add")
AFTER_SPLICE_S = 0.3  # the host's next beat comes at least this long after the spliced one


class Detector(Protocol):
    def feed(self, samples: FloatArray) -> IntArray: ...


class DetectorType(Protocol):
    def __call__(self, rate_hz: float) -> Detector: ...


@dataclass(frozen=True, slots=True)
class Result:
    coupling_s: float
    height: float
    spliced: int
    found: int
    fn_rest: int
    fp: int


def load_record(root: Path | None) -> tuple[FloatArray, IntArray, npt.NDArray[np.bool_]]:
    """(MLII in mV, every beat's sample, whether it is a PVC) of MIT-BIH 119."""
    return read_mitdb_record(mitdb_folder(root), RECORD)


def draw(beats: IntArray, is_pvc: npt.NDArray[np.bool_]) -> tuple[IntArray, IntArray]:
    """(host beats, donor PVCs), SPLICES of each, drawn with the fixed seed."""
    rng = np.random.default_rng(SEED)
    fs = MITDB_FS
    normal = ~is_pvc
    room = round((max(COUPLINGS_S) + AFTER_SPLICE_S) * fs)
    eligible = [
        k
        for k in range(1, len(beats) - 1)
        if normal[k - 1] and normal[k] and normal[k + 1] and beats[k + 1] - beats[k] >= room
    ]
    hosts: list[int] = []
    for k in rng.permutation(eligible).tolist():
        if all(abs(int(beats[k]) - h) >= HOST_SPACING_S * fs for h in hosts):
            hosts.append(int(beats[k]))
        if len(hosts) == SPLICES:
            break
    if len(hosts) < SPLICES:
        raise RuntimeError(f"only {len(hosts)} hosts {HOST_SPACING_S} s apart in record {RECORD}")
    half = round(HALF_WIDTH_S * fs)
    pvcs = beats[is_pvc & (beats >= half) & (beats < beats[-1] - half)]
    donors = rng.choice(pvcs, SPLICES, replace=False)
    return np.sort(np.array(hosts, dtype=np.int64)), donors.astype(np.int64)


def pvc_wave(ecg: FloatArray, at: int) -> FloatArray:
    """The donor's ECG +-HALF_WIDTH_S around `at`, its baseline line removed, its ends tapered to 0."""
    fs = MITDB_FS
    half, ends, taper = round(HALF_WIDTH_S * fs), round(BASELINE_S * fs), round(TAPER_S * fs)
    wave = ecg[at - half : at + half + 1].copy()
    first, last = wave[:ends].mean(), wave[-ends:].mean()
    wave -= np.linspace(first, last, len(wave))
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(taper) / taper)
    wave[:taper] *= ramp
    wave[-taper:] *= ramp[::-1]
    return wave


def splice(
    ecg: FloatArray, hosts: IntArray, donors: IntArray, coupling_s: float, height: float, way: str
) -> tuple[FloatArray, IntArray]:
    """(the record with the PVCs spliced in `way`, "replace" or "add"; the spliced PVCs' samples)."""
    out = ecg.copy()
    half, ends = round(HALF_WIDTH_S * MITDB_FS), round(BASELINE_S * MITDB_FS)
    at = hosts + round(coupling_s * MITDB_FS)
    for where, donor in zip(at.tolist(), donors.tolist(), strict=True):
        span = slice(where - half, where + half + 1)
        wave = height * pvc_wave(ecg, donor)
        if way == "add":
            out[span] += wave
        else:
            host = out[span]
            out[span] = np.linspace(host[:ends].mean(), host[-ends:].mean(), len(host)) + wave
    return out, at


def load_detector(path: Path | None) -> DetectorType:
    if path is None:
        from agent.ecg.qrs import QrsDetector

        return QrsDetector
    spec = importlib.util.spec_from_file_location("qrs_under_test", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    detector: DetectorType = module.QrsDetector
    return detector


def detect(detector_type: DetectorType, ecg: FloatArray) -> IntArray:
    detector = detector_type(MITDB_FS)
    parts = [detector.feed(ecg[i : i + POLAR_FRAME]) for i in range(0, len(ecg), POLAR_FRAME)]
    return np.concatenate(parts).astype(np.int64)


def evaluate(detector_type: DetectorType, root: Path | None, way: str) -> list[Result]:
    ecg, beats, is_pvc = load_record(root)
    hosts, donors = draw(beats, is_pvc)
    results = []
    for height in HEIGHTS:
        for coupling in COUPLINGS_S:
            spliced_ecg, spliced = splice(ecg, hosts, donors, coupling, height, way)
            reference = np.concatenate([beats, spliced])
            order = np.argsort(reference, kind="stable")
            is_spliced = np.arange(len(reference))[order] >= len(beats)
            peaks = detect(detector_type, spliced_ecg)
            refs, _ = match(reference[order], peaks, round(MATCH_WINDOW_S * MITDB_FS))
            found = int(is_spliced[refs].sum())
            result = Result(
                coupling_s=coupling,
                height=height,
                spliced=len(spliced),
                found=found,
                fn_rest=len(beats) - (len(refs) - found),
                fp=len(peaks) - len(refs),
            )
            print(
                f"height {height:g}, coupling {coupling:.2f} s: found {found} of {len(spliced)}, "
                f"FN {result.fn_rest}, FP {result.fp} on the rest",
                file=sys.stderr,
                flush=True,
            )
            results.append(result)
    return results


def table(results: list[Result]) -> str:
    lines = [
        "| height | coupling s | spliced PVCs found | FN (record's beats) | FP |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.height:g} | {r.coupling_s:.2f} | {r.found} of {r.spliced} | {r.fn_rest} | {r.fp} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.evaluate.qrs_r_on_t", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, default=Path("eval/qrs_r_on_t"), help="report folder")
    parser.add_argument("--data", type=Path, default=None, help=f"datasets root (default {SHARED})")
    parser.add_argument(
        "--detector", type=Path, default=None, help="a qrs.py to run instead of agent/ecg/qrs.py"
    )
    parser.add_argument("--splice", choices=WAYS, default=WAYS[0], help="how a PVC is spliced in")
    args = parser.parse_args(argv)
    results = evaluate(load_detector(args.detector), args.data, args.splice)
    source = args.detector or "agent/ecg/qrs.py"
    text = [
        f"# R-on-T PVCs spliced ({args.splice}) into MIT-BIH {RECORD} ({source})",
        "",
        f"{SPLICES} PVCs per row, seed {SEED}, {POLAR_FRAME}-sample blocks, match window "
        f"{MATCH_WINDOW_S * 1000:.0f} ms.",
        "",
        table(results),
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "qrs_r_on_t.md").write_text("\n".join(text) + "\n")
    payload = {
        "detector": str(source),
        "splice": args.splice,
        "seed": SEED,
        "results": [asdict(r) for r in results],
    }
    (args.out / "qrs_r_on_t.json").write_text(json.dumps(payload, indent=2) + "\n")
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
