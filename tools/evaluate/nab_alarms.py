"""NAB's alarm starts re-played offline from one pipeline run: choosing alarm settings on NAB subset A.

    python -m tools.evaluate.nab_alarms cache --config tools/evaluate/configs/nab-span.toml \
        --input-range file --out eval/nab-span-cache.pkl
    python -m tools.evaluate.nab_alarms check --cache eval/nab-span-cache.pkl
    python -m tools.evaluate.nab_alarms grid --cache eval/nab-span-cache.pkl --subset A
    python -m tools.evaluate.nab_alarms one --cache eval/nab-span-cache.pkl --cooldown extreme=600 --hold 200

`cache` runs every series once through the pipeline (as `python -m tools.evaluate --dataset nab`) and keeps
each member's per-row score, the threshold it was judged against and the alarm starts. The alarm rules of
the NAB configs (1 of 1, no minimum duration, clear after one hop, no hysteresis) are then emulated from
those scores (`member_starts`; `check` proves it gives the pipeline's starts) under candidate settings
the pipeline does not have:
- each member's own cooldown (a config setting);
- `hold`: after a start of any member, the other members start nothing for that many rows;
- `k`: `context`'s threshold per series from its own probation rows (NAB's unscored first 15 %): the
  lowest of a ladder at which it starts at most k alarms there (a target false-alarm count).
Subsets: A = realKnownCause + artificialWithAnomaly (13 series, chosen on), B = the other 45 (held out).
docs/benchmarks.md (NAB) has what was tried with it and why nothing of it was adopted.
"""

from __future__ import annotations

import argparse
import itertools
import math
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.config.loader import load_config
from agent.config.schema import AgentConfig
from agent.events import Phase
from tools.evaluate import nab_score
from tools.evaluate.datasets import FloatArray, Series, load_nab
from tools.evaluate.replay import pool_map, replay
from tools.evaluate.runs import _probation, _row_windows, file_spans

A_GROUPS = ("realKnownCause", "artificialWithAnomaly")
CONTEXT_LADDER = (0.75, 0.8, 0.85, 0.9, 0.95, 1.0)  # 1.0: context never alarms (its score is <= 1)


@dataclass(frozen=True, slots=True)
class Cached:
    """One series' pipeline run: per detector id its per-row score and judged threshold (NaN: none)."""

    name: str
    n: int
    windows: list[tuple[int, int]]
    probation: int
    scores: dict[str, FloatArray]
    thresholds: dict[str, FloatArray]
    starts: dict[str, list[int]]  # detector id -> rows of its alarm STARTs in the pipeline


def emulable(config: AgentConfig) -> dict[str, float]:
    """Detector id -> its rule's cooldown (rows at NAB's one row per second), for configs whose rules the
    emulation copies exactly; any other rule is refused rather than emulated wrongly."""
    out = {}
    for rule in config.alarms:
        same = (rule.confirm_n, rule.confirm_m, rule.min_duration_s, rule.hysteresis) == (1, 1, 0.0, 0.0)
        if not same or rule.clear_after_s > 1.0 or rule.superseded_by or rule.detector in out:
            raise ValueError(f"alarm rule {rule.condition!r}: not one the emulation copies")
        out[rule.detector] = rule.cooldown_s
    return out


def _cache_job(job: tuple[Path, Series, bool]) -> Cached:
    config_path, series, file_range = job
    config = load_config(config_path)
    of_condition = {rule.condition: rule.detector for rule in config.alarms}
    r = replay(
        config,
        series,
        calibrate_rows=_probation(series),
        target_per_hour=0.01,
        ranges=file_spans(series) if file_range else None,
    )
    starts: dict[str, list[int]] = {d: [] for d in r.scores}
    for e in r.events:
        if e.phase is Phase.START and e.kind.value != "technical":
            starts[of_condition[e.condition]].append(round(e.detection_time - series.times[0]))
    return Cached(
        series.name, len(series.times), _row_windows(series), _probation(series), r.scores,
        r.judged_against, starts,
    )  # fmt: skip


def cache(config: Path, data: Path | None, file_range: bool, jobs: int) -> list[Cached]:
    emulable(load_config(config))
    return pool_map(_cache_job, [(config, s, file_range) for s in load_nab(data)], jobs)


