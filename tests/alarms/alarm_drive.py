"""Helpers for alarm tests: drive one AlarmBook with a per-hop series of scores for one or more streams."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from agent.alarms import AlarmBook, StreamRef
from agent.config.schema import AlarmRuleConfig
from agent.detectors.base import ScoreBlock
from agent.events import AlarmEvent

T0 = 1_800_000_000.0
STREAM = StreamRef("dev-a", "vitals")

# A rule with every delay switched off; tests switch on the feature they exercise.
BARE = AlarmRuleConfig(
    condition="high_score",
    detector="det",
    min_duration_s=0.0,
    clear_after_s=0.0,
    cooldown_s=0.0,
    unit="u",
)


def rule(**changes: object) -> AlarmRuleConfig:
    return replace(BARE, **changes)  # type: ignore[arg-type]


def block(scores: Sequence[float], threshold: float = 1.0) -> ScoreBlock:
    s = np.asarray(scores, dtype=np.float64)
    n = s.size
    return ScoreBlock(
        scores=s,
        thresholds=np.full(n, threshold),
        contributions=np.ones((n, 1)),
        observed=s,
        limits=np.full(n, threshold),
        baseline=np.full((n, 1), np.nan),
    )


def drive(
    book: AlarmBook,
    series: Sequence[float],
    *,
    threshold: float = 1.0,
    quality: Sequence[bool] | None = None,
    dt: float = 1.0,
    start: float = T0,
) -> list[tuple[int, AlarmEvent]]:
    """Feed one stream `series` (one score per hop); the events with the hop index that produced them."""
    out: list[tuple[int, AlarmEvent]] = []
    for k, value in enumerate(series):
        ok = True if quality is None else quality[k]
        events = book.update(
            [STREAM],
            block([value], threshold),
            np.array([start + k * dt]),
            np.array([ok]),
            ["ok" if ok else "motion"],
        )
        out.extend((k, e) for e in events)
    return out


def new_book(r: AlarmRuleConfig) -> AlarmBook:
    return AlarmBook(r, gateway="gw-test", config_hash="cfg", channels=("x",))
