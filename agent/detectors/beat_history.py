"""The beats a beat-stream detector remembers per stream between calls, kept and persisted one way.

`af` keeps each stream's context of older RR intervals, `pvc` the intervals before its newest beat: one
row per stream slot, `width` beats, NaN where none is known. The rows grow with the slots (doubling), are
saved in the detector's per-stream state under `HISTORY`, and a saved table of another width (a changed
config) or none is no error: the remembered beats are a warm-up cache, so streams warm up again.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agent.detectors.base import FloatArray, float_rows, json_rows
from agent.errors import ConfigError

HISTORY = "history"  # the per-stream state key


class BeatHistory:
    def __init__(self, width: int) -> None:
        self.width = width
        self.rows: FloatArray = np.full((0, width), np.nan)

    def grow(self, slots: int) -> None:
        """Make room for `slots` stream slots."""
        size = self.rows.shape[0]
        if slots > size:
            grown = np.full((max(slots, 2 * size, 8), self.width), np.nan)
            grown[:size] = self.rows
            self.rows = grown

    def clear(self) -> None:
        self.rows = np.full((0, self.width), np.nan)

    def saved(self) -> list[list[float | None]]:
        return json_rows(self.rows)

    def load(self, rows: Any, where: str) -> None:
        """Rows as `saved` gave them (None: nothing saved); ConfigError naming `where` if unreadable."""
        if rows is None:
            self.clear()
            return
        try:
            table = float_rows(rows)
        except (TypeError, ValueError) as exc:
            raise ConfigError(where, f"unreadable: {exc}") from exc
        if table.ndim != 2 or table.shape[1] != self.width:
            self.clear()
            return
        self.rows = table