def subset(runs: Sequence[Cached], which: str) -> list[Cached]:
    if which == "all":
        return list(runs)
    in_a = {r.name for r in runs if r.name.split("/")[0] in A_GROUPS}
    return [r for r in runs if (r.name in in_a) == (which == "A")]


class _Rule:
    """One member's 1-of-1 rule: START at a hit (score > threshold); the episode ENDs at the second clear
    hop in a row (clear after one hop's span), and the cooldown counts from the first. A START within the
    cooldown is a recurrence: it ENDs only after `cooldown` clear hops (`agent.alarms.book`)."""

    def __init__(self, scores: FloatArray, thresholds: FloatArray, cooldown: float) -> None:
        known = np.isfinite(scores)
        with np.errstate(invalid="ignore"):
            above = scores > thresholds
        self.known, self.clear = known, known & ~above
        self.hits = np.flatnonzero(known & above)
        self.cooldown = cooldown
        self.free_from = 0  # the first row it may start at: after its last END
        self.cool_until = -math.inf  # the last END's time (its first clear hop) + the cooldown

    def next_start(self, row: int) -> int | None:
        k = int(np.searchsorted(self.hits, max(row, self.free_from)))
        return int(self.hits[k]) if k < len(self.hits) else None

    def start(self, row: int) -> None:
        n = len(self.clear)
        needed = max(1, math.ceil(self.cooldown - 1e-6)) if row < self.cool_until - 1e-6 else 1
        since: int | None = None
        counted = 0  # clear hops after `since` (rows are 1 s apart: each counts its 1 s)
        j = row + 1
        while j < n:
            if self.clear[j]:
                if since is None:
                    since, counted = j, 0
                else:
                    counted += 1
                    if counted >= needed:
                        break
            elif self.known[j]:  # abnormal again: still active
                since = None
            j += 1
        if since is None or j >= n:
            self.free_from = n  # still open at the end of the series
        else:
            self.free_from = j + 1
            self.cool_until = since + self.cooldown


def member_starts(
    scores: Mapping[str, FloatArray],
    thresholds: Mapping[str, FloatArray],
    cooldowns: Mapping[str, float],
    hold: int = 0,
) -> dict[str, list[int]]:
    """Each member's alarm start rows; `hold` > 0: after any member's start the others start nothing for
    `hold` rows (members starting on the same row all start)."""
    rules = {m: _Rule(scores[m], thresholds[m], cooldowns[m]) for m in scores}
    held = dict.fromkeys(rules, 0)
    out: dict[str, list[int]] = {m: [] for m in rules}
    row = 0
    while True:
        due = {}
        for m, rule in rules.items():
            at = rule.next_start(max(row, held[m]))
            if at is not None:
                due[m] = at
        if not due:
            return out
        row = min(due.values())
        for m in [m for m, at in due.items() if at == row]:
            out[m].append(row)
            rules[m].start(row)
            if hold:
                for other in rules:
                    if other != m:
                        held[other] = max(held[other], row + hold)
        row += 1


def probation_threshold(scores: FloatArray, probation: int, k: int, cooldown: float) -> float:
    """The lowest threshold of `CONTEXT_LADDER` at which these scores start at most k alarms in the
    first `probation` rows."""
    head = scores[:probation]
    for t in CONTEXT_LADDER:
        if len(member_starts({"c": head}, {"c": np.full(len(head), t)}, {"c": cooldown})["c"]) <= k:
            return t
    return CONTEXT_LADDER[-1]


@dataclass(frozen=True, slots=True)
class Setting:
    cooldowns: dict[str, float]
    hold: int = 0
    k: int | None = None  # context's threshold from its probation rows, or as configured


def starts_of(run: Cached, setting: Setting) -> dict[str, list[int]]:
    thresholds = dict(run.thresholds)
    if setting.k is not None and "context" in thresholds:
        t = probation_threshold(run.scores["context"], run.probation, setting.k, setting.cooldowns["context"])
        after = np.arange(run.n) >= run.probation  # probation rows are judged as configured
        thresholds["context"] = np.where(after, t, thresholds["context"])
    return member_starts(run.scores, thresholds, setting.cooldowns, setting.hold)


@dataclass(frozen=True, slots=True)
class Scored:
    standard: float  # normalised NAB score, fixed thresholds (a start is a detection)
    low_fp: float
    low_fn: float
    windows_hit: int
    windows: int
    outside: int  # rows with a start outside every window


def score(runs: Sequence[Cached], setting: Setting) -> Scored:
    detections = []
    hit = outside = total = 0
    for run in runs:
        rows = sorted({r for v in starts_of(run, setting).values() for r in v})
        det = np.zeros(run.n)
        det[rows] = 1.0
        detections.append(det)
        inside = [any(lo <= r <= hi for r in rows) for lo, hi in run.windows]
        hit, total = hit + sum(inside), total + len(inside)
        outside += sum(1 for r in rows if not any(lo <= r <= hi for lo, hi in run.windows))
    figures = []
    for profile in nab_score.PROFILES:
        corpus = [nab_score.prepare(d, r.windows, profile) for d, r in zip(detections, runs, strict=True)]
        raw = nab_score.corpus_score(corpus, 0.5, profile)
        figures.append(nab_score.normalised(raw, corpus, profile))
    return Scored(figures[0], figures[1], figures[2], hit, total, outside)


def check(runs: Sequence[Cached], cooldowns: Mapping[str, float]) -> int:
    """Series x members whose emulated starts differ from the pipeline's (0 when the emulation holds)."""
    setting = Setting(dict(cooldowns))
    return sum(
        sorted(got) != sorted(run.starts.get(m, []))
        for run in runs
        for m, got in starts_of(run, setting).items()
    )


GRID_COOLDOWNS = (100, 200, 300, 600)
GRID_HOLDS = (0, 50, 100, 200, 300, 600)
GRID_KS: tuple[int | None, ...] = (None, 0, 1, 2)


def grid(members: Sequence[str]) -> list[Setting]:
    """The grid of 2026-12-01 (branch nabfix): each member's cooldown x hold x k."""
    out = []
    for cds in itertools.product(GRID_COOLDOWNS, repeat=len(members)):
        for hold, k in itertools.product(GRID_HOLDS, GRID_KS):
            out.append(Setting(dict(zip(members, map(float, cds), strict=True)), hold, k))
    return out


def _line(setting: Setting, s: Scored) -> str:
    cds = " ".join(f"{m}={c:g}" for m, c in setting.cooldowns.items())
    return (
        f"{cds} hold={setting.hold} k={setting.k}: standard {s.standard:.2f}, low FP {s.low_fp:.2f}, "
        f"low FN {s.low_fn:.2f}, windows {s.windows_hit}/{s.windows}, starts outside {s.outside}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.evaluate.nab_alarms", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("what", choices=("cache", "check", "grid", "one"))
    parser.add_argument("--config", type=Path, help="cache: the NAB config run through the pipeline")
    parser.add_argument("--data", type=Path, default=None, help="cache: NAB folder (default: shared)")
    parser.add_argument("--input-range", choices=("causal", "file"), default="causal")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--cache", "--out", dest="cache", type=Path, required=True, help="the cache file")
    parser.add_argument("--subset", choices=("A", "B", "all"), default="A")
    parser.add_argument("--cooldown", action="append", default=[], help="one: member=rows (others as run)")
    parser.add_argument("--hold", type=int, default=0)
    parser.add_argument("--k", type=int, default=None)
    parser.add_argument("--top", type=int, default=20, help="grid: settings printed, best first")
    args = parser.parse_args(argv)
    if args.what == "cache":
        if args.config is None:
            parser.error("cache needs --config")
        # through the module, not __main__: the pickled `Cached` must load from any script
        from tools.evaluate import nab_alarms

        runs = nab_alarms.cache(args.config, args.data, args.input_range == "file", args.jobs)
        args.cache.write_bytes(pickle.dumps((emulable(load_config(args.config)), runs)))
        return 0
    cooldowns, runs = pickle.loads(args.cache.read_bytes())
    if args.what == "check":
        print(f"series x members whose emulated starts differ from the pipeline's: {check(runs, cooldowns)}")
        return 0
    chosen = subset(runs, args.subset)
    if args.what == "one":
        given = dict(cooldowns)
        for item in args.cooldown:
            member, _, rows = item.partition("=")
            given[member] = float(rows)
        setting = Setting(given, args.hold, args.k)
        print(_line(setting, score(chosen, setting)))
        return 0
    scored = [(s, score(chosen, s)) for s in grid(list(cooldowns))]
    for s, figures in sorted(scored, key=lambda p: -p[1].standard)[: args.top]:
        print(_line(s, figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
